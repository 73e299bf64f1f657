"""A restarted controller takes over the calls its previous run keyed (controller restart: the
SAs and the data plane stayed in place while it was down); and live calls whose CHILD_SA went while
their dialog goes on are keyed again (:class:`Recovery`: charon restarted, or the peer was lost).

Inputs: the journal the previous run left (one entry per keyed call: its dialog's tags, role,
flows, child) and the CHILD_SAs charon holds now. Each journalled call is tracked again as a
confirmed dialog (a BYE, a re-INVITE or the end of its media ends it, as for any call) with its SA
as it is: nothing is keyed again that is still up. A journalled call whose SA charon no longer
holds is keyed anew; a CHILD_SA of ours that no journal entry names (its call ended while the
controller was down and the journal says so, or it was never journalled) is removed. Pure.
"""

from __future__ import annotations

from ..media import Flow
from ..selectors import FlowRule, rules_for_child
from ..sip.dialog import DialogTracker
from .actions import RemoveChild
from .keying import Keying
from .state import SETTING_UP, KeyState, SaKeying
from .strategies import strategy_of

OURS = ("call-", "spec-", "shared-")  # the child names this controller gives
# why a live call's SA went (a bounded label for metrics): charon restarted here (it dropped every
# SA), or charon reported it down without our asking (the peer's IKE_SA cleared by dead-peer
# detection after the peer restarted, or the peer deleted it)
CHARON_RESTARTED, CHILD_DOWN = "charon-restarted", "child-down"
LOST_REASONS = (CHARON_RESTARTED, CHILD_DOWN)
# an initiator's set-up that charon has not settled: asked and not answered, or answered and its
# CHILD_SA not yet reported
IN_FLIGHT = SETTING_UP | {KeyState.INITIATED, KeyState.CONFIRMING}


class Recovery:
    """Live calls whose CHILD_SA this gateway initiated went while their dialog goes on: each is keyed
    again as a new generation, counted (``sa-lost``) and timed until its new SA is up
    (``sa-recovered``, seconds since the loss). A responder's SA is the initiator's to key again."""

    def __init__(self, k: Keying) -> None:
        self.k = k
        self.lost: dict[str, tuple[float, str]] = {}  # call -> (when its SA was first lost, why)
        # calls whose set-up was in flight when charon answered again: their own outcome decides
        # (up: kept; failed: keyed again then), never a second set-up beside the first
        self.in_flight: dict[str, tuple[SaKeying, str]] = {}

    def rekey(self, st: SaKeying, now: float, reason: str) -> None:
        k = self.k
        k.out.log("sa-lost", call=st.call_id, child=st.child, sa=st.uniqueid, reason=reason, t=now)
        st.uniqueid = None  # gone: its removal only unloads its connection
        self.lost.setdefault(st.call_id, (now, reason))  # lost again while re-keying: timed from the first
        k.rekey(st.call_id, st.flows, now, reason, reason=reason)

    def child_down(self, st: SaKeying, child: dict, now: float) -> None:
        """charon reports ``child`` down: when it is the SA of a live call that this gateway
        initiated and did not remove (not draining, not replaced), the call is keyed again."""
        if self.k.calls.get(st.call_id) is not st or st.state is not KeyState.UP or st.role != "initiator" \
                or st.speculative or st.prekeyed is not None:
            return
        if st.uniqueid is not None and child.get("uniqueid") not in (None, st.uniqueid):
            return  # an older SA of the same child name (rekeyed by charon): the current one stays
        self.rekey(st, now, CHILD_DOWN)

    def settle(self, call_id: str | None, now: float) -> None:
        """The call's new SA is up: how long the call went without one."""
        if call_id is None or call_id not in self.lost:
            return
        st = self.k.calls.get(call_id)
        if st is None:
            del self.lost[call_id]  # the dialog ended first
        elif st.state is KeyState.UP:
            when, reason = self.lost.pop(call_id)
            self.k.out.log("sa-recovered", call=call_id, child=st.child, sa=st.uniqueid, reason=reason,
                           outage_s=round(now - when, 3))

    def forget(self, call_id: str) -> None:
        self.lost.pop(call_id, None)
        self.in_flight.pop(call_id, None)

    def watch(self, st: SaKeying, reason: str) -> None:
        self.in_flight[st.call_id] = (st, reason)

    def check(self, now: float) -> None:
        """The watched set-ups that have settled: a failed one (charon's restart took it) is keyed
        again; one that came up, or a call that moved on (ended, keyed anew), is let go."""
        for call, (st, reason) in list(self.in_flight.items()):
            if st.state in IN_FLIGHT and self.k.calls.get(call) is st:
                continue
            del self.in_flight[call]
            if st.state is KeyState.FAILED and self.k.calls.get(call) is st:
                self.rekey(st, now, reason)

    def carried(self, call: str | None, child: dict) -> set[FlowRule]:
        """The flows a call's current SA carries, when that SA is up and is not ``child`` (whose
        going must then leave their routes in place)."""
        st = self.k.calls.get(call) if call is not None else None
        if st is None or st.state is not KeyState.UP or st.uniqueid in (None, child.get("uniqueid")):
            return set()
        return rules_for_child(st.child_info.get("local-ts", []), st.child_info.get("remote-ts", []))


