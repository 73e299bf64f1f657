"""kernel-libipsec's data plane: keyed flows into charon's TUN, other media to the peer dropped.

kernel-libipsec does ESP in user space behind ``ipsec0``: traffic reaches it only by routing.
Instead of one policy-routing rule per keyed flow (a linear list the kernel walks for every
packet), one nftables table marks packets:

- a keyed flow (an element of the set ``keyed4``/``keyed6``: peer address . source port .
  destination port; ``ranges4``/``ranges6`` for speculative SAs) gets mark KEYED; one rule sends
  KEYED to our own table, whose one route leads into charon's TUN ``ipsec0``: one O(1) set lookup
  per packet whatever the number of calls. Not charon's table 220: charon removes its route to a
  peer with the CHILD_SA that installed it, even while another CHILD_SA to that peer is up (seen
  when a speculative SA gives way to the exact one); a packet with no SA is dropped in ``ipsec0``;
- with ``protect = "required"``, any other UDP to a peer's media prefixes on the RTP range gets
  mark GUARD: it is routed into the null sink ``ipsecrtp0``, never onto the WAN. So is a KEYED
  packet when charon has no route for it (its CHILD_SA not up yet, or charon down).

The null sink is a persistent TUN device: while the controller runs it reads it (each packet is
cleartext media the policy kept from leaving: counted per call), and when it does not, the kernel
drops what is routed there. Either way the sending application sees success, as on a real link.
The table, rules and device stay when the controller stops (fail-closed across restarts), and
go only with ``ipsecrtp run --flush``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

import nftables

from ..kernel import NetlinkError, ip_route
from ..selectors import FlowRule

TABLE = "ipsecrtp_dp"
SINK = "ipsecrtp0"
KEYED, GUARD = 0x10000, 0x20000
KEYED_TABLE, SINK_TABLE = 2200, 2201
TUNNEL = "ipsec0"  # kernel-libipsec's TUN device
PREFS = {"keyed": 219, "keyed-sink": 221, "guard": 222}
# after the main table: a peer's media prefix that only the tunnel reaches (a NAT between the
# gateways, router mode) must still route somewhere before the mark exists, or sending fails
REACH_PREF = 40000
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


class DataPlaneError(RuntimeError):
    pass


def _element(rule: FlowRule) -> tuple[str, str]:
    """The set and element of a keyed flow: exact flows in a hash set, port ranges (speculative
    SAs) in an interval set of their own, since the exact flow fitted to the answer overlaps its
    call's range while both SAs are up (an interval set refuses overlapping elements)."""
    sp = f"{rule.sport}-{rule.sport_hi}" if rule.sport_hi else str(rule.sport)
    dp = f"{rule.dport}-{rule.dport_hi}" if rule.dport_hi else str(rule.dport)
    s = ("ranges" if rule.sport_hi or rule.dport_hi else "keyed") + ("6" if ":" in rule.dst else "4")
    return s, f"{rule.dst} . {sp} . {dp}"


def _reach_rule(prefix: str) -> dict:
    """The rule routing a peer's media prefix to the sink table when nothing else routes it."""
    net, _, plen = prefix.partition("/")
    family = socket.AF_INET6 if ":" in net else socket.AF_INET
    return {"family": family, "dst": net, "dst_len": int(plen or (128 if family == socket.AF_INET6 else 32)),
            "table": SINK_TABLE, "priority": REACH_PREF}


