"""Time in the core: the teardown delay, a removal waiting for its own set-up, charon's late or
missing confirmation of a CHILD_SA, media keeping a call alive, IKE_SA retries and shutdown. charon's
answers are given by hand here, at chosen times; timers fire through next_timer/handle_timer."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import (
    CharonReconnected,
    ChildUpDown,
    EstablishIke,
    InstallChild,
    InstallPrekeyed,
    InstallResult,
    RemoveChild,
    RemovePrekeyed,
)
from ipsecrtp.gateway.state import CONFIRM_WAIT
from ipsecrtp.packet import TCP, UDP
from ipsecrtp.selectors import child_name

from ..test_packet import ipv4, tcp, udp
from .harness import Harness
from .scenario import MEDIA_TIMEOUT, PHONE_A, PHONE_B, STRATEGIES, TEARDOWN, Call, gateway, rtp

C1 = child_name("c1", 0)
CHILD_STRATEGIES = ("ike-per-call", "child-per-call")


def initiator(strategy: str) -> Harness:
    """The gateway that sets up a call from A to B, alone (its charon answers only when told)."""
    gw = gateway("gwa" if strategy in ("speculative", "pre-keyed") else "gwb", strategy)
    gw.yes(0.0)  # the long-lived IKE_SA, where there is one
    return gw


def answer_call(gw: Harness, c: Call, t: float = 1.0, answered: float = 1.2) -> None:
    gw.on_packet(t, c.invite())
    gw.on_packet(answered, c.ok())
    gw.on_packet(answered + 0.01, c.ack())


def setups(gw: Harness) -> list:
    return [a for a in gw.pending if isinstance(a, (InstallChild, InstallPrekeyed))]


def removals(gw: Harness) -> list:
    return gw.of(RemoveChild) + gw.of(RemovePrekeyed)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_removal_only_once_the_teardown_delay_after_the_bye_is_over(strategy):
    gw, c = initiator(strategy), Call("c1")
    answer_call(gw, c)
    gw.yes(1.2)
    gw.run_until(1.2)
    before = len(removals(gw))  # speculative: its offer's SA, fitted to the answer
    gw.on_packet(5.0, c.bye())
    assert gw.core.next_timer() == 5.0 + TEARDOWN
    assert gw.handle_due(5.0 + TEARDOWN - 0.001) == []
    assert len(removals(gw)) == before
    out = gw.handle_due(5.0 + TEARDOWN)
    (rm,) = [a for a in out if isinstance(a, (RemoveChild, RemovePrekeyed))]
    assert rm.reason == "bye-by-caller" and rm.call_id == "c1"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_removal_never_overtakes_its_own_set_up(strategy):
    """The BYE comes before charon answered the install: nothing is removed, however long the wait,
    until the install's outcome is in; then the removal is due at once."""
    gw, c = initiator(strategy), Call("c1")
    if strategy == "speculative":
        gw.yes(0.0)
        gw.on_packet(1.0, c.invite())  # its offer's SA: not answered either
        gw.on_packet(1.2, c.ok())
    else:
        answer_call(gw, c)
    pending = setups(gw)
    gw.on_packet(1.3, c.bye())
    gw.run_until(30.0)
    assert removals(gw) == []
    # the installs answer, late; the removals follow at the next timer, one per set-up
    for i, a in enumerate(pending):
        out = gw.answer(a, 30.0 + i)
        assert not any(isinstance(x, (RemoveChild, RemovePrekeyed)) for x in out)
        assert gw.core.next_timer() <= 30.0 + i
        gw.handle_due(30.0 + i)
    gone = removals(gw)
    names = sorted(getattr(a, "child", "pre-keyed") for a in gone)
    assert names == sorted(getattr(a, "child", "pre-keyed") for a in pending)
    if strategy != "pre-keyed":
        assert all(a.uniqueid is not None for a in gone)  # learnt from charon's child-updown


def test_an_install_answered_within_the_teardown_delay_is_removed_when_the_delay_is_over():
    gw, c = initiator("child-per-call"), Call("c1")
    answer_call(gw, c)
    gw.on_packet(1.3, c.bye())
    gw.yes(1.5)
    assert removals(gw) == []
    gw.run_until(1.3 + TEARDOWN - 0.001)
    assert removals(gw) == []
    gw.run_until(1.3 + TEARDOWN)
    assert [a.child for a in removals(gw)] == [C1]


def test_child_updown_before_the_initiate_returns_then_bye():
    """charon announced the SA (event first) but the initiate has not returned when the BYE comes."""
    gw, c = initiator("child-per-call"), Call("c1")
    answer_call(gw, c)
    (install,) = setups(gw)
    (up, result) = gw.outcome(install, 1.2, rtt=0.5)
    gw.pending.remove(install)
    gw.charon(1.7, up[1])
    gw.on_packet(1.8, c.bye())
    gw.run_until(10.0)
    assert removals(gw) == []
    assert gw.core.next_timer() != 1.8 + TEARDOWN  # the removal waits for the initiate's answer
    gw.charon(10.0, result[1])
    assert gw.logs("sa-initiated") == []  # the call is over: not reported as keyed
    gw.run_until(10.0)
    (rm,) = removals(gw)
    assert rm.uniqueid == up[1].child["uniqueid"]