def adopt(k: Keying, tracker: DialogTracker, entries: list[dict], children: list[dict], now: float,
          recovery: Recovery) -> set[FlowRule]:
    """Take over the journalled calls; returns the flow rules of the SAs adopted (to route)."""
    by_name = {c.get("name"): c for c in children}
    peers = {p.name: (p, pol) for p, pol in k.policies}
    routed: set[FlowRule] = set()
    named = set()
    for e in entries:
        if e.get("call_id") in k.calls or e.get("peer") not in peers:
            continue
        peer, pol = peers[e["peer"]]
        flows = tuple(Flow.from_json(f) for f in e.get("flows", []))
        oriented = [pol.orient(f) for f in flows]
        rules = frozenset(FlowRule(lo.address, re.address, lo.port, re.port) for lo, re in oriented)
        st = SaKeying(e["call_id"], peer, e["role"], flows, rules, KeyState.UP, generation=int(e.get("generation", 0)),
                      answered_at=now, child=e.get("child"), member=int(e.get("member", 0)),
                      own_conn=strategy_of(peer).own_conn)
        tracker.adopt(st.call_id, e.get("from_tag"), e.get("to_tag"), flows, now)
        k.calls[st.call_id] = st
        k.generations[st.call_id] = st.generation
        for r in rules:
            k.rule_calls[r] = st.call_id
        if e.get("shared"):  # a leg of the peer's shared CHILD_SA: adopted with it, below
            st.shared, st.state = True, KeyState.SHARING
            k.shared.adopt_leg(peer.name, st.call_id, st.generation, rules)
            k.out.log("call-adopted", call=st.call_id, child=None, role=st.role, legs="shared")
            continue
        child = by_name.get(st.child) if st.child else _responder_child(children, rules)
        if st.child:
            named.add(st.child)
            k.by_child[st.child] = st
        if child is None and st.role == "initiator":
            k.out.log("call-adopted", call=st.call_id, child=st.child, role=st.role, sa=None)
            continue  # keyed anew below: its SA is gone
        if child is not None:
            st.uniqueid, st.child_info = child.get("uniqueid"), child
            for x in ("spi-in", "spi-out"):
                if child.get(x):
                    k.spi_calls[int(child[x], 16)] = st.call_id
            routed |= rules_for_child(child.get("local-ts", []), child.get("remote-ts", []))
        else:
            st.state = KeyState.WAITING  # a responder whose SA the peer has not made again yet
        k.out.log("call-adopted", call=st.call_id, child=st.child, role=st.role, sa=st.uniqueid)
    rekey_lost(recovery, frozenset(by_name), now)
    named |= k.shared.adopt(children, lambda c: rules_for_child(c.get("local-ts", []), c.get("remote-ts", [])))
    for c in children:
        name = c.get("name", "")
        if name.startswith(OURS) and name not in named:
            peer_name = _peer_of(k, c.get("ike", ""))
            if peer_name is not None:
                k.out.log("orphan-removed", child=name, sa=c.get("uniqueid"))
                k.out.append(RemoveChild("", name, peer_name, c.get("uniqueid"), "orphan",
                                         own_conn=c.get("ike", "").startswith("call-") and c.get("ike") == name))
    return routed


def rekey_lost(recovery: Recovery, children: frozenset[str], now: float) -> None:
    """charon is back (it drops every SA when it stops): every live call whose CHILD_SA this
    gateway initiated and charon no longer holds is keyed again, as a new generation; a
    responder's are the peer's to key again, and speculative ones wait for their answer."""
    for st in list(recovery.k.calls.values()):
        if st.role != "initiator" or st.prekeyed is not None or st.speculative or st.child is None \
                or st.terminated or st.child in children:
            continue
        if st.state in IN_FLIGHT:  # not in charon's list yet: keying it again made a second SA
            recovery.watch(st, CHARON_RESTARTED)
            continue
        recovery.rekey(st, now, CHARON_RESTARTED)


def _responder_child(children: list[dict], rules: frozenset[FlowRule]) -> dict | None:
    for c in children:
        if rules & rules_for_child(c.get("local-ts", []), c.get("remote-ts", [])):
            return c
    return None


def _peer_of(k: Keying, ike_conn: str) -> str | None:
    for p, _pol in k.policies:
        if ike_conn in p.members():
            return p.name
    return next((p.name for p, _pol in k.policies), None) if ike_conn.startswith("call-") else None
