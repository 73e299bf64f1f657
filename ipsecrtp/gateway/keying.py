"""Keying decisions of the gateway core: which flows of which call get which SA, and when it goes.

Authorisation (both ends in the two peers' media prefixes, ports in the RTP range), the initiator
rule (the gateway whose prefixes hold the endpoint the strategy names initiates), each SA's life
as a :class:`~.state.SaKeying` on the transition table (its outcomes: ``outcomes.py``).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable

from ..media import Endpoint, Flow, MediaPolicy
from ..selectors import FlowRule, PeerConfig, child_name, rules_for_child, ts
from ..sip.events import MediaOffered
from .actions import (
    AddDnat,
    CancelInstall,
    DelDnat,
    Journal,
    Outbox,
    PermitChild,
    Unjournal,
)
from .natfix import NatFix
from .policy import authorise, srtp_skips
from .shared import SharedLegs
from .state import Happening, KeyState, SaKeying
from .strategies import PreKeyed, strategy_of
from .timelines import Timelines

H = Happening
REMOVED_MEMORY = 4096


class Keying:
    def __init__(self, peers: tuple[PeerConfig, ...], teardown_delay: float, out: Outbox, timelines: Timelines,
                 nat: NatFix, activity: Callable[[str, float], None]) -> None:
        self.set_peers(peers)
        self.teardown_delay, self.out, self.timelines, self.nat = teardown_delay, out, timelines, nat
        self.activity = activity
        self.calls: dict[str, SaKeying] = {}  # call -> its current SA
        self.by_child: dict[str, SaKeying] = {}  # child config name -> the SA (initiator, permit)
        # children removed lately -> their call: charon's child-down may come after the removal's answer
        self.removed: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.removed_from: dict[str, tuple[str, bool, int]] = {}  # child -> (peer, own_conn, member)
        self.timed: dict[int, SaKeying] = {}  # SAs with a removal or confirmation deadline
        # (when, n, SA): their deadlines in a heap, an entry checked against its SA when it comes up
        self.deadlines: list[tuple[float, int, SaKeying]] = []
        self.armed = itertools.count()
        self.spi_calls: dict[int, str] = {}
        self.rule_calls: dict[FlowRule, str] = {}
        self.prekey_removing: dict[tuple[str, tuple[int, ...]], SaKeying] = {}  # (call, first SPI) -> SA
        # pre-keyed installs not answered yet, found by their SPIs like removals: the call may have
        # ended or moved on to another generation before the answer comes
        self.prekey_installing: dict[tuple[str, tuple[int, ...]], SaKeying] = {}
        # the dialog's From and To tags of a call (the core asks its tracker): journalled with the call
        self.tags_of: Callable[[str], tuple[str | None, str | None]] = lambda call: (None, None)
        self.next_member: dict[str, int] = {}  # peer -> the pool member the next call goes to
        self.pending_dnat: dict[str, str] = {}  # call -> chains made at the offer, not yet owned by an SA
        # the last generation each call was keyed with, kept while its dialog lasts (on hold it has no
        # SA) and a while after it ended (its Call-ID used again): a child's name, which charon may
        # still hold while a removal runs, and pre-keyed keys (ESP must never reuse one) stay unique
        self.generations: dict[str, int] = {}
        self.ended_generations: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.srtp_end_to_end = 0  # calls left unkeyed because both ends run SRTP (srtp = "skip")
        self.shared = SharedLegs(peers, out)  # legs = "shared": one CHILD_SA per peer for all its calls
        nat.role_of = lambda call: self.calls[call].role if call in self.calls else None
        # a call answered while its peer is being loaded or replaced (a reload, gateway/reconfig.py)
        # is kept to key then: (call, peer, flows, trigger, srtp, t) -> kept
        self.defer: Callable[[str, PeerConfig, tuple[Flow, ...], str, str, float], bool] = lambda *_: False
        self.waits: Callable[[str], bool] = lambda _peer: False  # that peer is being loaded or replaced

    def set_peers(self, peers: tuple[PeerConfig, ...]) -> None:
        """The peers calls are authorised against (at start, and when a reload applies a change)."""
        self.policies = [(p, MediaPolicy.build(list(p.local_media), list(p.remote_media), p.rtp_ports))
                         for p in peers]

    # -- decisions -------------------------------------------------------------------------------

    def offered(self, ev: MediaOffered) -> None:
        self.nat.offer_dnat(ev, already=ev.call_id in self.pending_dnat)
        self.speculate(ev)

    def speculate(self, ev: MediaOffered) -> None:
        """Strategy c: key the offerer's endpoints to the peer's media range before any answer."""
        eps = ev.endpoints
        if not eps or ev.call_id in self.calls:
            return
        for peer, pol in self.policies:
            strategy = strategy_of(peer)
            if not strategy.keys_offer or self.waits(peer.name):
                continue
            sides = {pol.side(ep) for ep in eps}
            if not all(pol.port_min <= ep.port <= pol.port_max for ep in eps) or len(sides) != 1 or None in sides:
                continue
            lo, hi = peer.rtp_ports
            if sides == {"local"}:
                dest = ev.destination[0] if ev.destination else None
                if dest is not None and dest != peer.ike_remote and pol.side(Endpoint(dest, lo)) != "remote":
                    continue  # this INVITE goes elsewhere
                local_ts = sorted({ts(ep) for ep in eps})
                remote_ts, role = [f"{p}[udp/{lo}-{hi}]" for p in peer.remote_media], "initiator"
            else:
                local_ts = [f"{p}[udp/{lo}-{hi}]" for p in peer.local_media]
                remote_ts, role = sorted({ts(ep) for ep in eps}), "responder"
            rules = frozenset(rules_for_child(local_ts, remote_ts))
            st = SaKeying(ev.call_id, peer, role, (), rules, KeyState.WAITING, answered_at=ev.time, speculative=True,
                          generation=self._generation(ev.call_id))
            self.calls[ev.call_id] = st
            for r in rules:
                self.rule_calls[r] = ev.call_id
            tl = self.timelines.get(ev.call_id)
            if tl is not None:
                tl.role, tl.strategy = role, peer.strategy
                if role == "responder":
                    tl.keying_started = ev.time
            if role == "initiator":
                st.child = "spec-" + child_name(ev.call_id, st.generation)[5:]
                st.member = self._member(peer)
                self._request(st, strategy.install(st, local_ts, remote_ts))
            self.out.log("keying-speculative", call=ev.call_id, t=ev.time, role=role, peer=peer.name, child=st.child,
                         local_ts=local_ts, remote_ts=remote_ts)
            return

    def key(self, call_id: str, flows: tuple[Flow, ...], t: float, trigger: str, srtp: str = "") -> None:
        prev = self.calls.get(call_id)
        spec = prev if prev is not None and prev.speculative else None
        sdp_flows = flows
        flows, dnat = self.nat.translate_flows(call_id, flows)
        ok = authorise(self.policies, self.nat, self.out, call_id, self.nat.asked(call_id, flows), t, trigger)
        if ok is None:
            if spec is not None:
                self.unkey(call_id, "answer-refused", t)
            return
        peer, pol = ok
        if spec is None and self.defer(call_id, peer, sdp_flows, trigger, srtp, t):
            return
        if srtp_skips(peer, self.out, call_id, srtp, t, trigger):
            self.srtp_end_to_end += 1
            if spec is not None:  # keyed at the offer, before the answer said SRTP
                self.unkey(call_id, "srtp-end-to-end", t)
            return
        strategy = strategy_of(peer)
        # the exact SA fitted to a speculative one shares its generation (spec-X-n, call-X-n)
        generation = spec.generation if spec is not None else self._generation(call_id)
        role = "initiator" if pol.side(strategy.initiator_endpoint(flows[0])) == "local" else "responder"
        oriented = [pol.orient(f) for f in flows]
        rules = frozenset(FlowRule(lo.address, re.address, lo.port, re.port) for lo, re in oriented)
        st = SaKeying(call_id, peer, role, flows, rules, KeyState.WAITING, generation=generation, answered_at=t,
                      spec=spec, own_conn=strategy.own_conn)
        self.calls[call_id] = st
        st.dnat = self.pending_dnat.pop(call_id, None)  # installed at the offer already
        if st.dnat is None and dnat:
            self._dnat(call_id, child_name(call_id, generation)[5:], tuple(dnat))
        for r in rules:
            self.rule_calls[r] = call_id
        self.nat.keyed(call_id, sdp_flows, flows, oriented)
        tl = self.timelines.get(call_id)
        if tl is not None and not tl.role:
            tl.role, tl.strategy = role, peer.strategy
            if role == "responder":
                tl.keying_started = t
        if isinstance(strategy, PreKeyed):
            self.out.log("keying", call=call_id, t=t, trigger=trigger, role="both", peer=peer.name, child=None,
                         flows=[f.to_json() for f in flows], strategy=peer.strategy)
            st.role = "initiator"  # it removes its own SAs, after teardown_delay like an initiator
            self._request(st, strategy.install_prekeyed(st, peer, tuple(sorted(set(oriented)))))
            return
        if peer.legs == "shared" and role == "initiator":
            # its flows join the peer's shared CHILD_SA (re-keyed with them); the responder waits as usual
            st.shared, st.state = True, KeyState.SHARING
            self.out.log("keying", call=call_id, t=t, trigger=trigger, role=role, peer=peer.name, child=None,
                         flows=[f.to_json() for f in flows], strategy=peer.strategy, legs="shared")
            self.journal(st)
            self.shared.join(peer.name, call_id, generation, rules, t)
            return
        local_ts = sorted({ts(lo) for lo, _ in oriented})
        remote_ts = sorted({ts(re) for _, re in oriented})
        if role == "initiator":
            st.child = child_name(call_id, generation)
            st.member = spec.member if spec is not None else self._member(peer)
            self._request(st, strategy.install(st, local_ts, remote_ts))
        elif self.nat.relatched.get(call_id):
            # the responder's template child holds the RTP port range; a port a NAT chose is outside
            # it, so the peer's CREATE_CHILD_SA needs a child config with exactly these flows
            st.child, st.permit, st.state = child_name(call_id, generation), True, KeyState.PERMITTING
            self.by_child[st.child] = st
            st.set_up_pending = True
            self.out.append(PermitChild(call_id, st.child, peer.name, tuple(local_ts), tuple(remote_ts)))
        self.out.log("keying", call=call_id, t=t, trigger=trigger, role=role, peer=peer.name, child=st.child,
                     flows=[f.to_json() for f in flows], strategy=peer.strategy)
        self.journal(st)

    def journal(self, st: SaKeying) -> None:
        """What a restarted controller needs to adopt the call (gateway/adoption.py)."""
        self.out.append(Journal(st.call_id, st.journal_entry(*self.tags_of(st.call_id))))

    def _member(self, peer: PeerConfig) -> int:
        """The pool member for the next call to this peer: round robin, so that set-ups spread over
        the IKE_SAs (charon runs one exchange at a time on each)."""
        k = self.next_member.get(peer.name, 0)
        self.next_member[peer.name] = (k + 1) % max(1, peer.ike_pool)
        return k

    def _request(self, st: SaKeying, action) -> None:
        st.state, st.set_up_pending = KeyState.REQUESTED, True
        if st.child is not None:
            self.by_child[st.child] = st
        elif st.prekeyed is not None:
            self.prekey_installing[(st.call_id, tuple(k.spi for k in st.prekeyed[0])[:1])] = st
        self.out.append(action)

    def _dnat(self, call_id: str, tag: str, rules: tuple) -> None:
        self.out.append(AddDnat(call_id, tag, rules, self.nat.reason(call_id)))

    def _generation(self, call_id: str) -> int:
        """The call's next generation (0 for a new Call-ID), remembered from now on."""
        gen = self.generations.get(call_id, self.ended_generations.pop(call_id, -1)) + 1
        self.generations[call_id] = gen
        return gen

    def rekey(self, call_id: str, flows: tuple[Flow, ...], t: float, trigger: str,
              reason: str = "media-changed", srtp: str = "") -> None:
        if call_id in self.calls:
            self.unkey(call_id, reason, t, rekeying=True)
        self.key(call_id, flows, t, trigger, srtp)

    def unkey(self, call_id: str, reason: str, t: float, rekeying: bool | None = None) -> None:
        """The call's SA goes (after the teardown delay); ``rekeying``: at once, and a new one
        follows (a re-INVITE, latching, charon's restart), so the call's NAT state stays."""
        rekeying = reason == "media-changed" if rekeying is None else rekeying
        st = self.calls.pop(call_id, None)
        self.nat.forget(call_id, rekeying=rekeying)
        if st is not None and not rekeying:
            self.out.append(Unjournal(call_id))
        if not rekeying and call_id in self.generations:
            self.ended_generations[call_id] = self.generations.pop(call_id)
            while len(self.ended_generations) > REMOVED_MEMORY:
                self.ended_generations.popitem(last=False)
        pending = self.pending_dnat.pop(call_id, None)
        if pending is not None:
            self.out.append(DelDnat(pending))  # translated at the offer, never keyed (cancelled, refused)
        if st is None:
            self.out.log("dialog-ended", call=call_id, reason=reason, t=t, keyed=False)
            return
        for s_ in (st, st.spec):
            if s_ is None or s_.terminated:
                continue  # a speculative SA already replaced by the exact one
            self.out.log("unkeying", call=call_id, reason=reason, t=t, role=s_.role, child=s_.child,
                         speculative=s_.speculative)
            if s_.role == "initiator" or s_.permit:
                # trailing RTP after a BYE would leave in clear if the SA went at once
                self.drain(s_, t + (0.0 if rekeying else self.teardown_delay), reason)
            else:
                never_up = s_.state is not KeyState.UP
                s_.state = KeyState.GONE  # a responder's SA is the initiator's to delete
                if s_.dnat:
                    self.out.append(DelDnat(s_.dnat))
                if never_up:  # else its child-down, still to come, needs them to find the call
                    self.forget_rules(s_)

    def drain(self, st: SaKeying, due: float, reason: str) -> None:
        if st.state is KeyState.REQUESTED and st.child is not None and st.prekeyed is None:
            self.out.append(CancelInstall(st.child))  # not run yet? then it never will
        st.advance(H.UNKEY)
        st.remove_due, st.remove_reason, st.confirm_due = due, reason, None
        self.arm(st)

    @staticmethod
    def due(st: SaKeying) -> float | None:
        """When something is to happen to this SA: its removal (once its own set-up answered), or
        giving up on its child-updown."""
        if st.state is KeyState.DRAINING:
            return None if st.set_up_pending else st.remove_due
        if st.state in (KeyState.INITIATED, KeyState.CONFIRMING):
            return st.confirm_due
        return None

    def arm(self, st: SaKeying) -> None:
        self.timed[id(st)] = st
        when = self.due(st)
        if when is not None:
            heapq.heappush(self.deadlines, (when, next(self.armed), st))

    def remove(self, st: SaKeying) -> None:
        st.advance(H.REMOVE)
        if st.shared:  # the leg leaves the shared CHILD_SA: re-keyed without its flows
            st.state = KeyState.GONE
            self.timed.pop(id(st), None)
            if st.dnat:
                self.out.append(DelDnat(st.dnat))
                st.dnat = None
            self.shared.leave(st.peer.name, st.call_id, st.generation, st.remove_due or 0.0)
            return
        if st.child is None and st.prekeyed is None:
            st.state = KeyState.GONE  # a pre-keyed install that failed: nothing to remove
            self.timed.pop(id(st), None)
            return
        self.timed.pop(id(st), None)
        if st.speculative:
            for r in st.rules:
                if self.rule_calls.get(r) == st.call_id:
                    self.rule_calls.pop(r, None)
        if st.dnat:
            self.out.append(DelDnat(st.dnat))
            st.dnat = None
        if st.prekeyed is not None:
            self.prekey_removing[(st.call_id, tuple(k.spi for k in st.prekeyed[0])[:1])] = st
            for k in st.prekeyed[0]:
                self.spi_calls.pop(k.spi, None)
        self.out.append(strategy_of(st.peer).remove(st, st.remove_reason))

    def forget_rules(self, st: SaKeying) -> None:
        if st.call_id not in self.calls:
            for r in st.rules:
                if self.rule_calls.get(r) == st.call_id:
                    self.rule_calls.pop(r, None)

    def relatch(self, now: float) -> None:
        for call in self.nat.due_relatches(now):
            if call in self.calls and call in self.nat.sdp_flows:
                self.rekey(call, self.nat.sdp_flows[call], now, "media latching")

    # -- timers ----------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        while self.deadlines and self.due(self.deadlines[0][2]) != self.deadlines[0][0]:
            heapq.heappop(self.deadlines)  # its SA moved on (removed, confirmed, re-armed)
        times = [t for t in (self.deadlines[0][0] if self.deadlines else None, self.nat.next_timer(),
                             self.shared.next_timer()) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            when, _, st = heapq.heappop(self.deadlines)
            if self.due(st) != when:
                continue
            if st.state is KeyState.DRAINING:
                self.remove(st)
            else:
                st.confirm_due = None
                self.timed.pop(id(st), None)
                st.advance(H.CONFIRM_TIMEOUT)
                self.out.log("keying-failed", call=st.call_id, child=st.child,
                             reason=st.install_error or f"{st.child} not installed after initiate")
        self.shared.handle_timer(now)
        self.relatch(now)

    def shutdown(self, now: float, keep_live: bool = False) -> None:
        """Remove what this gateway set up: pending removals now, and (unless ``keep_live``) every
        live SA it initiated."""
        self.shared.shutdown(keep_live)  # first: legs leaving below set up nothing more
        for st in list(self.calls.values()) if not keep_live else ():
            self.out.append(Unjournal(st.call_id))
            for s_ in (st, st.spec):
                if s_ is not None and (s_.role == "initiator" or s_.permit) and not s_.terminated and \
                        s_.state is not KeyState.FAILED:
                    self.drain(s_, now, "controller-stopped")
        for st in list(self.timed.values()):
            if st.state is KeyState.DRAINING:
                st.set_up_pending = False  # the shell has stopped its workers: nothing is in flight
                self.remove(st)
