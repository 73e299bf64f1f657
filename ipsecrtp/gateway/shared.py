"""Shared legs (``legs = "shared"``, issue 17 item 3): the calls between two gateways share one
CHILD_SA whose selectors cover all their flows, instead of a CHILD_SA per call.

Sans I/O, like the rest of the core. Per peer, the legs this gateway initiates (call -> its
generation and flows) and at most two generations of the shared CHILD_SA: the ``live`` one and
a ``pending`` one being set up. A join or a leave re-keys: a new generation with exactly the live
legs' selectors is installed, and once charon says it is up the previous one is deleted (make
before break: the legs that stay are covered throughout). One set-up at a time per peer (charon
runs one exchange at a time on the IKE_SA anyway): joins and leaves that come while one runs
are folded into the next, so N answers back to back cost far fewer than N exchanges.

What sharing gives up, by construction: IKEv2 traffic selectors combine as lists, so the SA
covers every (local, remote) pair of its selectors, not only the legs' own pairs; and a departed
leg's flows stay covered until the re-key without it is up (a leave costs a CREATE_CHILD_SA and
a DELETE, where per-leg keying costs a DELETE only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..selectors import FlowRule, PeerConfig
from .actions import InstallChild, InstallResult, Outbox, RemoveChild, RemoveResult

PREFIX = "shared-"  # the shared children's names: shared-<peer>-<generation>
RETRY_S = 1.0  # after a failed set-up, the next attempt
TRIES = 3  # failed set-ups in a row before waiting for the next join or leave


def owns(child: str) -> bool:
    return child.startswith(PREFIX)


def _ts(addr: str, port: int) -> str:
    return f"{addr}/{128 if ':' in addr else 32}[udp/{port}]"


@dataclass
class Generation:
    """One shared CHILD_SA: the legs (call -> flows) its selectors were made from."""

    child: str
    legs: dict[str, frozenset[FlowRule]]
    uniqueid: str | None = None

    def selectors(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        rules = [r for rs in self.legs.values() for r in rs]
        return (tuple(sorted({_ts(r.src, r.sport) for r in rules})),
                tuple(sorted({_ts(r.dst, r.dport) for r in rules})))


@dataclass
class PeerShare:
    peer: PeerConfig
    legs: dict[str, tuple[int, frozenset[FlowRule]]] = field(default_factory=dict)  # call -> (generation, flows)
    live: Generation | None = None
    pending: Generation | None = None
    generation: int = 0
    failures: int = 0
    retry_at: float | None = None

    def wanted(self) -> dict[str, frozenset[FlowRule]]:
        return {c: rules for c, (_, rules) in self.legs.items()}


class SharedLegs:
    def __init__(self, peers: tuple[PeerConfig, ...], out: Outbox) -> None:
        self.out = out
        self.peers = {p.name: PeerShare(p) for p in peers if p.legs == "shared"}
        self.by_child: dict[str, tuple[PeerShare, Generation]] = {}  # every generation not yet removed
        self.stopping = False  # the controller stops: nothing more is set up
        self.dirty: dict[str, float] = {}  # peers whose legs changed in this input -> when

    def replace(self, name: str, peer: PeerConfig | None) -> None:
        """A reload replaced or removed the peer, none of its legs left (gateway/reconfig.py)."""
        self.peers.pop(name, None)
        self.dirty.pop(name, None)
        if peer is not None and peer.legs == "shared":
            self.peers[name] = PeerShare(peer)

    # -- the legs --------------------------------------------------------------------------------

    def join(self, peer: str, call_id: str, generation: int, rules: frozenset[FlowRule], now: float) -> None:
        self.peers[peer].legs[call_id] = (generation, rules)
        self.dirty[peer] = now

    def leave(self, peer: str, call_id: str, generation: int, now: float) -> None:
        """The call's leg goes (its teardown delay is over); a later generation of the same call
        (a re-INVITE keyed it again) stays."""
        ps = self.peers[peer]
        if ps.legs.get(call_id, (None,))[0] == generation:
            del ps.legs[call_id]
            self.dirty[peer] = now

    def flush(self) -> None:
        """Re-key for the joins and leaves of one input (or one timer round) at once: two legs
        whose teardown delays end together cost one re-key, not two. The core calls it as it hands
        out the input's actions."""
        while self.dirty:
            peer, now = self.dirty.popitem()
            self._reconcile(self.peers[peer], now)

    def peer_of(self, child: str) -> PeerConfig | None:
        entry = self.by_child.get(child)
        return entry[0].peer if entry is not None else None

    # -- re-keying -------------------------------------------------------------------------------

    def _reconcile(self, ps: PeerShare, now: float) -> None:
        if ps.pending is not None or self.stopping:
            return  # folded into the next generation, once this one answers
        want = ps.wanted()
        live = ps.live.legs if ps.live is not None else {}
        if want == live:
            return
        if not want:
            self._remove(ps, ps.live, "last leg left")
            ps.live = None
            return
        ps.generation += 1
        gen = Generation(f"{PREFIX}{ps.peer.name}-{ps.generation}", dict(want))
        ps.pending = gen
        self.by_child[gen.child] = (ps, gen)
        local_ts, remote_ts = gen.selectors()
        self.out.log("shared-rekey", peer=ps.peer.name, child=gen.child, t=now, legs=len(want),
                     joined=sorted(set(want) - set(live)), left=sorted(set(live) - set(want)),
                     selectors=len(local_ts) + len(remote_ts))
        self.out.append(InstallChild("", gen.child, ps.peer.name, local_ts, remote_ts))

    def _remove(self, ps: PeerShare, gen: Generation | None, reason: str) -> None:
        if gen is not None:
            self.out.append(RemoveChild("", gen.child, ps.peer.name, gen.uniqueid, reason))

    # -- outcomes --------------------------------------------------------------------------------

    def install_result(self, r: InstallResult, now: float) -> tuple[str, ...]:
        """The set-up's answer; the legs it covers for the first time (their keying started then)."""
        ps, gen = self.by_child[r.child]
        if ps.pending is not gen:
            return ()
        ps.pending = None
        if not r.ok:
            ps.failures += 1
            self._remove(ps, gen, "set-up failed")  # charon may still finish it: nothing stays behind
            uncovered = sorted(c for c in gen.legs if ps.live is None or c not in ps.live.legs)  # live: up
            self.out.log("keying-failed", peer=ps.peer.name, child=gen.child, reason=r.reason, calls=uncovered,
                         attempt=ps.failures)
            ps.retry_at = now + RETRY_S if ps.failures < TRIES else None
            return ()
        ps.failures, ps.retry_at = 0, None
        old, ps.live = ps.live, gen  # charon's initiate answers once the CHILD_SA is established
        fresh = tuple(c for c in gen.legs if old is None or c not in old.legs)
        self._remove(ps, old, "replaced")  # make before break: the new one is up
        self._reconcile(ps, now)  # what joined or left meanwhile
        return fresh

    def remove_result(self, r: RemoveResult) -> None:
        entry = self.by_child.pop(r.child, None)
        if not r.ok and entry is not None:
            self.out.log("removal-failed", child=r.child, peer=entry[0].peer.name, reason=r.reason)

    def child_updown(self, child: str, up: bool, uniqueid: str | None, now: float) -> None:
        """charon's word on a shared child: its id once up; a live one going down unasked (the
        peer lost, the IKE_SA gone) is set up again."""
        entry = self.by_child.get(child)
        if entry is None:
            return
        ps, gen = entry
        if up:
            gen.uniqueid = uniqueid
            return
        if gen is ps.live:
            ps.live = None
            self.out.log("shared-sa-lost", peer=ps.peer.name, child=child, legs=len(gen.legs))
            self._reconcile(ps, now)

    # -- a restarted controller, a restarted charon ------------------------------------------------

    def adopt(self, children: list[dict], rules_of: Callable[[dict], set[FlowRule]]) -> set[str]:
        """At start, after the journalled legs joined again (``join`` is not called for them:
        ``adopt_leg``): each peer's newest shared child charon holds becomes its live generation,
        covering the legs whose flows it holds (``rules_of(child)``); older ones are left to the
        orphan sweep. Returns the names adopted."""
        named = set()
        for ps in self.peers.values():
            mine = [c for c in children if c.get("name", "").startswith(f"{PREFIX}{ps.peer.name}-")]
            if not mine:
                continue
            newest = max(mine, key=lambda c: int(c["name"].rsplit("-", 1)[1]))
            ps.generation = int(newest["name"].rsplit("-", 1)[1])
            held = rules_of(newest)
            legs = {c: rules for c, rules in ps.wanted().items() if rules <= held}
            gen = Generation(newest["name"], legs, uniqueid=newest.get("uniqueid"))
            held_ts = tuple(sorted(newest.get("local-ts", []))), tuple(sorted(newest.get("remote-ts", [])))
            if gen.selectors() != held_ts:
                # it still covers a leg that ended while no controller ran: the next generation leaves it out
                gen.legs["(ended while stopped)"] = frozenset()
            ps.live = gen
            self.by_child[gen.child] = (ps, gen)
            named.add(gen.child)
        return named

    def adopt_leg(self, peer: str, call_id: str, generation: int, rules: frozenset[FlowRule]) -> None:
        self.peers[peer].legs[call_id] = (generation, rules)

    def resume(self, now: float, children: frozenset[str] | None = None) -> None:
        """Set up what the live legs need: after adoption (legs not covered), or once charon is
        back (``children``: what it holds; a restarted charon holds none of ours)."""
        for ps in self.peers.values():
            if children is not None and ps.live is not None and ps.live.child not in children:
                self.out.log("shared-sa-lost", peer=ps.peer.name, child=ps.live.child, legs=len(ps.live.legs),
                             reason="charon-restarted")
                self.by_child.pop(ps.live.child, None)
                ps.live = None
            self._reconcile(ps, now)  # a pending set-up's own answer decides it (its initiate is still out)

    # -- timers, stop ----------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        return min((ps.retry_at for ps in self.peers.values() if ps.retry_at is not None), default=None)

    def shutdown(self, keep_live: bool) -> None:
        """The controller stops: nothing more is set up; unless ``keep_live`` (the next run adopts
        them), every generation still held is removed."""
        self.stopping = True
        for ps in self.peers.values() if not keep_live else ():
            for gen in (ps.live, ps.pending):
                self._remove(ps, gen, "controller-stopped")
            ps.live = ps.pending = None
            ps.legs.clear()

    def handle_timer(self, now: float) -> None:
        for ps in self.peers.values():
            if ps.retry_at is not None and ps.retry_at <= now:
                ps.retry_at = None
                self._reconcile(ps, now)
