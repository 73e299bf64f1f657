"""A restarted controller takes over the calls its previous run keyed (controller restart: the
SAs and the data plane stayed in place while it was down).

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
from .state import KeyState, SaKeying
from .strategies import strategy_of

OURS = ("call-", "spec-")  # the child names this controller gives


def adopt(k: Keying, tracker: DialogTracker, entries: list[dict], children: list[dict], now: float) -> set[FlowRule]:
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
    rekey_lost(k, frozenset(by_name), now)
    for c in children:
        name = c.get("name", "")
        if name.startswith(OURS) and name not in named:
            peer_name = _peer_of(k, c.get("ike", ""))
            if peer_name is not None:
                k.out.log("orphan-removed", child=name, sa=c.get("uniqueid"))
                k.out.append(RemoveChild("", name, peer_name, c.get("uniqueid"), "orphan",
                                         own_conn=c.get("ike", "").startswith("call-") and c.get("ike") == name))
    return routed


def rekey_lost(k: Keying, children: frozenset[str], now: float) -> None:
    """charon is back (it drops every SA when it stops): every live call whose CHILD_SA this
    gateway initiated and charon no longer holds is keyed again, as a new generation; a
    responder's are the peer's to key again, and speculative ones wait for their answer."""
    for call_id, st in list(k.calls.items()):
        if st.role != "initiator" or st.prekeyed is not None or st.speculative or st.child is None \
                or st.terminated or st.child in children:
            continue
        st.uniqueid = None  # gone with charon: its removal only unloads its connection
        k.out.log("sa-lost", call=call_id, child=st.child, reason="charon restarted", t=now)
        k.rekey(call_id, st.flows, now, "charon restarted", reason="charon-restarted")


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
