"""charon's word on shared CHILD_SAs (``legs = "shared"``), on both gateways: which calls an SA
carries, their routes, their timelines and ESP.

The initiator knows its generations (``shared.py``); the responder knows only charon's events, so
both attribute an SA to calls the same way: by the exact flows of the keyed calls among the pairs
its selectors cover. A call's ``sa-up`` is logged when its flows become covered and its ``sa-down``
when no shared SA covers them any more; a re-key that keeps a leg logs neither for it, only one
``shared-sa-up``/``shared-sa-down`` line for the SA. Sans I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from ..selectors import FlowRule, PeerConfig
from .actions import ChildUpDown
from .keying import Keying
from .shared import owns
from .state import Happening, KeyState, SaKeying
from .timelines import Timelines

ESP_MARK_S = 1.0  # a shared SA's ESP marks its calls' media activity at most this often (O(legs) each time)


class SharedSas:
    def __init__(self, keying: Keying, timelines: Timelines, route: Callable[[set[FlowRule], bool], None] | None,
                 settled: Callable[[str, float], None]) -> None:
        self.k, self.timelines, self.route, self.settled = keying, timelines, route, settled
        # SA unique id -> (peer, its flows, call -> that call's exact flows among them)
        self.up: dict[str, tuple[str, frozenset[FlowRule], dict[str, frozenset[FlowRule]]]] = {}
        self.spis: dict[int, str] = {}  # SPI -> SA unique id
        self.marked: dict[str, float] = {}  # SA -> when its ESP last marked its calls active

    def handles(self, peer: PeerConfig, child: str) -> bool:
        """A child-updown for this path: one of our shared children, or any SA of a shared peer's
        that is not one of our per-call children (the peer's shared SA, seen as responder)."""
        return owns(child) or (peer.legs == "shared" and child not in self.k.by_child)

    def covered(self, peer: str) -> set[FlowRule]:
        """The flows the peer's shared SAs up now cover (during a re-key, both generations')."""
        return {r for p, rules, _ in self.up.values() if p == peer for r in rules}

    def updown(self, ev: ChildUpDown, peer: PeerConfig, rules: set[FlowRule], now: float) -> None:
        child, k = ev.child, self.k
        name, sa = child.get("name", ""), str(child.get("uniqueid", ""))
        spis = [int(child[x], 16) for x in ("spi-in", "spi-out") if child.get(x)]
        if ev.up:
            before = self.covered(peer.name)
            legs: dict[str, set[FlowRule]] = {}
            for r in rules:
                if (c := k.rule_calls.get(r)) is not None:
                    legs.setdefault(c, set()).add(r)
            calls = {c: frozenset(rs) for c, rs in legs.items()}
            self.up[sa] = (peer.name, frozenset(rules), calls)
            self.spis.update((spi, sa) for spi in spis)
            if self.route is not None:
                self.route(rules, True)
            for c, rs in sorted(calls.items()):
                if not rs <= before:
                    self._leg_up(c, name, sa, now)
        else:
            _, _, calls = self.up.pop(sa, (None, frozenset(), {}))
            for spi in spis:
                self.spis.pop(spi, None)
            self.marked.pop(sa, None)
            still = self.covered(peer.name)
            if self.route is not None:
                self.route(rules - still, False)  # the next generation's routes stay
            for c, rs in sorted(calls.items()):
                if not rs <= still:
                    self._leg_down(c, name, sa, rs, now)
        if owns(name):
            k.shared.child_updown(name, ev.up, sa, now)
        k.out.log("shared-sa-up" if ev.up else "shared-sa-down", peer=peer.name, conn=ev.ike, child=name, sa=sa,
                  legs=len(calls), local_ts=child.get("local-ts"),
                  remote_ts=child.get("remote-ts"), encap=child.get("encap") == "yes")

    def claim(self, st: SaKeying, now: float) -> None:
        """A responder's leg keyed after the peer's shared SA covering it came up (its answer
        reached this gateway after the peer's CREATE_CHILD_SA): attributed now."""
        if st.role != "responder" or st.state is not KeyState.WAITING or not st.rules:
            return
        for sa, (peer, rules, calls) in self.up.items():
            if peer == st.peer.name and st.rules <= rules:
                calls[st.call_id] = st.rules
                self._leg_up(st.call_id, "(shared)", sa, now)
                return

    def _leg_up(self, call: str, child: str, sa: str, now: float) -> None:
        st = self.k.calls.get(call)
        if st is not None and st.state in (KeyState.SHARING, KeyState.WAITING):
            st.advance(Happening.CHILD_UP)
            st.uniqueid = sa
        tl = self.timelines.get(call)
        if tl is not None and tl.sa_up is None:
            tl.sa_up = now
        self.k.out.log("sa-up", call=call, child=child, sa=sa, shared=True)
        self.settled(call, now)

    def _leg_down(self, call: str, child: str, sa: str, rules: frozenset[FlowRule], now: float) -> None:
        tl = self.timelines.get(call)
        if tl is not None and tl.sa_up is not None and tl.sa_down is None and call not in self.k.calls:
            tl.sa_down = now
        self.k.out.log("sa-down", call=call, child=child, sa=sa, shared=True)
        if call not in self.k.calls:
            for r in rules:
                if self.k.rule_calls.get(r) == call:
                    self.k.rule_calls.pop(r, None)
        self.timelines.settle(call, now)

    def esp(self, spi: int, now: float, media: Callable[[str, bool, float], None]) -> bool:
        """ESP on a shared SA: its calls' media activity, at most once a second (else False: not ours)."""
        sa = self.spis.get(spi)
        if sa is None:
            return False
        if now - self.marked.get(sa, -ESP_MARK_S) >= ESP_MARK_S:
            self.marked[sa] = now
            for c in self.up[sa][2]:
                media(c, True, now)
        return True
