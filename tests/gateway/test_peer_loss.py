"""A live call's CHILD_SA goes while its dialog goes on (issue 15 item 5): the peer gateway's charon
restarted and dead-peer detection cleared the IKE_SA here (charon reports the call's CHILD_SA down
without our asking), or charon restarted here. The gateway that initiated the SA keys the call again
as a new generation, counts it (``sa-lost``) and times it until the new SA is up (``sa-recovered``);
the responder leaves it to the initiator, and an older SA going never takes the current one's routes."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import AddRoute, CharonReconnected, ChildUpDown, DelRoute, InstallChild, RemoveChild
from ipsecrtp.selectors import FlowRule, child_name

from .harness import Harness, config
from .scenario import PHONE_A, PHONE_B, TEARDOWN, Call, Pair, gateway, peer

CHILD_STRATEGIES = ("child-per-call", "ike-per-call")


def live(strategy: str) -> tuple[Pair, Call]:
    p, c = Pair(strategy), Call("c1")
    p.yes(0.0)
    p.call(c)
    return p, c


def installs(gw: Harness) -> list[InstallChild]:
    return [a for a in gw.of(InstallChild) if a.call_id == "c1"]


def lose(gw: Harness, child: str, now: float) -> None:
    """charon reports the CHILD_SA down unasked (its IKE_SA cleared by dead-peer detection)."""
    install = next(a for a in gw.of(InstallChild) if a.child == child)
    gw.charon(now, ChildUpDown(False, child if install.own_conn else f"peer-{install.peer}", gw.up.pop(child)))


@pytest.mark.parametrize("strategy", CHILD_STRATEGIES)
def test_the_initiator_keys_a_live_call_again_when_its_sa_goes_unasked(strategy):
    p, _c = live(strategy)
    gw = p.b  # the answerer's gateway initiates in both strategies
    assert [a.child for a in installs(gw)] == [child_name("c1", 0)]
    lose(gw, child_name("c1", 0), 5.0)
    lost = gw.logs("sa-lost")
    assert [(e["call"], e["child"], e["reason"]) for e in lost] == [("c1", child_name("c1", 0), "child-down")]
    assert [a.child for a in installs(gw)] == [child_name("c1", 0), child_name("c1", 1)]  # a new generation
    assert gw.logs("sa-recovered") == []  # not before its new SA is up
    p.yes(5.4)
    rec = gw.logs("sa-recovered")
    assert [(e["call"], e["child"], e["reason"]) for e in rec] == [("c1", child_name("c1", 1), "child-down")]
    assert rec[0]["outage_s"] == pytest.approx(0.4)
    # the old generation's connection goes too (its SA is gone: nothing left but the config)
    p.run_until(5.5)
    assert [a.child for a in gw.of(RemoveChild)] == [child_name("c1", 0)]
    assert gw.of(RemoveChild)[0].uniqueid is None


def test_the_responder_leaves_the_new_sa_to_the_initiator():
    p, _c = live("child-per-call")
    install = installs(p.b)[0]
    p.a.responder_down(5.0, install)  # the initiator's charon restarted: DPD cleared it here
    assert p.a.logs("sa-lost") == []
    assert p.a.of(InstallChild) == []


def test_a_removal_of_ours_is_not_a_loss():
    p, c = live("child-per-call")
    p.sip(5.0, c.bye())
    p.run_until(5.0 + TEARDOWN + 0.1)
    assert p.b.of(RemoveChild) and p.b.logs("sa-lost") == []
    assert [a.child for a in installs(p.b)] == [child_name("c1", 0)]


def test_an_sa_lost_while_its_call_ends_is_not_keyed_again_and_not_timed():
    p, c = live("child-per-call")
    lose(p.b, child_name("c1", 0), 5.0)
    assert len(installs(p.b)) == 2
    p.sip(5.1, c.bye())  # before the new SA answered
    p.yes(5.2)
    p.run_until(5.2 + TEARDOWN + 0.1)
    assert p.b.logs("sa-recovered") == []
    assert p.b.core.recovery.lost == {}
    assert len(installs(p.b)) == 2


def test_lost_again_while_re_keying_is_timed_from_the_first_loss():
    p, _c = live("child-per-call")
    lose(p.b, child_name("c1", 0), 5.0)
    retry = installs(p.b)[1]
    p.b.answer(retry, 5.1, ok=False, up=False)  # the peer did not answer yet
    p.b.run_until(9.0)  # gives up waiting for the CHILD_SA: keying-failed, the call stays unprotected
    assert p.b.logs("sa-recovered") == []
    assert p.b.core.recovery.lost == {"c1": (5.0, "child-down")}


def test_charon_restart_here_is_counted_and_timed_the_same_way():
    p, _c = live("child-per-call")
    gw = p.b
    gw.up.clear()  # charon dropped every SA when it stopped: no down event comes for them
    gw.charon(6.0, CharonReconnected(frozenset(), 1.5))
    assert [(e["call"], e["reason"]) for e in gw.logs("sa-lost")] == [("c1", "charon-restarted")]
    p.yes(6.2)
    assert [(e["call"], e["reason"], e["outage_s"]) for e in gw.logs("sa-recovered")] == \
        [("c1", "charon-restarted", pytest.approx(0.2))]


def test_an_older_sa_going_leaves_the_routes_of_the_call_s_current_one():
    """Policy routing (kernel-libipsec): the responder got the call's SA again from the restarted
    initiator; dead-peer detection then clears the old one. The flows' routes must stay."""
    gw = Harness(config((peer("gwa", "child-per-call"),), name="gwa", teardown_delay=TEARDOWN))
    c = Call("c1")
    gw.yes(0.0)
    for pkt in c.answered():
        gw.on_packet(1.0, pkt)
    gw.yes(1.0)
    local_ts, remote_ts = (f"{PHONE_A}/32[udp/{c.a_port}]",), (f"{PHONE_B}/32[udp/{c.b_port}]",)
    old = gw.child_sa("media", local_ts, remote_ts)
    gw.charon(1.1, ChildUpDown(True, "peer", old))
    rule = FlowRule(PHONE_A, PHONE_B, c.a_port, c.b_port)
    assert AddRoute(rule) in gw.of(AddRoute)
    new = gw.child_sa("media", local_ts, remote_ts)
    gw.charon(5.0, ChildUpDown(True, "peer", new))  # the restarted initiator keyed the call again
    gw.charon(9.0, ChildUpDown(False, "peer", old))  # DPD cleared the dead IKE_SA here
    assert DelRoute(rule) not in gw.of(DelRoute)
    assert gw.logs("sa-lost") == []
    gw.charon(12.0, ChildUpDown(False, "peer", new))  # the current SA going takes them
    assert DelRoute(rule) in gw.of(DelRoute)


