"""Policy routing that kernel-libipsec needs, narrowed to the keyed flows.

kernel-libipsec does ESP in user space behind a TUN device: traffic reaches it only by
routing. charon puts a route to the whole peer into its table (220) and one blanket rule
``not fwmark 0x42 lookup 220``; once a per-port CHILD_SA is up, that rule black-holes all
other traffic to the peer, SIP included. The controller removes the blanket rule and adds
one rule per keyed flow instead (and removes it with the CHILD_SA). With kernel-netlink
none of this is needed: the kernel's xfrm policies select by port themselves.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .strongswan import parse_ts_range

FIB_RULE_INVERT = 0x2


@dataclass(frozen=True, order=True)
class FlowRule:
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


class PolicyRouting:
    def __init__(self, table: int = 220, priority: int = 220) -> None:
        self.table, self.priority = table, priority
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def blanket_rules(self) -> list:
        """charon's catch-all rules into its table (no port or protocol selector)."""
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in self.ipr.get_rules(family=family):
                if (r.get_attr("FRA_TABLE") == self.table and r.get_attr("FRA_IP_PROTO") is None
                        and r.get_attr("FRA_DPORT_RANGE") is None):
                    found.append(r)
        return found

    def remove_blanket(self) -> int:
        n = 0
        for r in self.blanket_rules():
            kwargs = {"family": r["family"], "table": self.table, "priority": r.get_attr("FRA_PRIORITY"),
                      "flags": r["flags"]}
            if r.get_attr("FRA_FWMARK") is not None:
                kwargs["fwmark"] = r.get_attr("FRA_FWMARK")
                kwargs["fwmask"] = r.get_attr("FRA_FWMASK")
            try:
                self.ipr.rule("del", **kwargs)
                n += 1
            except NetlinkError:
                pass
        return n

    def _kwargs(self, rule: FlowRule) -> dict:
        family = socket.AF_INET6 if ":" in rule.dst else socket.AF_INET
        plen = 128 if family == socket.AF_INET6 else 32
        # No "from": an application socket bound to the wildcard address is routed with source
        # 0.0.0.0, which a source selector would never match. Ports and peer address suffice.
        return {"family": family, "table": self.table, "priority": self.priority,
                "dst": rule.dst, "dst_len": plen, "ip_proto": 17,
                "sport_range": rule.ports[0], "dport_range": rule.ports[1]}

    def add(self, rule: FlowRule) -> None:
        try:
            self.ipr.rule("add", **self._kwargs(rule))
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: a rekeyed CHILD_SA reuses the same flow
                raise

    def delete(self, rule: FlowRule) -> None:
        try:
            self.ipr.rule("del", **self._kwargs(rule))
        except NetlinkError as exc:
            if exc.code != 2:  # ENOENT: already gone
                raise

    def flow_rules(self) -> set[tuple[str, int, int]]:
        """(peer address, source port, destination port) of every per-flow rule in place."""
        out = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in self.ipr.get_rules(family=family):
                if r.get_attr("FRA_TABLE") == self.table and r.get_attr("FRA_IP_PROTO") == 17:
                    sp, dp = r.get_attr("FRA_SPORT_RANGE"), r.get_attr("FRA_DPORT_RANGE")
                    if sp and dp and r.get_attr("FRA_DST"):
                        out.add((r.get_attr("FRA_DST"), int(sp.split(":")[0]), int(dp.split(":")[0])))
        return out