@pytest.mark.parametrize("strategy", CHILD_STRATEGIES)
def test_failed_initiate_then_child_updown_within_confirm_wait_is_recovered(strategy):
    gw, c = initiator(strategy), Call("c1")
    answer_call(gw, c)
    (install,) = setups(gw)
    gw.answer(install, 1.2, ok=False, up=False, rtt=0.05)  # charon: "establishing CHILD_SA failed"
    assert gw.core.next_timer() == pytest.approx(1.25 + CONFIRM_WAIT)
    sa = gw.child_sa(install.child, install.local_ts, install.remote_ts)
    gw.charon(1.25 + CONFIRM_WAIT - 0.1, ChildUpDown(True, "peer-gwa", sa))
    (rec,) = gw.logs("keying-recovered")
    assert rec["child"] == C1 and rec["reason"] == "CHILD_SA establishment failed"
    (ini,) = gw.logs("sa-initiated")
    assert ini["sa"] == sa["uniqueid"]
    gw.run_until(20.0)
    assert gw.logs("keying-failed") == []


@pytest.mark.parametrize("strategy", CHILD_STRATEGIES)
def test_failed_initiate_without_child_updown_fails_after_confirm_wait(strategy):
    gw, c = initiator(strategy), Call("c1")
    answer_call(gw, c)
    (install,) = setups(gw)
    gw.answer(install, 1.2, ok=False, up=False, rtt=0.05)
    assert gw.handle_due(1.25 + CONFIRM_WAIT - 0.01) == []
    gw.handle_due(1.25 + CONFIRM_WAIT)
    (f,) = gw.logs("keying-failed")
    assert (f["child"], f["reason"], f["at"]) == (C1, "CHILD_SA establishment failed", 1.25 + CONFIRM_WAIT)
    assert gw.logs("keying-recovered") == gw.logs("sa-initiated") == []
    # the call ends: whatever charon may hold under the child's name goes (found by name: no id)
    gw.on_packet(10.0, c.bye())
    gw.run_until(10.0 + TEARDOWN)
    (rm,) = removals(gw)
    assert (rm.child, rm.uniqueid) == (C1, None)


def test_initiate_ok_but_no_child_updown_fails_after_confirm_wait_and_a_late_sa_counts_as_recovered():
    gw, c = initiator("child-per-call"), Call("c1")
    answer_call(gw, c)
    (install,) = setups(gw)
    gw.answer(install, 1.2, ok=True, up=False, rtt=0.05)
    gw.run_until(1.25 + CONFIRM_WAIT)
    (f,) = gw.logs("keying-failed")
    assert f["reason"] == f"{C1} not installed after initiate"
    sa = gw.child_sa(C1, install.local_ts, install.remote_ts)
    # charon answered late (it was hung, or busy past the wait): the call is protected by this SA,
    # so it counts as keyed, late; a charon that comes back then lists it, and nothing is keyed twice
    gw.charon(6.0, ChildUpDown(True, "peer-gwa", sa))
    assert [(e["at"], e["sa"]) for e in gw.logs("sa-initiated")] == [(6.0, sa["uniqueid"])]
    assert [e["at"] for e in gw.logs("keying-recovered")] == [6.0]
    gw.charon(6.5, CharonReconnected(frozenset({C1}), 5.0))
    assert gw.of(InstallChild) == [install] and gw.logs("sa-lost") == []
    gw.on_packet(10.0, c.bye())
    gw.run_until(10.0 + TEARDOWN)
    (rm,) = removals(gw)
    assert rm.uniqueid == sa["uniqueid"]


def test_child_updown_then_failed_initiate_is_recovered_at_once():
    gw, c = initiator("child-per-call"), Call("c1")
    answer_call(gw, c)
    (install,) = setups(gw)
    gw.answer(install, 1.2, ok=False, up=True, rtt=0.05)
    assert [e["at"] for e in gw.logs("keying-recovered")] == [1.25]
    assert len(gw.logs("sa-initiated")) == 1
    gw.run_until(20.0)
    assert gw.logs("keying-failed") == []


def test_failed_pre_keyed_install_is_reported_and_nothing_is_removed_later():
    gw, c = initiator("pre-keyed"), Call("c1")
    answer_call(gw, c)
    (install,) = setups(gw)
    gw.answer(install, 1.2, ok=False)
    (f,) = gw.logs("keying-failed")
    assert f["reason"] == "pre-keyed install: File exists"
    gw.on_packet(5.0, c.bye())
    gw.run_until(60.0)
    assert removals(gw) == []


