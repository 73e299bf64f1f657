"""Kernel xfrm SAs and policies over NETLINK_XFRM, on pyroute2's netlink marshalling.

pyroute2 ships no xfrm SA/policy messages; these classes add them (linux/xfrm.h layouts,
x86_64/aarch64 alignment). Used for backend detection (does this kernel do ESP?) and for
reading what the kernel holds. Key bytes are written into the netlink message only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from pyroute2.netlink import (
    NETLINK_XFRM,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    nlmsg,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import Marshal, NetlinkSocket

XFRM_MSG_NEWSA, XFRM_MSG_DELSA, XFRM_MSG_GETSA = 16, 17, 18
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 19, 20, 21
XFRM_MSG_UPDPOLICY = 25  # NEWPOLICY refuses an existing selector (EEXIST); UPDPOLICY replaces it
IPPROTO_ESP = 50
XFRM_MODE_TRANSPORT, XFRM_MODE_TUNNEL = 0, 1

_NLA = (
    ("XFRMA_UNSPEC", "none"),
    ("XFRMA_ALG_AUTH", "cdata"),
    ("XFRMA_ALG_CRYPT", "cdata"),
    ("XFRMA_ALG_COMP", "cdata"),
    ("XFRMA_ENCAP", "cdata"),
    ("XFRMA_TMPL", "cdata"),
    ("XFRMA_SA", "cdata"),
    ("XFRMA_POLICY", "cdata"),
    ("XFRMA_SEC_CTX", "cdata"),
    ("XFRMA_LTIME_VAL", "cdata"),
    ("XFRMA_REPLAY_VAL", "cdata"),
    ("XFRMA_REPLAY_THRESH", "uint32"),
    ("XFRMA_ETIMER_THRESH", "uint32"),
    ("XFRMA_SRCADDR", "cdata"),
    ("XFRMA_COADDR", "cdata"),
    ("XFRMA_LASTUSED", "uint64"),
    ("XFRMA_POLICY_TYPE", "cdata"),
    ("XFRMA_MIGRATE", "cdata"),
    ("XFRMA_ALG_AEAD", "cdata"),
)

_SELECTOR = (
    ("sel_daddr", "16s"), ("sel_saddr", "16s"),
    ("sel_dport", ">H"), ("sel_dport_mask", ">H"), ("sel_sport", ">H"), ("sel_sport_mask", ">H"),
    ("sel_family", "H"), ("sel_prefixlen_d", "B"), ("sel_prefixlen_s", "B"), ("sel_proto", "B"),
    ("__sel_pad", "3x"), ("sel_ifindex", "i"), ("sel_user", "I"),
)


class xfrm_usersa_info(nlmsg):
    """struct xfrm_usersa_info (224 bytes)."""

    prefix = "XFRMA_"
    fields = _SELECTOR + (
        ("id_daddr", "16s"), ("id_spi", ">I"), ("id_proto", "B"), ("__id_pad", "3x"),
        ("saddr", "16s"),
        ("lft_soft_byte", "Q"), ("lft_hard_byte", "Q"), ("lft_soft_packet", "Q"), ("lft_hard_packet", "Q"),
        ("lft_soft_add", "Q"), ("lft_hard_add", "Q"), ("lft_soft_use", "Q"), ("lft_hard_use", "Q"),
        ("cur_bytes", "Q"), ("cur_packets", "Q"), ("cur_add_time", "Q"), ("cur_use_time", "Q"),
        ("stats_replay_window", "I"), ("stats_replay", "I"), ("stats_integrity_failed", "I"),
        ("seq", "I"), ("reqid", "I"), ("family", "H"), ("mode", "B"), ("replay_window", "B"),
        ("flags", "B"), ("__pad", "7x"),
    )
    nla_map = _NLA


class xfrm_usersa_id(nlmsg):
    """struct xfrm_usersa_id (24 bytes)."""

    prefix = "XFRMA_"
    fields = (("daddr", "16s"), ("spi", ">I"), ("family", "H"), ("proto", "B"), ("__pad", "x"))
    nla_map = _NLA


class xfrm_userpolicy_info(nlmsg):
    """struct xfrm_userpolicy_info (168 bytes)."""

    prefix = "XFRMA_"
    fields = _SELECTOR + (
        ("lft_soft_byte", "Q"), ("lft_hard_byte", "Q"), ("lft_soft_packet", "Q"), ("lft_hard_packet", "Q"),
        ("lft_soft_add", "Q"), ("lft_hard_add", "Q"), ("lft_soft_use", "Q"), ("lft_hard_use", "Q"),
        ("cur_bytes", "Q"), ("cur_packets", "Q"), ("cur_add_time", "Q"), ("cur_use_time", "Q"),
        ("priority", "I"), ("index", "I"), ("dir", "B"), ("action", "B"), ("flags", "B"), ("share", "B"),
        ("__pad", "4x"),
    )
    nla_map = _NLA


class xfrm_userpolicy_id(nlmsg):
    """struct xfrm_userpolicy_id (64 bytes)."""

    prefix = "XFRMA_"
    fields = _SELECTOR + (("index", "I"), ("dir", "B"), ("__pad", "3x"))
    nla_map = _NLA


# struct xfrm_user_tmpl (64 bytes), carried in XFRMA_TMPL
_TMPL = struct.Struct("=16sIB3xH2x16sIBBBxIII")

XFRM_POLICY_IN, XFRM_POLICY_OUT, XFRM_POLICY_FWD = 0, 1, 2
XFRM_POLICY_ALLOW, XFRM_POLICY_BLOCK = 0, 1


class MarshalXfrm(Marshal):
    msg_map = {XFRM_MSG_NEWSA: xfrm_usersa_info, XFRM_MSG_DELSA: xfrm_usersa_id,
               XFRM_MSG_GETSA: xfrm_usersa_id, XFRM_MSG_NEWPOLICY: xfrm_userpolicy_info,
               XFRM_MSG_DELPOLICY: xfrm_userpolicy_id, XFRM_MSG_GETPOLICY: xfrm_userpolicy_id,
               XFRM_MSG_UPDPOLICY: xfrm_userpolicy_info}


class XfrmSocket(NetlinkSocket):
    def __init__(self) -> None:
        super().__init__(NETLINK_XFRM)
        self.set_marshal(MarshalXfrm())


def _addr(a: str) -> tuple[bytes, int]:
    ip = ipaddress.ip_address(a)
    return ip.packed.ljust(16, b"\0"), (socket.AF_INET if ip.version == 4 else socket.AF_INET6)


def _unaddr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == socket.AF_INET else raw[:16]))


def _algo(name: str, key: bytes) -> bytes:
    """struct xfrm_algo: char alg_name[64]; unsigned int alg_key_len (bits); char alg_key[]."""
    return struct.pack("64sI", name.encode(), len(key) * 8) + key


@dataclass(frozen=True)
class KernelSA:
    src: str
    dst: str
    spi: int
    proto: int
    mode: int
    reqid: int
    bytes: int
    packets: int


def add_esp_sa(sock: XfrmSocket, src: str, dst: str, spi: int, enc_key: bytes, auth_key: bytes,
               mode: int = XFRM_MODE_TUNNEL, reqid: int = 0) -> None:
    dpacked, family = _addr(dst)
    spacked, _ = _addr(src)
    msg = xfrm_usersa_info()
    for name, _fmt in xfrm_usersa_info.fields:
        if not name.startswith("__"):
            msg[name] = b"" if _fmt.endswith("s") else 0
    msg.update({"sel_family": family, "id_daddr": dpacked, "id_spi": spi, "id_proto": IPPROTO_ESP,
                "saddr": spacked, "family": family, "mode": mode, "reqid": reqid, "replay_window": 32})
    for k in ("lft_soft_byte", "lft_hard_byte", "lft_soft_packet", "lft_hard_packet"):
        msg[k] = 2**64 - 1  # XFRM_INF
    msg["attrs"] = [("XFRMA_ALG_CRYPT", _algo("cbc(aes)", enc_key)),
                    ("XFRMA_ALG_AUTH", _algo("hmac(sha256)", auth_key))]
    tuple(sock.nlm_request(msg, XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))


def del_sa(sock: XfrmSocket, src: str, dst: str, spi: int, proto: int = IPPROTO_ESP) -> None:
    dpacked, family = _addr(dst)
    msg = xfrm_usersa_id()
    msg.update({"daddr": dpacked, "spi": spi, "family": family, "proto": proto})
    msg["attrs"] = [("XFRMA_SRCADDR", _addr(src)[0])]
    tuple(sock.nlm_request(msg, XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK))


def dump_sas(sock: XfrmSocket) -> list[KernelSA]:
    msg = xfrm_usersa_id()
    msg.update({"daddr": b"\0" * 16, "spi": 0, "family": 0, "proto": 0})
    out = []
    for m in sock.nlm_request(msg, XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_DUMP):
        if m["header"]["type"] != XFRM_MSG_NEWSA:
            continue
        fam = m["family"]
        out.append(KernelSA(_unaddr(m["saddr"], fam), _unaddr(m["id_daddr"], fam), m["id_spi"],
                            m["id_proto"], m["mode"], m["reqid"], m["cur_bytes"], m["cur_packets"]))
    return out


@dataclass(frozen=True)
class EspProbe:
    supported: bool
    detail: str


def probe_esp() -> EspProbe:
    """Ask the kernel of the current network namespace to hold an ESP SA, then remove it.

    Uses documentation addresses and a random SPI from the private range, so it cannot
    collide with or affect a real SA.
    """
    spi = 0xC0000000 | int.from_bytes(os.urandom(3), "big")
    src, dst = "192.0.2.254", "192.0.2.253"
    try:
        sock = XfrmSocket()
    except OSError as exc:
        return EspProbe(False, f"cannot open NETLINK_XFRM: {exc}")
    try:
        add_esp_sa(sock, src, dst, spi, os.urandom(16), os.urandom(32))
    except NetlinkError as exc:
        sock.close()
        return EspProbe(False, f"kernel refused an ESP SA: {os.strerror(exc.code)}")
    try:
        del_sa(sock, src, dst, spi)
    finally:
        sock.close()
    return EspProbe(True, "kernel accepted an ESP SA (cbc(aes)+hmac(sha256))")


@dataclass(frozen=True)
class Selector:
    """A flow selector: prefixes, protocol and ports (0: any); a mask (None: exact port) makes a
    port an aligned block of ports, the only port ranges xfrm knows (``port_blocks``)."""

    src: str
    dst: str
    proto: int = 17
    sport: int = 0
    dport: int = 0
    sport_mask: int | None = None
    dport_mask: int | None = None

    def __post_init__(self) -> None:
        # a mask that says what the port alone says is no mask: selectors read back from the
        # kernel then compare equal to the ones written
        for port, name in ((self.sport, "sport_mask"), (self.dport, "dport_mask")):
            if getattr(self, name) == _mask(port, None):
                object.__setattr__(self, name, None)

    def fill(self, msg) -> None:
        sp, family = _addr(self.src.split("/")[0])
        dp, _ = _addr(self.dst.split("/")[0])
        full = 32 if family == socket.AF_INET else 128
        msg.update({"sel_saddr": sp, "sel_daddr": dp, "sel_family": family, "sel_proto": self.proto,
                    "sel_prefixlen_s": int(self.src.split("/")[1]) if "/" in self.src else full,
                    "sel_prefixlen_d": int(self.dst.split("/")[1]) if "/" in self.dst else full,
                    "sel_sport": self.sport, "sel_sport_mask": _mask(self.sport, self.sport_mask),
                    "sel_dport": self.dport, "sel_dport_mask": _mask(self.dport, self.dport_mask),
                    "sel_ifindex": 0, "sel_user": 0})


def _mask(port: int, mask: int | None) -> int:
    return (0xFFFF if port else 0) if mask is None else mask


def port_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """The port range lo..hi as the fewest aligned (port, mask) blocks that cover exactly it: an
    xfrm selector matches ``port & mask == port``, so a range that is not one aligned power of two
    takes several policies (10000-20000: 11)."""
    if not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"port range {lo}-{hi}")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 0x10000  # the largest block aligned at lo...
        while lo + size - 1 > hi:  # ...that does not pass hi
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


@dataclass(frozen=True)
class KernelPolicy:
    selector: Selector
    dir: int
    priority: int
    tmpl_src: str | None  # the ESP tunnel's endpoints (None for transport or no template)
    tmpl_dst: str | None
    reqid: int
    mode: int
    bytes: int
    packets: int
    action: int = XFRM_POLICY_ALLOW


def _zeroed(cls):
    msg = cls()
    for name, fmt in cls.fields:
        if not name.startswith("__"):
            msg[name] = b"" if fmt.endswith("s") else 0
    return msg


def add_policy(sock: XfrmSocket, sel: Selector, direction: int, tmpl_src: str, tmpl_dst: str, reqid: int,
               mode: int = XFRM_MODE_TUNNEL, priority: int = 1000) -> None:
    """An IPsec policy: traffic matching ``sel`` in ``direction`` uses ESP between the template's ends."""
    msg = _zeroed(xfrm_userpolicy_info)
    sel.fill(msg)
    for k in ("lft_soft_byte", "lft_hard_byte", "lft_soft_packet", "lft_hard_packet"):
        msg[k] = 2**64 - 1
    msg.update({"priority": priority, "dir": direction, "action": XFRM_POLICY_ALLOW})
    d, family = _addr(tmpl_dst)
    src, _ = _addr(tmpl_src)
    tmpl = _TMPL.pack(d, 0, IPPROTO_ESP, family, src, reqid, mode, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    msg["attrs"] = [("XFRMA_TMPL", tmpl)]
    tuple(sock.nlm_request(msg, XFRM_MSG_NEWPOLICY, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))


def set_block_policy(sock: XfrmSocket, sel: Selector, direction: int, priority: int) -> None:
    """A policy that drops what matches ``sel`` unless a policy of higher priority (a lower
    number) matches first; made or replaced (a restart finds its own in place)."""
    msg = _zeroed(xfrm_userpolicy_info)
    sel.fill(msg)
    for k in ("lft_soft_byte", "lft_hard_byte", "lft_soft_packet", "lft_hard_packet"):
        msg[k] = 2**64 - 1
    msg.update({"priority": priority, "dir": direction, "action": XFRM_POLICY_BLOCK})
    tuple(sock.nlm_request(msg, XFRM_MSG_UPDPOLICY, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE))


def out_blocked() -> int:
    """Packets this network namespace's block policies dropped on the way out (XfrmOutPolBlock),
    or -1 when the kernel does not say (no CONFIG_XFRM_STATISTICS)."""
    try:
        # thread-self: the namespace of the calling thread (a tool joins one on a helper thread)
        with open("/proc/thread-self/net/xfrm_stat") as f:
            for line in f:
                name, value = (line.split() + ["", ""])[:2]
                if name == "XfrmOutPolBlock":
                    return int(value)
    except OSError:
        pass
    return -1


def del_policy(sock: XfrmSocket, sel: Selector, direction: int) -> None:
    msg = _zeroed(xfrm_userpolicy_id)
    sel.fill(msg)
    msg["dir"] = direction
    tuple(sock.nlm_request(msg, XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK))


def dump_policies(sock: XfrmSocket) -> list[KernelPolicy]:
    msg = _zeroed(xfrm_userpolicy_id)
    out = []
    for m in sock.nlm_request(msg, XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP):
        if m["header"]["type"] != XFRM_MSG_NEWPOLICY:
            continue
        fam = m["sel_family"]
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue  # charon's per-socket bypass policies and the like
        sel = Selector(f"{_unaddr(m['sel_saddr'], fam)}/{m['sel_prefixlen_s']}",
                       f"{_unaddr(m['sel_daddr'], fam)}/{m['sel_prefixlen_d']}", m["sel_proto"],
                       m["sel_sport"], m["sel_dport"], m["sel_sport_mask"], m["sel_dport_mask"])
        raw = m.get_attr("XFRMA_TMPL")
        tsrc = tdst = None
        reqid = mode = 0
        if raw and len(raw) >= _TMPL.size:
            d, _spi, _proto, tfam, src, reqid, mode, *_ = _TMPL.unpack_from(raw)
            tsrc, tdst = _unaddr(src, tfam), _unaddr(d, tfam)
        out.append(KernelPolicy(sel, m["dir"], m["priority"], tsrc, tdst, reqid, mode, m["cur_bytes"],
                                m["cur_packets"], m["action"]))
    return out
