"""The fault metrics (issue 15): SAs lost and their recovery time, dialogs evicted under a flood.
The records are the ones a real gateway core writes (no hand-written lines): each metric must equal
what the decision log says."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import ChildUpDown
from ipsecrtp.hostile_inputs import ATTACKER, gateway_config, invite, legit_call
from ipsecrtp.metrics import Metrics
from ipsecrtp.selectors import child_name
from ipsecrtp.sip.limits import Limits

from .gateway.harness import Harness
from .gateway.scenario import Call, Pair


def metrics_of(h: Harness) -> Metrics:
    m = Metrics()
    for rec in h.logs():
        m(rec)
    return m


def value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_a_lost_sa_is_counted_and_its_recovery_timed():
    p, c = Pair("child-per-call"), Call("c1")
    p.yes(0.0)
    p.call(c)
    gw = p.b
    gw.charon(5.0, ChildUpDown(False, "peer-gwa", gw.up.pop(child_name("c1", 0))))
    p.yes(5.75)
    m = metrics_of(gw)
    assert value(m, "ipsecrtp_sas_lost_total", reason="child-down") == 1
    assert value(m, "ipsecrtp_sas_lost_total", reason="charon-restarted") == 0
    assert value(m, "ipsecrtp_sa_recovery_seconds_count", reason="child-down") == 1
    assert value(m, "ipsecrtp_sa_recovery_seconds_sum", reason="child-down") == pytest.approx(0.75)
    assert value(m, "ipsecrtp_sa_recovery_seconds_bucket", reason="child-down", le="0.5") == 0
    assert value(m, "ipsecrtp_sa_recovery_seconds_bucket", reason="child-down", le="1.0") == 1


def test_evictions_under_a_flood_are_counted_by_cap_and_state():
    h = Harness(gateway_config("child-per-call", Limits(max_dialogs=200, max_dialogs_per_source=50)),
                backend="none (dry run)")
    legit = [msg for i in range(3) for msg in legit_call(i)]
    for i in range(120):
        h.on_packet(1.0 + i * 0.01, invite(f"flood-{i}", src=ATTACKER))
    for msg in legit:
        h.on_packet(3.0, msg)
    m = metrics_of(h)
    evicted = h.logs("dialog-evicted")
    assert len(evicted) == 70
    assert value(m, "ipsecrtp_dialogs_evicted_total", cap="dialogs-per-source", state="trying") == 70
    assert value(m, "ipsecrtp_dialogs_evicted_total", cap="dialogs", state="trying") == 0


def test_an_unknown_reason_or_cap_becomes_other_never_a_new_series():
    m = Metrics()
    m({"event": "sa-lost", "call": "x", "reason": "something new"})
    m({"event": "dialog-evicted", "call": "x", "cap": "made-up", "state": "odd"})
    assert value(m, "ipsecrtp_sas_lost_total", reason="other") == 1
    assert value(m, "ipsecrtp_dialogs_evicted_total", cap="other", state="other") == 1
