"""Peers, IKEv2 traffic selectors and per-flow routing rules as values. Pure: no daemon client.

Everything the gateway core decides is expressed in these terms; the keying backends
(``keying/strongswan.py``, ``keying/routing.py``) turn them into VICI messages and netlink rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .credentials import Pubkey
from .media import Endpoint


@dataclass(frozen=True)
class PeerConfig:
    name: str
    ike_local: str
    ike_remote: str
    local_media: tuple[str, ...]
    remote_media: tuple[str, ...]
    psk: bytes = field(repr=False)
    esp_proposals: tuple[str, ...] = ("aes128gcm16", "aes128-sha256")
    rtp_ports: tuple[int, int] = (10000, 20000)
    # a: an IKE_SA per call (2 RTT); b: one IKE_SA per peer, a CHILD_SA per call (1 RTT);
    # c: b, started speculatively from the offer so that it is up before the answer
    strategy: str = "child-per-call"
    # the peer's IKE identity when it differs from the address we reach it at (a NAT in front of
    # it: ike_remote is then the NAT's public address, this the peer's own)
    ike_remote_id: str = ""
    # IKE_SAs this gateway keeps to the peer for per-call CHILD_SAs (child-per-call, speculative):
    # charon runs one exchange at a time per IKE_SA, so calls spread over a pool key concurrently
    ike_pool: int = 1
    # required: no RTP/RTCP to the peer's media leaves in clear (dropped until its SA is up, and
    # whenever it is not); opportunistic: keyed when possible, cleartext counted and reported
    protect: str = "required"
    # calls whose both ends negotiate SRTP (sdp.end_to_end_srtp): "protect" keys them as any call
    # (SRTP inside ESP); "skip" keys nothing and logs them end-to-end protected (gateway/policy.py)
    srtp: str = "protect"
    # how this peer's SIP crosses the WAN: "clear" (what the controller captures, anyone on the path
    # can read and inject), "protected" (a trusted private link, or TLS the controller is told about)
    signalling: str = "clear"
    # pre-keyed over clear signalling: refused at start unless the operator sets this (config.py)
    allow_keys_over_clear_signalling: bool = False
    # "per-leg": a CHILD_SA per call; "shared": the calls to this peer share one CHILD_SA whose
    # selectors cover all their flows, re-keyed at each join and leave (gateway/shared.py)
    legs: str = "per-leg"
    # ESP mode: "tunnel" (an inner IP header: what a gateway forwarding others' media needs) or
    # "transport" (host mode, the gateways are the RTP endpoints: 20 bytes a packet less for IPv4,
    # 40 for IPv6; kernel ESP only, libipsec refuses it)
    esp_mode: str = "tunnel"
    # IKE authentication: "psk" (psk above) or "pubkey" (certificates: pubkey below; the peer's must
    # be issued by its CA *and* name remote_id, so another holder of that CA's certificate is refused)
    auth: str = "psk"
    pubkey: Pubkey | None = None

    @property
    def remote_id(self) -> str:
        return self.ike_remote_id or self.ike_remote

    @property
    def conn(self) -> str:
        return f"peer-{self.name}"

    def member(self, k: int) -> str:
        """The connection of pool member k (member 0 is the peer's connection itself)."""
        return self.conn if k == 0 else f"{self.conn}-{k}"

    def members(self) -> list[str]:
        return [self.member(k) for k in range(self.ike_pool)]

    def member_marker(self, k: int) -> str | None:
        """What makes member k's peer config unequal to the other members' (charon's IKE_SA reuse
        ignores the name, docs/charon-ike-reuse.md): an address pool named after it; member 0 has
        none, as the peer's connection always had."""
        return None if k == 0 else self.member(k)


def child_name(call_id: str, generation: int) -> str:
    """The name of a call's child config (and, for ike-per-call, its connection): the call's
    identity as charon shows it, without the Call-ID itself."""
    return f"call-{hashlib.sha256(call_id.encode()).hexdigest()[:12]}-{generation}"


def ts(ep: Endpoint) -> str:
    plen = 128 if ":" in ep.address else 32
    return f"{ep.address}/{plen}[udp/{ep.port}]"


def parse_ts(value: str) -> tuple[str, int, int | None]:
    """'198.51.100.1/32[udp/10000]' -> ('198.51.100.1/32', 17, 10000); ports may be absent."""
    net, proto, ports = parse_ts_range(value)
    return net, proto, ports[0] if ports and ports[0] == ports[1] else None


def parse_ts_range(value: str) -> tuple[str, int, tuple[int, int] | None]:
    """'198.51.100.0/24[udp/10000-10199]' -> ('198.51.100.0/24', 17, (10000, 10199))."""
    net, _, rest = value.partition("[")
    proto, ports = 0, None
    if rest:
        p, _, port_s = rest.rstrip("]").partition("/")
        proto = 17 if p == "udp" else (6 if p == "tcp" else (int(p) if p.isdigit() else 0))
        lo, _, hi = port_s.partition("-")
        if lo.isdigit() and (hi.isdigit() or not hi):
            ports = (int(lo), int(hi or lo))
    return net, proto, ports


def ts_endpoint(value: str) -> tuple[str, int]:
    """'198.51.100.1/32[udp/10000]' -> ('198.51.100.1', 10000); port 0 when absent."""
    net, _, port = parse_ts(value)
    return net.split("/")[0], port or 0


@dataclass(frozen=True, order=True)
class FlowRule:
    """One keyed flow as kernel-libipsec's policy routing selects it (this gateway's view)."""

    src: str
    dst: str
    sport: int
    dport: int
    sport_hi: int = 0  # a port range (speculative SAs cover the peer's RTP range); 0: just sport
    dport_hi: int = 0

    def __str__(self) -> str:
        sp = f"{self.sport}-{self.sport_hi}" if self.sport_hi else str(self.sport)
        dp = f"{self.dport}-{self.dport_hi}" if self.dport_hi else str(self.dport)
        return f"from {self.src} to {self.dst} udp {sp}->{dp}"

    @property
    def ports(self) -> tuple[str, str]:
        return f"{self.sport}:{self.sport_hi or self.sport}", f"{self.dport}:{self.dport_hi or self.dport}"


def rules_for_child(local_ts: list[str], remote_ts: list[str]) -> set[FlowRule]:
    """One rule per (local, remote) selector pair of a CHILD_SA, as IKEv2 TS combine. A side may be
    a prefix with a port range (speculative keying); its address part is then the prefix's first."""
    out = set()
    for lt in local_ts:
        lnet, lproto, lports = parse_ts_range(lt)
        for rt in remote_ts:
            rnet, rproto, rports = parse_ts_range(rt)
            if lproto != 17 or rproto != 17 or lports is None or rports is None:
                continue  # only UDP flows with ports are ever routed into the tunnel
            if not (lnet.endswith(("/32", "/128")) and rnet.endswith(("/32", "/128"))):
                continue  # only host selectors: a rule for a whole prefix would catch SIP too
            out.add(FlowRule(lnet.split("/")[0], rnet.split("/")[0], lports[0], rports[0],
                             lports[1] if lports[1] != lports[0] else 0,
                             rports[1] if rports[1] != rports[0] else 0))
    return out
