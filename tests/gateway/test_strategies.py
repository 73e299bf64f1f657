"""Each keying strategy on the calls a gateway sees: answered, cancelled, rejected, forked and
timed out, on both gateways (phone A behind gwa calls phone B behind gwb unless said otherwise).
The assertions are on the actions the cores return, with the times they returned them."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import InstallChild, InstallPrekeyed, RemoveChild, RemovePrekeyed
from ipsecrtp.selectors import child_name

from .harness import Harness
from .scenario import (
    MEDIA_TIMEOUT,
    PHONE_A,
    PHONE_B,
    PHONE_B2,
    STRATEGIES,
    TEARDOWN,
    Call,
    Pair,
    keying_actions,
)

A_TS = ("192.0.2.10/32[udp/10000]", "192.0.2.10/32[udp/10001]")
B_TS = ("203.0.113.20/32[udp/10100]", "203.0.113.20/32[udp/10101]")
B_RANGE = ("203.0.113.0/24[udp/10000-10199]",)
C1 = child_name("c1", 0)
SPEC = "spec-" + C1[5:]
CHILD_STRATEGIES = ("ike-per-call", "child-per-call", "speculative")


def removals(gw: Harness) -> list[tuple[float, RemoveChild | RemovePrekeyed]]:
    return gw.at(RemoveChild) + gw.at(RemovePrekeyed)


def initiator(p: Pair) -> tuple[Harness, Harness]:
    """(initiator, responder) of a call from A to B: the answerer's gateway, or for speculative the
    offerer's (it keyed from the offer, so it fits the SA to the answer too)."""
    return (p.a, p.b) if p.strategy == "speculative" else (p.b, p.a)


@pytest.mark.parametrize("strategy", CHILD_STRATEGIES)
def test_answered_call_keyed_by_the_initiator_and_removed_after_the_teardown_delay(strategy):
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    ini, resp = initiator(p)
    exact = [a for t, a in ini.at(InstallChild) if a.child == C1]
    local, remote = (A_TS, B_TS) if ini is p.a else (B_TS, A_TS)
    assert exact == [InstallChild("c1", C1, "gwb" if ini is p.a else "gwa", local, remote,
                                  own_conn=strategy == "ike-per-call")]
    assert [t for t, a in ini.at(InstallChild) if a.child == C1] == [1.2]  # at the answer
    (k,) = ini.logs("keying")
    assert (k["role"], k["child"], k["strategy"]) == ("initiator", C1, strategy)
    (up,) = [e for e in ini.logs("sa-initiated") if e["child"] == C1]
    assert up["after_answer_ms"] == 0.0 and up["local_ts"] == list(local)
    # the responder asks charon for nothing: the peer's CREATE_CHILD_SA shows up there
    assert resp.of(InstallChild) == [] and resp.of(RemoveChild) == []
    assert [(k["role"], k["child"]) for k in resp.logs("keying")] == [("responder", None)]
    assert "c1" in [e["call"] for e in resp.logs("sa-up")]

    p.sip(5.0, c.bye())
    p.yes(5.0)
    p.run_until(60.0)
    assert [(t, a.child, a.reason) for t, a in ini.at(RemoveChild) if a.child == C1] == \
        [(5.0 + TEARDOWN, C1, "bye-by-caller")]
    assert resp.of(RemoveChild) == []
    assert [e["child"] for e in ini.logs("sa-removed")][-1] == C1
    for gw in p.both:  # each gateway reports the call once it is over
        (tl,) = gw.logs("timeline")
        assert tl["call"] == "c1"


def test_speculative_keys_the_offerer_from_the_offer_and_drops_that_sa_once_the_exact_one_is_up():
    p, c = Pair("speculative"), Call("c1")
    p.call(c)
    (spec, t_spec), (exact, t_exact) = [(a, t) for t, a in p.a.at(InstallChild)]
    assert (spec, t_spec) == (InstallChild("c1", SPEC, "gwb", A_TS, B_RANGE), 1.0)  # at the INVITE
    assert (exact.child, exact.local_ts, exact.remote_ts, t_exact) == (C1, A_TS, B_TS, 1.2)
    (ks,) = p.a.logs("keying-speculative")
    assert (ks["role"], ks["child"]) == ("initiator", SPEC)
    # fitted to the answer: the speculative SA goes as soon as the exact one is up, no teardown delay
    assert [(t, a.child, a.reason) for t, a in p.a.at(RemoveChild)] == [(1.2, SPEC, "fitted-to-answer")]
    (rs,) = p.b.logs("keying-speculative")
    assert rs["role"] == "responder" and rs["remote_ts"] == list(A_TS)


