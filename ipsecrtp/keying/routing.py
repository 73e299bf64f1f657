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

from ..kernel import NetlinkError, ip_route
from ..selectors import FlowRule
from .dataplane import KEYED

FIB_RULE_INVERT = 0x2



class PolicyRouting:
    def __init__(self, table: int = 220, priority: int = 220) -> None:
        self.table, self.priority = table, priority
        self.ipr = ip_route()

    def close(self) -> None:
        self.ipr.close()

    def blanket_rules(self) -> list:
        """charon's catch-all rules into its table (no port or protocol selector, and not the data
        plane's rule for the flows it marks as keyed)."""
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in self.ipr.get_rules(family=family):
                if (r.get_attr("FRA_TABLE") == self.table and r.get_attr("FRA_IP_PROTO") is None
                        and r.get_attr("FRA_DPORT_RANGE") is None and r.get_attr("FRA_FWMARK") != KEYED):
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
