"""The peer lost its IKE_SA (its charon restarted): told by the new IKE_SA it sets up, not by dead-peer
detection (gateway/peerloss.py). With one reused IKE_SA per peer, a new IKE_SA this gateway answered
on the peer's member connection makes every other one there stale: the core asks for them to be
deleted (ClearStaleIke), and says what went. One this gateway set up itself only once it is older
than the start race (the executor reads its age from charon); never with an IKE pool (the peer's
members all land on member 0 there), never for ike-per-call."""

from __future__ import annotations

import dataclasses

import pytest

from ipsecrtp.gateway.actions import (
    CharonReconnected,
    ChildUpDown,
    ClearStaleIke,
    EstablishIke,
    IkeUpDown,
    InstallChild,
    StaleIkeCleared,
)
from ipsecrtp.gateway.peerloss import RACE_S, stale_ike
from ipsecrtp.selectors import child_name

from .scenario import Call, Pair, peer


def responder_ike(uniqueid: str, **kw) -> dict:
    return {"uniqueid": uniqueid, "state": "ESTABLISHED", "remote-host": "198.51.100.1", **kw}


@pytest.mark.parametrize("strategy", ["child-per-call", "speculative"])
def test_a_new_ike_sa_the_peer_set_up_on_its_member_connection_clears_the_others(strategy):
    p = peer("gwb", strategy)  # gwb's view of gwa, the gateway that sets the IKE_SA up
    assert stale_ike((p,), p.member(0), responder_ike("7")) == ClearStaleIke("gwa", p.member(0), "7")


@pytest.mark.parametrize("why, conn, ike, change", [
    ("this gateway initiated the new one", None, responder_ike("7", initiator="yes"), {}),
    ("another connection (a call's own, ike-per-call)", "call-x", responder_ike("7"), {}),
    ("an IKE pool: the peer's members all land on member 0", None, responder_ike("7"), {"ike_pool": 2}),
    ("ike-per-call reuses no IKE_SA", None, responder_ike("7"), {"strategy": "ike-per-call"}),
    ("no unique id to keep", None, {"state": "ESTABLISHED"}, {}),
])
def test_no_clearing(why, conn, ike, change):
    p = dataclasses.replace(peer("gwb", "child-per-call"), **change)
    assert stale_ike((p,), conn or p.member(0), ike) is None, why


def test_the_core_asks_for_the_clearing_and_reports_what_went():
    pair, c = Pair("child-per-call"), Call("c1")
    pair.yes(0.0)
    pair.call(c)
    gwb = pair.b  # the initiator of the call's CHILD_SA; gwa sets the IKE_SA up (the lower address)
    conn = gwb.core.cfg.peers[0].member(0)
    gwb.charon(5.0, IkeUpDown(True, conn, responder_ike("9")))
    assert gwb.of(ClearStaleIke) == [ClearStaleIke("gwa", conn, "9")]
    gwb.charon(5.0, StaleIkeCleared("gwa", conn, "9", ()))  # the peer's first IKE_SA: nothing to say
    assert gwb.logs("peer-lost-ike") == []
    gwb.charon(5.1, StaleIkeCleared("gwa", conn, "9", ("3",)))
    assert [(e["peer"], e["new_ike"], e["cleared"]) for e in gwb.logs("peer-lost-ike")] == [("gwa", "9", ["3"])]
    # charon then reports the call's CHILD_SA on the cleared IKE_SA down: the call is keyed again at once
    install = next(a for a in gwb.of(InstallChild) if a.call_id == "c1")
    gwb.charon(5.1, ChildUpDown(False, conn, gwb.up.pop(install.child)))
    assert [a.child for a in gwb.of(InstallChild) if a.call_id == "c1"] == [child_name("c1", 0), child_name("c1", 1)]
    assert [e["reason"] for e in gwb.logs("sa-lost")] == ["child-down"]


def test_a_failed_clearing_says_dead_peer_detection_is_left():
    pair = Pair("child-per-call")
    gwb = pair.b
    conn = gwb.core.cfg.peers[0].member(0)
    gwb.charon(1.0, StaleIkeCleared("gwa", conn, "9", (), False, "terminate IKE_SA #3 failed: timeout"))
    (e,) = gwb.logs("stale-ike-clear-failed")
    assert e["reason"].endswith("timeout") and "dead-peer detection" in e["consequence"]


def test_either_gateway_sets_the_ike_sa_up_again_when_its_charon_answers_again():
    """At start only the lower address (gwa) sets member 0 up; once its charon answers again after a
    restart, the higher one (gwb) does too: its new IKE_SA is what tells gwa that the old one is dead."""
    pair = Pair("child-per-call")
    assert pair.a.of(EstablishIke) == [EstablishIke("gwb", 1, 0)] and pair.b.of(EstablishIke) == []
    pair.b.charon(5.0, CharonReconnected(frozenset(), 1.0))
    assert pair.b.of(EstablishIke) == [EstablishIke("gwa", 1, 0)]


def test_the_clearing_spares_our_own_ike_sa_only_within_the_start_race():
    p = peer("gwa", "child-per-call")  # gwa's view of gwb: gwa set the old IKE_SA up itself
    clear = stale_ike((p,), p.member(0), responder_ike("12"))
    assert clear is not None and clear.own_older_than_s == RACE_S