def test_media_keeps_an_answered_call_alive():
    gw, c = initiator("child-per-call"), Call("c1")
    answer_call(gw, c)
    gw.yes(1.2)
    # RTP of the call on the WAN in clear (before the SA carries it) counts as activity...
    gw.on_packet(20.0, rtp(PHONE_B, 10100, PHONE_A, 10000))
    gw.run_until(1.21 + MEDIA_TIMEOUT + 1.0)
    assert gw.logs("unkeying") == []
    # ...and so does ESP on the call's SA (charon's SPIs, from its child-updown)
    sa = gw.up[C1]
    esp = int(sa["spi-out"], 16).to_bytes(4, "big") + bytes(8)
    gw.on_packet(45.0, ipv4(UDP, udp(4500, 4500, esp), "198.51.100.2", "198.51.100.1"))
    gw.run_until(20.0 + MEDIA_TIMEOUT + 1.0)
    assert gw.logs("unkeying") == []
    gw.run_until(45.0 + MEDIA_TIMEOUT)
    assert [(u["reason"], u["at"]) for u in gw.logs("unkeying")] == [("media-timeout", 45.0 + MEDIA_TIMEOUT)]


def test_the_long_lived_ike_sa_is_retried_each_second_and_then_given_up():
    gw = gateway("gwa", "child-per-call")
    for attempt in range(1, 6):
        (est,) = gw.pending
        assert est == EstablishIke("gwb", attempt)
        gw.answer(est, float(attempt), ok=False)
        if attempt < 5:
            assert gw.core.next_timer() == attempt + 1.0
            gw.run_until(attempt + 1.0)
    (given_up,) = gw.logs("ike-preestablish-failed")
    assert given_up["peer"] == "gwb" and gw.pending == []
    # the higher address leaves it to the lower one; ike-per-call has no long-lived IKE_SA
    assert gateway("gwb", "child-per-call").pending == gateway("gwa", "ike-per-call").pending == []


def test_shutdown_removes_live_and_draining_sas_at_once():
    gw = initiator("child-per-call")
    c1, c2 = Call("c1"), Call("c2", a_port=10020, b_port=10120)
    answer_call(gw, c1)
    answer_call(gw, c2, 2.0, 2.2)
    gw.yes(2.2)
    gw.on_packet(3.0, c1.bye())  # c1 draining (teardown delay), c2 up
    out = gw.core.shutdown(3.1)
    gone = sorted((a.child, a.reason) for a in out if isinstance(a, RemoveChild))
    assert gone == sorted([(C1, "bye-by-caller"), (child_name("c2", 0), "controller-stopped")])
    assert [a for a in out if isinstance(a, InstallResult)] == []


def test_pre_keyed_answer_and_bye_in_one_tcp_segment_still_removes_the_sas():
    """The callee answers and hangs up at once, one TCP segment carrying both (or a lost segment
    retransmitted): the core unkeys before the shell has even run the install; once the install's
    outcome is in, the SAs are removed after the teardown delay, not left in the kernel."""
    gw, c = initiator("pre-keyed"), Call("c1")
    gw.on_packet(1.0, c.invite())
    segment = c.ok()[28:] + c.bye(by_callee=True)[28:]  # the SIP messages without IP and UDP headers
    out = gw.on_packet(1.2, ipv4(TCP, tcp(5060, 5060, 1000, segment), PHONE_B, PHONE_A))
    (install,) = [a for a in out if isinstance(a, InstallPrekeyed)]
    assert [u["reason"] for u in gw.logs("unkeying")] == ["bye-by-callee"]
    gw.yes(1.2)  # the executor runs the install after the core returned
    gw.run_until(1.2 + TEARDOWN)
    (rm,) = gw.of(RemovePrekeyed)
    assert (rm.keys, rm.reason) == (install.keys, "bye-by-callee")


def test_pre_keyed_outcomes_after_a_rekey_reach_the_sa_they_are_about():
    gw, c = initiator("pre-keyed"), Call("c1")
    answer_call(gw, c)
    gw.on_packet(2.0, c.reinvite(port=10010))
    gw.on_packet(2.0, c.reinvite_ok())
    g0, g1 = setups(gw)
    assert g0.keys != g1.keys
    gw.answer(g1, 2.1)  # the new generation's install answers first
    gw.run_until(2.1)
    assert gw.of(RemovePrekeyed) == []  # the old one's removal still waits for its install
    gw.answer(g0, 2.2)
    gw.run_until(2.2)
    (rm,) = gw.of(RemovePrekeyed)
    assert (rm.keys, rm.reason) == (g0.keys, "media-changed")
    assert [e["spis"] for e in gw.logs("sa-up")] == [[f"{k.spi:08x}" for k in g.keys] for g in (g1, g0)]
    gw.yes(2.2)
    gw.on_packet(5.0, c.bye())
    gw.run_until(5.0 + TEARDOWN)
    assert [(a.keys, a.reason) for a in gw.of(RemovePrekeyed)][1:] == [(g1.keys, "bye-by-caller")]