def test_a_speculative_sa_going_is_left_to_its_answer():
    gw = gateway("gwa", "speculative")
    gw.yes(0.0)
    c = Call("c1")
    gw.on_packet(1.0, c.invite())
    gw.yes(1.0)
    spec = next(a for a in gw.of(InstallChild) if a.child.startswith("spec-"))
    lose(gw, spec.child, 1.1)
    assert gw.logs("sa-lost") == []


def reconnected_in_flight(strategy: str) -> tuple[Harness, InstallChild]:
    """The answerer's gateway has asked for the call's SA and not heard back when charon answers
    again (its listener's session came back): the gateway and that set-up."""
    p, c = Pair(strategy), Call("c1")
    p.yes(0.0)
    p.sip(1.0, c.invite())
    p.yes(1.0)
    p.sip(1.2, c.provisional(), c.ok())
    gw = p.b
    (first,) = installs(gw)
    gw.charon(1.3, CharonReconnected(frozenset(), 0.5))
    return gw, first


@pytest.mark.parametrize("strategy", CHILD_STRATEGIES)
def test_a_set_up_in_flight_when_charon_answers_again_is_not_keyed_twice(strategy):
    """The listener's session came back (charon hung past a time-out in a loaded guest, or restarted)
    while a call's initiate was still in charon's hands: that call is not in charon's list yet, but
    its own set-up will answer. Keying it again made a second CHILD_SA for the same flows (seen in
    the real-kernel tier). Its outcome decides: up, it is kept; failed, it is keyed again then."""
    gw, first = reconnected_in_flight(strategy)
    assert installs(gw) == [first] and gw.logs("sa-lost") == []
    gw.answer(first, 1.4)
    assert installs(gw) == [first] and gw.logs("sa-initiated")


@pytest.mark.parametrize("strategy", CHILD_STRATEGIES)
def test_a_set_up_in_flight_that_fails_after_charon_answers_again_is_keyed_again(strategy):
    gw, first = reconnected_in_flight(strategy)
    gw.answer(first, 1.4, ok=False)  # the restart took it: no child-updown comes either
    gw.run_until(1.4 + 3.5)
    assert len(installs(gw)) == 2
    assert [(e["call"], e["reason"]) for e in gw.logs("sa-lost")] == [("c1", "charon-restarted")]