def test_pre_keyed_both_gateways_install_the_same_sas_and_remove_them_after_the_teardown_delay():
    p, c = Pair("pre-keyed"), Call("c1")
    p.call(c)
    (ia,), (ib,) = p.a.of(InstallPrekeyed), p.b.of(InstallPrekeyed)
    assert [k.spi for k in ia.keys] == [k.spi for k in ib.keys] and ia.keys == ib.keys
    assert (ia.local_gw, ib.local_gw) == ("198.51.100.1", "198.51.100.2")
    # each gateway's pairs are (its phone, the far phone), RTP and RTCP
    assert [(str(lo), str(re)) for lo, re in ia.pairs] == \
        [(f"{PHONE_A}:10000", f"{PHONE_B}:10100"), (f"{PHONE_A}:10001", f"{PHONE_B}:10101")]
    assert [(str(lo), str(re)) for lo, re in ib.pairs] == \
        [(f"{PHONE_B}:10100", f"{PHONE_A}:10000"), (f"{PHONE_B}:10101", f"{PHONE_A}:10001")]
    for gw in p.both:
        assert [t for t, _ in gw.at(InstallPrekeyed)] == [1.2]
        assert [e["role"] for e in gw.logs("keying")] == ["both"]
        assert gw.of(InstallChild) == []
    p.sip(5.0, c.bye(by_callee=True))
    p.yes(5.0)
    p.run_until(5.0 + TEARDOWN - 0.001)
    assert removals(p.a) == removals(p.b) == []
    p.run_until(60.0)
    for gw, inst in ((p.a, ia), (p.b, ib)):
        ((t, rm),) = gw.at(RemovePrekeyed)
        assert (t, rm.keys, rm.pairs, rm.reason) == (5.0 + TEARDOWN, inst.keys, inst.pairs, "bye-by-callee")
        assert [e["child"] for e in gw.logs("sa-removed")] == ["pre-keyed"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("how,reason", [("cancel", "cancelled"), ("busy", "rejected-486")])
def test_cancelled_or_rejected_call_is_never_keyed(strategy, how, reason):
    p, c = Pair(strategy), Call("c1")
    p.sip(1.0, c.invite())
    p.yes(1.0)
    p.sip(1.1, c.provisional())
    p.sip(2.0, *([c.cancel(), c.final(487)] if how == "cancel" else [c.final(486)]))
    p.yes(2.0)
    p.sip(2.01, c.ack())
    p.run_until(120.0)
    if strategy != "speculative":
        for gw in p.both:
            assert keying_actions(gw) == [] and removals(gw) == []
            (e,) = gw.logs("dialog-ended")
            assert (e["reason"], e["keyed"]) == (reason, False)
        return
    # speculative: the offerer's SA was keyed from the offer, and goes after the teardown delay
    assert [a.child for a in p.a.of(InstallChild)] == [SPEC]
    assert [(t, a.child, a.reason) for t, a in p.a.at(RemoveChild)] == [(2.0 + TEARDOWN, SPEC, reason)]
    assert p.b.of(InstallChild) == p.b.of(RemoveChild) == []
    assert [(u["reason"], u["speculative"]) for u in p.b.logs("unkeying")] == [(reason, True)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_forked_call_keys_the_fork_that_answered_and_never_the_extra_dialog(strategy):
    p, c = Pair(strategy), Call("c1")
    p.sip(1.0, c.invite())
    p.yes(1.0)
    p.sip(1.1, c.provisional(180, "b1"), c.provisional(180, "b2"))
    p.sip(1.5, c.ok("b2", (PHONE_B2, 10120)), c.ack("b2"))
    p.yes(1.5)
    before = {gw.core.cfg.name: (keying_actions(gw), removals(gw)) for gw in p.both}
    # the other fork answers too: the caller ACKs and BYEs it (RFC 3261 13.2.2.4); nothing is keyed
    p.sip(1.6, c.ok("b1"), c.ack("b1"), c.bye("b1"))
    p.yes(1.6)
    p.run_until(4.0)
    for gw in p.both:
        assert (keying_actions(gw), removals(gw)) == before[gw.core.cfg.name]
        assert gw.logs("unkeying") == []
    ini, _ = initiator(p) if strategy != "pre-keyed" else (p.a, p.b)
    (k,) = ini.logs("keying")
    assert [f["answerer"] for f in k["flows"]] == [f"{PHONE_B2}:10120", f"{PHONE_B2}:10121"]
    p.sip(5.0, c.bye("b2"))
    p.yes(5.0)
    p.run_until(60.0)
    gone = [a for _, a in removals(ini) if getattr(a, "reason", "") == "bye-by-caller"]
    assert len(gone) == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_forks_with_early_media_rekey_to_each_and_end_on_the_answering_one(strategy):
    p, c = Pair(strategy), Call("c1")
    p.sip(1.0, c.invite())
    p.yes(1.0)
    p.sip(1.1, c.provisional(183, "b1", (PHONE_B, 10100)))
    p.yes(1.1)
    p.run_until(1.1)
    p.sip(1.3, c.provisional(183, "b2", (PHONE_B2, 10120)))
    p.yes(1.3)
    p.run_until(1.3)
    p.sip(1.5, c.ok("b1"), c.ack("b1"))
    p.yes(1.5)
    p.run_until(1.5)
    ini = initiator(p)[0] if strategy != "pre-keyed" else p.a
    answerers = [k["flows"][0]["answerer"] for k in ini.logs("keying")]
    assert answerers == [f"{PHONE_B}:10100", f"{PHONE_B2}:10120", f"{PHONE_B}:10100"]
    if strategy == "pre-keyed":
        spis = [a.keys[0].spi for a in ini.of(InstallPrekeyed)]
        assert len(set(spis)) == 3  # a generation each: never the same keys twice
        assert [t for t, _ in ini.at(RemovePrekeyed)] == [1.3, 1.5]  # each old one at once
    else:
        exact = [a.child for a in ini.of(InstallChild) if a.child.startswith("call-")]
        assert exact == [child_name("c1", g) for g in range(3)]
        changed = [(t, a.child) for t, a in ini.at(RemoveChild) if a.reason == "media-changed"]
        assert changed == [(1.3, exact[0]), (1.5, exact[1])]
    p.sip(5.0, c.bye())
    p.yes(5.0)
    p.run_until(60.0)
    assert [t for t, a in removals(ini) if a.reason == "bye-by-caller"] == [5.0 + TEARDOWN]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unanswered_invite_times_out(strategy):
    p, c = Pair(strategy), Call("c1")
    p.sip(1.0, c.invite())
    p.yes(1.0)
    p.sip(1.1, c.provisional())
    timeout = 1.1 + 180.0  # Timer C from the last message of the transaction
    for gw in p.both:
        assert gw.core.next_timer() == pytest.approx(timeout)
        assert gw.handle_due(timeout - 0.01) == []
    p.run_until(timeout + 60.0)
    for gw in p.both:
        if strategy == "speculative":
            assert [u["reason"] for u in gw.logs("unkeying")] == ["timeout"]
        else:
            (e,) = gw.logs("dialog-ended")
            assert (e["reason"], e["at"], e["keyed"]) == ("timeout", pytest.approx(timeout), False)
    if strategy == "speculative":
        assert [(t, a.child) for t, a in p.a.at(RemoveChild)] == [(pytest.approx(timeout + TEARDOWN), SPEC)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_answered_call_without_media_times_out_and_is_unkeyed(strategy):
    p, c = Pair(strategy), Call("c1")
    p.call(c)  # the ACK at 1.21 is the dialog's last activity
    due = 1.21 + MEDIA_TIMEOUT
    p.run_until(due - 0.01)
    assert all(gw.logs("unkeying") == [] for gw in p.both)
    p.run_until(due + 60.0)
    for gw in p.both:
        assert [u["reason"] for u in gw.logs("unkeying") if not u["speculative"]] == ["media-timeout"]
    ini = initiator(p)[0] if strategy != "pre-keyed" else p.a
    assert [(t, a.reason) for t, a in removals(ini) if a.reason != "fitted-to-answer"] == \
        [(pytest.approx(due + TEARDOWN), "media-timeout")]


@pytest.mark.parametrize("strategy,initiates", [("ike-per-call", "a"), ("child-per-call", "a"),
                                                ("speculative", "b")])
def test_initiator_rule_when_b_calls_a(strategy, initiates):
    """The gateway whose prefixes hold the answerer's media initiates; speculative: the offerer's."""
    p = Pair(strategy)
    c = Call("c1", caller=PHONE_B, callee=PHONE_A, a_port=10100, b_port=10000)
    p.call(c)
    ini, resp = (p.a, p.b) if initiates == "a" else (p.b, p.a)
    exact = [a for a in ini.of(InstallChild) if a.child == C1]
    assert len(exact) == 1 and resp.of(InstallChild) == []
    local = A_TS if ini is p.a else B_TS
    assert exact[0].local_ts == local
    assert [k["role"] for k in ini.logs("keying")] == ["initiator"]
    assert [k["role"] for k in resp.logs("keying")] == ["responder"]


def test_initiator_rule_follows_the_media_address_not_the_signalling():
    """Signalling through a proxy outside both peers' prefixes: the answer's SDP still decides, and
    gwb, whose prefixes hold the answerer's media address, initiates."""
    p, c = Pair("child-per-call"), Call("c1", proxy="198.18.0.1")
    p.call(c)
    assert [a.child for a in p.b.of(InstallChild)] == [C1] and p.a.of(InstallChild) == []
    assert [k["role"] for k in p.b.logs("keying")] == ["initiator"]