def ruleset(guard_v4: list[str], guard_v6: list[str], rtp: tuple[int, int], required: bool) -> str:
    """The nftables script (re)creating the table; the keyed sets keep their elements (a restarted
    controller finds its live calls' flows still routed)."""
    lo, hi = rtp
    lines = [f"add table inet {TABLE}",
             f"add set inet {TABLE} keyed4 {{ type ipv4_addr . inet_service . inet_service; }}",
             f"add set inet {TABLE} keyed6 {{ type ipv6_addr . inet_service . inet_service; }}",
             f"add set inet {TABLE} ranges4 {{ type ipv4_addr . inet_service . inet_service; flags interval; }}",
             f"add set inet {TABLE} ranges6 {{ type ipv6_addr . inet_service . inet_service; flags interval; }}",
             f"add set inet {TABLE} media4 {{ type ipv4_addr; flags interval; }}",
             f"add set inet {TABLE} media6 {{ type ipv6_addr; flags interval; }}",
             f"flush set inet {TABLE} media4", f"flush set inet {TABLE} media6",
             f"add chain inet {TABLE} out {{ type route hook output priority mangle; policy accept; }}",
             f"flush chain inet {TABLE} out",
             *(f"add rule inet {TABLE} out {fam} daddr . udp sport . udp dport @{s}{v} meta mark set meta mark or "
               f"{KEYED:#x} return" for s in ("keyed", "ranges") for fam, v in (("ip", "4"), ("ip6", "6")))]
    if guard_v4:
        lines.append(f"add element inet {TABLE} media4 {{ {', '.join(guard_v4)} }}")
    if guard_v6:
        lines.append(f"add element inet {TABLE} media6 {{ {', '.join(guard_v6)} }}")
    if required:
        for fam, s in (("ip", "media4"), ("ip6", "media6")):
            lines.append(f"add rule inet {TABLE} out {fam} daddr @{s} udp dport {lo}-{hi} "
                         f"meta mark set meta mark or {GUARD:#x}")
    return "\n".join(lines) + "\n"


