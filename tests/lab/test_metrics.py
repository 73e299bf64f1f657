"""The controllers' Prometheus exporters, scraped with a real HTTP client from inside each gateway's
namespace after real baresip calls, agree with the controllers' decision logs and with charon's
list-sas: during a call, after the calls, and line for line."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipsecrtp.netns import proc
from ipsecrtp.netns.calls import Phones, child_sas, log_events, wait_log
from ipsecrtp.netns.labdaemons import METRICS_ADDR

pytestmark = pytest.mark.lab

ROLES = ("gwa", "gwb")
Samples = dict[tuple[str, frozenset], float]


def scrape(lab, role: str) -> Samples:
    """GET the gateway's /metrics from inside its namespace (its exporter is on its own loopback)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://{METRICS_ADDR}/metrics", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            return r.read().decode()

    text = proc.in_netns(lab.ns(role), get)
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels`` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def events(lab, role: str, event: str) -> list[dict]:
    return log_events(lab, role, None, event)


def test_exporters_are_up_on_each_gateways_loopback_with_nothing_counted(lab):
    for role in ROLES:
        assert lab.status()["gateways"][role]["metrics"] == f"http://{METRICS_ADDR}/metrics"
        m = scrape(lab, role)
        assert total(m, "ipsecrtp_decisions_total", event="started") == 1
        assert total(m, "ipsecrtp_child_sas_active") == 0 and total(m, "ipsecrtp_calls_active") == 0
        assert total(m, "process_cpu_seconds_total") > 0  # the controller process itself
        assert [e["url"] for e in events(lab, role, "metrics-serving")] == [f"http://{METRICS_ADDR}/metrics"]


@pytest.fixture(scope="module")
def calls(lab):
    """Two answered calls and a cancelled one; during the first, a scrape of each gateway next to
    charon's list of its CHILD_SAs."""
    phones = Phones(lab)
    during: dict[str, tuple[Samples, list[dict]]] = {}
    try:
        ups = {role: len(events(lab, role, "sa-up")) for role in ROLES}
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(first=phones.call("caller-hangup", talk=3.0)))
        t.start()
        deadline = time.monotonic() + 20
        while any(len(events(lab, role, "sa-up")) == ups[role] for role in ROLES):
            assert time.monotonic() < deadline and t.is_alive(), "the first call never came up"
            time.sleep(0.05)
        time.sleep(0.3)  # its initiate's answer (sa-initiated) may follow charon's child-updown
        for role in ROLES:
            during[role] = (scrape(lab, role), child_sas(lab, role))
        t.join(timeout=30)
        results = [result["first"], phones.call("callee-hangup", talk=1.0), phones.call("cancel")]
    finally:
        phones.close()
    for r in results:
        for role in ROLES:
            wait_log(lab, role, r.call_id, "timeline", 30)  # each call's last line: it is over
    return results, during


def test_during_a_call_the_gauges_match_charon(lab, calls):
    _, during = calls
    for role in ROLES:
        m, children = during[role]
        assert len(children) == 1, children
        assert total(m, "ipsecrtp_child_sas_active") == len(children)
        assert total(m, "ipsecrtp_calls_active") == 1


def test_after_the_calls_the_figures_agree_with_the_logs_and_charon(lab, calls):
    results, _ = calls
    for role in ROLES:
        m = scrape(lab, role)
        assert total(m, "ipsecrtp_child_sas_active") == len(child_sas(lab, role)) == 0
        assert total(m, "ipsecrtp_calls_active") == 0
        timelines = events(lab, role, "timeline")
        assert len(timelines) == len(results) == total(m, "ipsecrtp_calls_total")
        assert total(m, "ipsecrtp_calls_total", outcome="keyed") == 2
        assert total(m, "ipsecrtp_calls_total", outcome="cancelled") == 1
        gaps = [t["metrics"]["post_answer_gap_ms"] for t in timelines if t["metrics"]["post_answer_gap_ms"] is not None]
        assert total(m, "ipsecrtp_post_answer_gap_seconds_count", strategy="child-per-call") == len(gaps) == 2
        assert total(m, "ipsecrtp_post_answer_gap_seconds_sum") == pytest.approx(sum(gaps) / 1000, abs=1e-6)
        assert total(m, "ipsecrtp_rtp_clear_packets_total") == sum(
            t["metrics"]["clear_rtp_after_answer"] for t in timelines)
        assert total(m, "ipsecrtp_ike_retransmissions_total") == sum(
            t["metrics"]["ike_retransmissions"] for t in timelines)
        assert total(m, "ipsecrtp_keying_failures_total") == len(events(lab, role, "keying-failed")) == 0
        # every decision line, by event, is counted once: the log read after the scrape, nothing
        # is written meanwhile (the calls are over)
        lines = log_events(lab, role)
        assert lines and all(total(m, "ipsecrtp_decisions_total", event=e["event"]) ==
                             sum(1 for x in lines if x["event"] == e["event"]) for e in lines)


def test_the_initiator_times_each_keyed_call_once(lab, calls):
    results, _ = calls
    # gwb answers, so it initiates (the initiator rule): one sa-initiated line per keyed call
    m = {role: scrape(lab, role) for role in ROLES}
    initiated = events(lab, "gwb", "sa-initiated")
    keyed = {r.call_id for r in results if r.answered}
    assert {e["call"] for e in initiated} == keyed
    sp = {"strategy": "child-per-call", "peer": "gwa"}
    assert total(m["gwb"], "ipsecrtp_keying_seconds_count", **sp) == len(initiated) == 2
    assert total(m["gwb"], "ipsecrtp_keying_seconds_sum", **sp) == pytest.approx(
        sum(e["keying_ms"] for e in initiated) / 1000, abs=1e-6)
    assert total(m["gwb"], "ipsecrtp_keying_seconds_bucket", le="+Inf", **sp) == 2
    # the responder asked charon for nothing, so it timed nothing
    assert events(lab, "gwa", "sa-initiated") == [] and total(m["gwa"], "ipsecrtp_keying_seconds_count") == 0
