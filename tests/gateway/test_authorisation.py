"""Hostile or stray SDP: a flow is keyed only with both ends in the two peers' media prefixes and
both ports in the RTP range (10000-10199 here). Anything else is a ``refused`` line with the reason
and no keying action, on both gateways and for every strategy."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import InstallChild, RemoveChild

from .harness import Harness
from .scenario import PHONE_A, PHONE_B, STRATEGIES, TEARDOWN, Call, Pair, keying_actions

BAD = {
    # what the SDP names -> the reason's tail
    "third-party": (("198.18.0.5", 10100), "198.18.0.5:10100 is in neither peer's media prefixes"),
    "sip-port": ((PHONE_B, 5060), f"{PHONE_B}:5060 port outside the RTP range 10000-10199"),
    "above-range": ((PHONE_B, 20000), f"{PHONE_B}:20000 port outside the RTP range 10000-10199"),
    "below-range": ((PHONE_B, 9998), f"{PHONE_B}:9998 port outside the RTP range 10000-10199"),
    # RTP on the range's last port puts RTCP one above it
    "rtcp-above-range": ((PHONE_B, 10199), f"{PHONE_B}:10200 port outside the RTP range 10000-10199"),
    "same-side": (("192.0.2.99", 10100), "does not join a local and a remote media endpoint"),
}


def refused_only(gw: Harness) -> dict:
    (r,) = gw.logs("refused")
    assert gw.logs("keying") == []
    return r


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("bad", sorted(BAD))
def test_a_hostile_answer_is_refused_and_nothing_is_keyed(strategy, bad):
    (addr, port), reason = BAD[bad]
    p, c = Pair(strategy), Call("c1")
    p.sip(1.0, c.invite())
    p.yes(1.0)
    p.sip(1.2, c.ok("b1", (addr, port)), c.ack())
    p.yes(1.2)
    p.run_until(1.2)
    for gw in p.both:
        r = refused_only(gw)
        assert reason in r["reason"] and (r["call"], r["at"]) == ("c1", 1.2)
        assert r["flows"][0]["answerer"] == f"{addr}:{port}"
    if strategy != "speculative":
        assert keying_actions(p.a) == keying_actions(p.b) == []
        return
    # speculative: what the offer keyed goes (after the teardown delay, like any unkeyed SA), the
    # answer's flows are never keyed
    (spec,) = p.a.of(InstallChild)
    assert spec.child.startswith("spec-")
    p.run_until(10.0)
    assert [(t, a.child, a.reason) for t, a in p.a.at(RemoveChild)] == \
        [(1.2 + TEARDOWN, spec.child, "answer-refused")]
    assert p.b.of(InstallChild) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("bad", ["third-party", "sip-port", "above-range"])
def test_a_hostile_offer_is_refused_and_not_even_speculated_on(strategy, bad):
    (_, port), reason = BAD[bad]
    addr = "198.18.0.5" if bad == "third-party" else PHONE_A
    p, c = Pair(strategy), Call("c1", caller=addr, a_port=port)
    p.sip(1.0, c.invite())
    p.yes(1.0)
    assert all(gw.logs("keying-speculative") == [] for gw in p.both)
    p.sip(1.2, c.ok(), c.ack())
    p.yes(1.2)
    for gw in p.both:
        r = refused_only(gw)
        assert r["flows"][0]["offerer"] == f"{addr}:{port}"
        assert reason.replace(PHONE_B, addr).replace("10100", str(port)) in r["reason"]
        assert keying_actions(gw) == []


def test_the_top_of_the_range_is_keyed_when_rtcp_still_fits():
    p, c = Pair("child-per-call"), Call("c1", b_port=10198)
    p.call(c)
    assert p.b.logs("refused") == [] and len(p.b.of(InstallChild)) == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_reinvite_moving_media_to_a_third_party_unkeys_and_keys_nothing_new(strategy):
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    before = {gw.core.cfg.name: len(keying_actions(gw)) for gw in p.both}
    p.sip(5.0, c.reinvite(addr="198.18.0.5"), c.reinvite_ok())
    p.yes(5.0)
    p.run_until(5.0)
    p.yes(5.0)
    for gw in p.both:
        assert len(keying_actions(gw)) == before[gw.core.cfg.name]
        (r,) = gw.logs("refused")
        assert "198.18.0.5:10000 is in neither peer's media prefixes" in r["reason"]
        assert [u["reason"] for u in gw.logs("unkeying") if not u["speculative"]] == ["media-changed"]
    # the SA for the flows the call had is removed at once by whoever set it up
    ini = p.b if strategy in ("ike-per-call", "child-per-call") else p.a
    last = [a for _, a in ini.actions if getattr(a, "reason", None) == "media-changed"]
    assert len(last) == 1