class DataPlane:
    def __init__(self) -> None:
        self.nft = nftables.Nftables()
        self.ipr = ip_route()
        self.sink_fd: int | None = None
        self.tunnel_index: int | None = None  # ipsec0 as our route knows it (charon makes it anew at restart)
        self.reach: list[str] = []

    def _cmd(self, script: str) -> None:
        rc, _out, err = self.nft.cmd(script)
        if rc != 0:
            raise DataPlaneError(f"nft: {err.strip().splitlines()[-1] if err.strip() else rc}")

    def install(self, media_prefixes: list[str], rtp: tuple[int, int], required: bool,
                reach: list[str] | None = None) -> int:
        """The table, the sink and the rules; returns the sink's file descriptor to read.
        ``media_prefixes``: the peers' media guarded (protect = required); ``reach``: every peer's
        media prefixes, routed to the sink when nothing else routes them (the mark then decides)."""
        self._rules(media_prefixes, rtp, required)
        self.sink_fd = self._open_sink()
        idx = self.ipr.link_lookup(ifname=SINK)[0]
        self.ipr.link("set", index=idx, state="up")
        for dst in ("0.0.0.0/0", "::/0"):
            self._ignore_exists(lambda d=dst: self.ipr.route("replace", dst=d, oif=idx, table=SINK_TABLE,
                                                             family=socket.AF_INET6 if ":" in d else socket.AF_INET))
        for family in (socket.AF_INET, socket.AF_INET6):
            for name, mark, table in (("keyed", KEYED, KEYED_TABLE), ("keyed-sink", KEYED, SINK_TABLE),
                                      ("guard", GUARD, SINK_TABLE)):
                self._ignore_exists(lambda f=family, m=mark, t=table, p=PREFS[name]: self.ipr.rule(
                    "add", family=f, fwmark=m, fwmask=m, table=t, priority=p))
        self._reach(list(reach or []))
        return self.sink_fd

    def guard(self, media_prefixes: list[str], rtp: tuple[int, int], required: bool, reach: list[str]) -> None:
        """The peers changed (a reload): the same rules for the new ones, in one nftables
        transaction (the keyed flows' sets keep their elements), and the reach rules brought in line."""
        self._rules(media_prefixes, rtp, required)
        self._reach(reach)

    def _rules(self, media_prefixes: list[str], rtp: tuple[int, int], required: bool) -> None:
        self._cmd(ruleset([p for p in media_prefixes if ":" not in p], [p for p in media_prefixes if ":" in p],
                          rtp, required))

    def _reach(self, reach: list[str]) -> None:
        for prefix in sorted(set(reach) - set(self.reach)):
            self._ignore_exists(lambda p=prefix: self.ipr.rule("add", **_reach_rule(p)))
        for prefix in sorted(set(self.reach) - set(reach)):
            try:
                self.ipr.rule("del", **_reach_rule(prefix))
            except NetlinkError:
                pass
        self.reach = sorted(set(reach))

    @staticmethod
    def _ignore_exists(op) -> None:
        try:
            op()
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: left by an earlier run, as intended
                raise

    def _open_sink(self) -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", SINK.encode(), IFF_TUN | IFF_NO_PI))
            fcntl.ioctl(fd, TUNSETPERSIST, 1)  # stays (and drops) when this process is gone
        except OSError:
            os.close(fd)
            raise
        return fd

    def read_sink(self, limit: int = 256) -> list[bytes]:
        out: list[bytes] = []
        assert self.sink_fd is not None
        for _ in range(limit):
            try:
                out.append(os.read(self.sink_fd, 65535))
            except BlockingIOError:
                break
        return out

    def ensure_tunnel_route(self) -> None:
        """Our table's route into ipsec0, (re)made whenever the device is new."""
        # called for every keyed flow: one ioctl on this namespace's device table, not a netlink
        # request parsed by pyroute2 (that was 6-15 % of the controller's loop under load)
        try:
            index = socket.if_nametoindex(TUNNEL)
        except OSError:
            return  # no ipsec0 (yet): keyed flows go to the sink until charon makes it
        if index == self.tunnel_index:
            return
        self.ipr.route("replace", dst="0.0.0.0/0", oif=index, table=KEYED_TABLE, family=socket.AF_INET)
        try:
            self.ipr.route("replace", dst="::/0", oif=index, table=KEYED_TABLE, family=socket.AF_INET6)
        except NetlinkError:
            pass  # no IPv6 on the device: IPv6 keyed flows then go to the sink, never in clear
        self.tunnel_index = index

    def add_flow(self, rule: FlowRule) -> None:
        self.ensure_tunnel_route()
        s, e = _element(rule)
        self._cmd(f"add element inet {TABLE} {s} {{ {e} }}")

    def del_flow(self, rule: FlowRule) -> None:
        s, e = _element(rule)
        rc, _out, _err = self.nft.cmd(f"delete element inet {TABLE} {s} {{ {e} }}")  # already gone: fine
        del rc

    def keyed(self) -> list[str]:
        """The keyed flows' set elements (for views and tests)."""
        rc, out, _err = self.nft.cmd(f"list set inet {TABLE} keyed4")
        if rc != 0:
            return []
        return _elements(out)

    def close(self, flush: bool = False) -> None:
        if flush:
            self.nft.cmd(f"delete table inet {TABLE}")
            for family in (socket.AF_INET, socket.AF_INET6):
                for name, mark in (("keyed", KEYED), ("keyed-sink", KEYED), ("guard", GUARD)):
                    try:
                        self.ipr.rule("del", family=family, fwmark=mark, fwmask=mark, priority=PREFS[name])
                    except NetlinkError:
                        pass
            self._reach([])
            if self.sink_fd is not None:
                fcntl.ioctl(self.sink_fd, TUNSETPERSIST, 0)  # the device goes with the descriptor
        if self.sink_fd is not None:
            os.close(self.sink_fd)
            self.sink_fd = None
        self.ipr.close()


def _elements(listing: str) -> list[str]:
    if "elements = {" not in listing:
        return []
    body = listing.split("elements = {", 1)[1].split("}", 1)[0]
    return [e.strip() for e in body.replace("\n", " ").split(",") if e.strip()]
