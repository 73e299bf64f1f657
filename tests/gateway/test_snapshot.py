"""The core's read-only snapshot (what the control socket serves): it shows each live call's dialog,
flows, role and SAs, an unanswered call's offered endpoints, and taking it changes no decision."""

from __future__ import annotations

import json

import pytest

from ipsecrtp.gateway.actions import Log

from .scenario import PHONE_A, PHONE_B, STRATEGIES, TEARDOWN, Call, Pair


def decisions(p: Pair) -> list:
    """Every action of both gateways except the log lines' free text: what the core decided."""
    return [(t, a) for gw in p.both for t, a in gw.actions if not isinstance(a, Log)] + \
        [(t, a.event, a.fields.get("call")) for gw in p.both for t, a in gw.actions if isinstance(a, Log)]


def scenario(p: Pair, look) -> None:
    c1, c2 = Call("c1"), Call("c2", a_port=10020, b_port=10120, from_tag="a2")
    p.call(c1)
    look(p)
    p.sip(1.5, c2.invite())
    p.yes(1.5)
    look(p)
    p.sip(3.0, c1.bye())
    p.yes(3.0)
    look(p)
    p.run_until(3.0 + TEARDOWN + 1)
    look(p)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_snapshot_changes_no_decision(strategy):
    taken: list[str] = []
    quiet, looked = Pair(strategy), Pair(strategy)
    scenario(quiet, lambda p: None)
    scenario(looked, lambda p: taken.extend(json.dumps(gw.core.snapshot(9.0)) for gw in p.both))
    assert decisions(quiet) == decisions(looked)
    assert len(taken) == 8  # and each one is JSON


@pytest.mark.parametrize("strategy", ["child-per-call", "speculative"])
def test_snapshot_shows_the_live_call_and_its_sa(strategy):
    p = Pair(strategy)
    p.call(Call("c1"))
    p.sip(1.5, Call("c2", a_port=10020, b_port=10120, from_tag="a2").invite())
    p.yes(1.5)
    initiator = p.b if strategy == "child-per-call" else p.a
    snap = initiator.core.snapshot(2.0)
    calls = {c["call"]: c for c in snap["calls"]}
    c1 = calls["c1"]
    assert c1["dialog"]["state"] == "confirmed" and c1["role"] == "initiator" and c1["strategy"] == strategy
    assert c1["flows"][0]["offerer"] == f"{PHONE_A}:10000" and c1["flows"][0]["answerer"] == f"{PHONE_B}:10100"
    exact = [s for s in c1["sas"] if not s["speculative"]]
    assert [s["state"] for s in exact] == ["up"] and exact[0]["sa"] and exact[0]["child"].startswith("call-")
    assert exact[0]["keying_ms"] is not None and c1["times"]["sa_up"] is not None
    # the unanswered call: no flows yet, the offered endpoints instead
    c2 = calls["c2"]
    assert c2["dialog"]["state"] == "trying" and c2["flows"] == []
    assert c2["offered"] == [f"{PHONE_A}:10020", f"{PHONE_A}:10021"]
    assert {s["call"] for s in snap["sas"]} >= {"c1"}
    # once the call ended and its SA is gone, it is no longer shown
    p.sip(3.0, Call("c1").bye())
    p.yes(3.0)
    p.run_until(3.0 + TEARDOWN + 0.5)
    p.yes(5.0)
    after = initiator.core.snapshot(6.0)
    assert not [s for s in after["sas"] if s["call"] == "c1"]


def test_draining_keys_no_new_call_and_lets_the_live_one_end():
    p = Pair("child-per-call")
    p.call(Call("c1"))
    gw = p.b  # the initiator
    [said] = gw.core.drain(1.3)
    assert isinstance(said, Log) and said.event == "draining" and said.fields["live"] == 1
    assert gw.core.drain(1.35) == []  # once
    p.sip(1.4, Call("c2", a_port=10020, b_port=10120, from_tag="a2").invite())
    p.yes(1.4)
    p.sip(1.5, *Call("c2", a_port=10020, b_port=10120, from_tag="a2").answered()[1:])
    p.yes(1.5)
    refused = [e for e in gw.logs("refused") if e["call"] == "c2"]
    assert [e["reason"] for e in refused] == ["draining"]
    assert {s["call"] for s in gw.core.snapshot(2.0)["sas"]} == {"c1"}
    p.sip(3.0, Call("c1").bye())
    p.yes(3.0)
    p.run_until(3.0 + TEARDOWN + 0.5)
    p.yes(5.0)
    assert gw.core.snapshot(6.0)["sas"] == []
