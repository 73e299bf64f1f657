"""The mapping from decision records to Prometheus metrics (no HTTP but for the one exporter test).

Records are shaped as the controller writes them (fields copied from a lab gateway's log)."""

import io
import json
import os
import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ipsecrtp.keying.strongswan import OPERATIONS
from ipsecrtp.log import DecisionLog
from ipsecrtp.metrics import (
    CALL_MEMORY,
    EVICTED_STATES,
    EVICTION_CAPS,
    FAILURE_CLASSES,
    NONE,
    OUTCOMES,
    REFUSAL_CLASSES,
    SA_LOST_REASONS,
    Exporter,
    Metrics,
    classify,
)
from ipsecrtp.sip.limits import CAPS

CALL = "1-30517@198.51.100.1"
FLOW = {"stream": 0, "kind": "rtp+rtcp", "offerer": "198.51.100.1:20000", "answerer": "198.51.100.2:20000"}


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def keyed_call(call: str = CALL, strategy: str = "child-per-call", peer: str = "gwa", sa: str = "42",
               gap_ms: float = 60.338, clear: int = 2, retransmissions: int = 0) -> list[dict]:
    """An answered call as its initiator logs it, from the keying decision to its timeline."""
    return [
        {"event": "dialog-early", "call": call, "status": 180, "t": 1.0},
        {"event": "keying", "call": call, "t": 1.0, "trigger": "200 OK (INVITE)", "role": "initiator",
         "peer": peer, "child": "call-221cc3b52629-0", "flows": [FLOW], "strategy": strategy},
        {"event": "sa-initiated", "call": call, "child": "call-221cc3b52629-0", "sa": sa, "keying_ms": 25.811,
         "after_answer_ms": 47.993, "encap": True},
        {"event": "sa-up", "call": call, "conn": "peer-" + peer, "child": "call-221cc3b52629-0", "sa": sa},
        {"event": "dialog-confirmed", "call": call, "t": 1.1},
        {"event": "unkeying", "call": call, "reason": "bye-by-caller", "t": 3.0, "role": "initiator",
         "child": "call-221cc3b52629-0", "speculative": False},
        {"event": "sa-removed", "call": call, "child": "call-221cc3b52629-0", "sa": sa, "reason": "bye-by-caller"},
        {"event": "sa-down", "call": call, "conn": "peer-" + peer, "child": "call-221cc3b52629-0", "sa": sa},
        timeline(call, strategy, sa_up=1.2, gap_ms=gap_ms, clear=clear, retransmissions=retransmissions),
    ]


def timeline(call: str, strategy: str = "", status: int | None = 200, end: str = "bye-by-caller",
             sa_up: float | None = None, gap_ms: float | None = None, clear: int = 0,
             retransmissions: int = 0) -> dict:
    return {"event": "timeline", "call": call, "gateway": "gwb", "role": "initiator" if strategy else "",
            "strategy": strategy, "final_status": status, "sa_up": sa_up, "end_reason": end,
            "metrics": {"keying_ms": 38.156, "ike_exchanges": ["CREATE_CHILD_SA"], "ike_retransmissions":
                        retransmissions, "post_answer_gap_ms": gap_ms, "clear_rtp_after_answer": clear}}


def feed(m: Metrics, records: list[dict]) -> None:
    for rec in records:
        m(rec)


def test_a_keyed_call_from_decision_to_timeline():
    m = Metrics()
    recs = keyed_call(retransmissions=1)
    feed(m, recs[:4])
    assert value(m, "ipsecrtp_calls_active") == 1
    assert value(m, "ipsecrtp_child_sas_active") == 1
    feed(m, recs[4:])
    sp = {"strategy": "child-per-call", "peer": "gwa"}
    assert value(m, "ipsecrtp_calls_active") == 0
    assert value(m, "ipsecrtp_child_sas_active") == 0
    assert value(m, "ipsecrtp_calls_total", outcome="keyed") == 1
    assert value(m, "ipsecrtp_keying_seconds_count", **sp) == 1
    assert value(m, "ipsecrtp_keying_seconds_sum", **sp) == pytest.approx(0.025811)
    assert value(m, "ipsecrtp_keying_seconds_bucket", le="0.05", **sp) == 1
    assert value(m, "ipsecrtp_keying_seconds_bucket", le="0.025", **sp) == 0
    assert value(m, "ipsecrtp_post_answer_gap_seconds_sum", **sp) == pytest.approx(0.060338)
    assert value(m, "ipsecrtp_rtp_clear_packets_total", **sp) == 2
    assert value(m, "ipsecrtp_ike_retransmissions_total", **sp) == 1
    assert value(m, "ipsecrtp_decisions_total", event="sa-initiated") == 1
    assert value(m, "ipsecrtp_metrics_errors_total") == 0


def test_the_responder_counts_the_call_and_its_child_but_no_keying_time():
    m = Metrics()
    recs = [r for r in keyed_call() if r["event"] != "sa-initiated"]
    recs[1] = dict(recs[1], role="responder", child=None)
    feed(m, recs[:3])
    assert value(m, "ipsecrtp_calls_active") == 1 and value(m, "ipsecrtp_child_sas_active") == 1
    feed(m, recs[3:])
    assert value(m, "ipsecrtp_keying_seconds_count", strategy="child-per-call", peer="gwa") == 0
    assert value(m, "ipsecrtp_post_answer_gap_seconds_count", strategy="child-per-call", peer="gwa") == 1


def test_speculative_then_fitted_sa_both_timed_under_the_strategy():
    m = Metrics()
    call = "spec@198.51.100.1"
    feed(m, [{"event": "keying-speculative", "call": call, "role": "initiator", "peer": "gwa", "child": "spec-1-0"},
             {"event": "sa-up", "call": call, "conn": "peer-gwa", "child": "spec-1-0", "sa": "7"},
             {"event": "sa-initiated", "call": call, "child": "spec-1-0", "sa": "7", "keying_ms": 5.0}])
    feed(m, keyed_call(call, strategy="speculative", sa="8", gap_ms=0.0))
    feed(m, [{"event": "sa-down", "call": call, "conn": "peer-gwa", "child": "spec-1-0", "sa": "7"}])
    sp = {"strategy": "speculative", "peer": "gwa"}
    assert value(m, "ipsecrtp_keying_seconds_count", **sp) == 2
    assert value(m, "ipsecrtp_post_answer_gap_seconds_bucket", le="0.001", **sp) == 1
    assert value(m, "ipsecrtp_child_sas_active") == 0
    assert value(m, "ipsecrtp_calls_total", outcome="keyed") == 1


def test_a_re_key_keeps_the_call_active_and_a_refused_re_invite_ends_it():
    m = Metrics()
    feed(m, keyed_call()[:4])
    m({"event": "unkeying", "call": CALL, "reason": "media-changed", "role": "initiator"})
    assert value(m, "ipsecrtp_calls_active") == 1
    m({"event": "refused", "call": CALL, "trigger": "re-INVITE", "flows": [FLOW],
       "reason": "gwa: 192.0.2.99:10000 is in neither peer's media prefixes"})
    assert value(m, "ipsecrtp_calls_active") == 0


@pytest.mark.parametrize("end, status, extra, outcome", [
    ("cancelled", 487, [], "cancelled"),
    ("rejected-486", 486, [], "rejected"),
    ("timeout", None, [], "unanswered"),
    ("bye-by-callee", 200, [{"event": "refused", "flows": [FLOW, FLOW],
                             "reason": "gwa: 198.51.100.1:5060 port outside the RTP range 10000-10199"}], "refused"),
    ("bye-by-callee", 200, [{"event": "keying", "peer": "gwa", "strategy": "child-per-call"},
                            {"event": "keying-failed", "child": "call-x-0",
                             "reason": "call-x-0 not installed after initiate"}], "keying-failed"),
    ("bye-by-callee", 200, [{"event": "no-flows", "reason": "every stream rejected (port 0) or on hold"}],
     "no-media"),
    ("bye-by-callee", 200, [{"event": "keying", "peer": "gwa", "strategy": "child-per-call"}], "unprotected"),
])
def test_calls_end_in_one_outcome_each(end, status, extra, outcome):
    m = Metrics()
    feed(m, [dict(r, call="c1") for r in extra])
    m({"event": "dialog-ended", "call": "c1", "reason": end, "keyed": False})
    m(timeline("c1", status=status, end=end))
    assert outcome in OUTCOMES and value(m, "ipsecrtp_calls_total", outcome=outcome) == 1
    assert sum(s.value for f in m.registry.collect() if f.name == "ipsecrtp_calls" for s in f.samples
               if s.name.endswith("_total")) == 1
    assert value(m, "ipsecrtp_calls_active") == 0


def test_refusals_count_flows_by_reason_class():
    m = Metrics()
    m({"event": "refused", "call": "c1", "flows": [FLOW, FLOW],
       "reason": "gwa: 192.0.2.99:10000 is in neither peer's media prefixes"})
    m({"event": "refused", "call": "c2", "flows": [FLOW],
       "reason": "192.0.2.130 is a phone's private address behind a NAT (its signalling came from 192.0.2.20) and no "
                 "ALG rewrote the SDP; gwa: 192.0.2.130:10000 is in neither peer's media prefixes"})
    assert value(m, "ipsecrtp_flows_refused_total", reason="outside-media-prefixes") == 2
    assert value(m, "ipsecrtp_flows_refused_total", reason="nat-private-address") == 1


@pytest.mark.parametrize("reason, cls", [
    ("call-ab-0 not installed after initiate", "not-installed"),
    ("initiate call-ab-0 failed: CHILD_SA 'call-ab-0' not established after 10000ms", "initiate-timeout"),
    ("charon-timeout: initiate not answered within 6 s", "charon-timeout"),
    ("charon-timeout: charon not answering for 1.2 s (load-conn timed out)", "charon-timeout"),
    ("initiate call-ab-0 failed: establishing CHILD_SA 'call-ab-0' failed", "initiate-failed"),
    ("terminate child 12 failed: no matching SAs", "terminate-failed"),
    ("load-conn refused by charon: duplicate", "charon-refused"),
    ("no charon VICI socket at /run/charon.vici: No such file or directory", "vici-unreachable"),
    ("BrokenPipeError: [Errno 32] Broken pipe", "vici-session"),
    ("pre-keyed install: File exists", "prekeyed-install"),
    ("pre-keyed removal: No such process", "prekeyed-removal"),
    ("something nobody foresaw", "other"),
])
def test_keying_failure_reason_classes(reason, cls):
    assert classify(reason, FAILURE_CLASSES) == cls
    m = Metrics()
    m({"event": "keying-failed", "call": "c", "reason": reason})
    assert value(m, "ipsecrtp_keying_failures_total", reason=cls) == 1


def test_sip_rejections_and_charon_stream_events():
    m = Metrics()
    # the bounded classes exist at 0 before anything happened (rate() and alerts see 0, not nothing)
    assert m.registry.get_sample_value("ipsecrtp_sip_messages_rejected_total", {"reason": "bad-sdp"}) == 0
    assert m.registry.get_sample_value("ipsecrtp_keying_failures_total", {"reason": "initiate-timeout"}) == 0
    m({"event": "sip-rejected", "reason": "no Call-ID header", "source": "198.51.100.1:5060"})
    m({"event": "sip-rejected", "call": "c", "reason": "bad SDP: no c= line", "source": "198.51.100.1:5060"})
    m({"event": "events-lost", "reason": "connection reset"})
    m({"event": "vici-reconnected"})
    assert value(m, "ipsecrtp_sip_messages_rejected_total", reason="malformed") == 1
    assert value(m, "ipsecrtp_sip_messages_rejected_total", reason="bad-sdp") == 1
    assert value(m, "ipsecrtp_vici_events_lost_total") == 1
    assert value(m, "ipsecrtp_vici_reconnects_total") == 1
    m({"event": "charon-timeout", "op": "initiate", "waited_s": 6.0})
    m({"event": "charon-timeout", "op": "load-conn", "waited_s": 2.0})
    m({"event": "charon-timeout", "op": "load-conn", "waited_s": 2.0})
    assert value(m, "ipsecrtp_charon_timeouts_total", operation="initiate") == 1
    assert value(m, "ipsecrtp_charon_timeouts_total", operation="load-conn") == 2
    assert value(m, "ipsecrtp_charon_timeouts_total", operation="list-sas") == 0
    # kernel-netlink's guard: the packets each report adds, not its running total
    assert value(m, "ipsecrtp_media_blocked_packets_total") == 0
    m({"event": "media-blocked", "packets": 3, "total": 3})
    m({"event": "media-blocked", "packets": 2, "total": 5})
    assert value(m, "ipsecrtp_media_blocked_packets_total") == 5


def test_labels_are_bounded_whatever_the_text():
    """Call ids, child names, addresses and charon's words never become label values."""
    m = Metrics()
    for i in range(50):
        call = f"weird-{i}@198.51.100.{i}"
        feed(m, keyed_call(call, sa=str(i)))
        m({"event": "keying-failed", "call": call, "child": f"call-{i}", "reason": f"oops {i} at 10.0.0.{i}"})
        m({"event": "refused", "call": call, "flows": [FLOW], "reason": f"free text {i}"})
        m({"event": "sip-rejected", "reason": f"garbage {i}"})
        m({"event": "charon-timeout", "op": f"op {i} at 10.0.0.{i}"})
        m({"event": "cap-hit", "cap": f"cap {i}", "source": f"198.51.100.{i}", "dropped": 3})
    allowed = {"event": None, "outcome": set(OUTCOMES), "strategy": {"child-per-call", NONE}, "peer": {"gwa", NONE},
               "reason": {c for _, c in FAILURE_CLASSES + REFUSAL_CLASSES} | {"other", "bad-sdp", "malformed"}
               | set(SA_LOST_REASONS), "cap": set(EVICTION_CAPS) | set(CAPS) | {"other"}, "state": set(EVICTED_STATES),
               "le": None, "operation": set(OPERATIONS) | {"other"}}
    for fam in m.registry.collect():
        for s in fam.samples:
            for k, v in s.labels.items():
                assert k in allowed, (fam.name, k)
                assert allowed[k] is None or v in allowed[k], (fam.name, k, v)
                assert "@" not in v and "198.51" not in v and " " not in v
    events = {s.labels["event"] for f in m.registry.collect() for s in f.samples if "event" in s.labels}
    assert events == {r["event"] for r in keyed_call()} | {"keying-failed", "refused", "sip-rejected", "charon-timeout",
                                                                      "cap-hit"}


def test_a_record_of_an_unexpected_shape_is_counted_not_raised():
    m = Metrics()
    m({"event": "sa-initiated", "call": "c"})  # no keying_ms
    m({"event": "timeline", "call": "c", "metrics": {"post_answer_gap_ms": "soon"}})
    assert value(m, "ipsecrtp_metrics_errors_total") == 2


def test_call_memory_is_bounded():
    m = Metrics()
    for i in range(CALL_MEMORY + 100):
        m({"event": "keying-failed", "call": f"c{i}", "reason": "x"})  # no timeline ever comes
    assert len(m._calls) == CALL_MEMORY


def test_names_follow_prometheus_conventions_and_the_exposition_parses():
    m = Metrics()
    feed(m, keyed_call())
    # prometheus_client also writes each counter's creation time as a <name>_created gauge
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())
                if not f.name.endswith("_created")}
    assert families and all(name.startswith("ipsecrtp_") for name in families)
    for name, f in families.items():
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), name
        if f.type == "histogram":
            assert name.endswith("_seconds"), name
        if f.type == "gauge":
            assert name.endswith("_active"), name


def test_through_the_decision_log_counts_equal_lines():
    out = io.StringIO()
    log = DecisionLog(out, node="gwb")
    m = Metrics()
    log.listeners.append(m)
    for rec in keyed_call() + keyed_call("other-call", sa="43"):
        fields = {k: v for k, v in rec.items() if k != "event"}
        log(rec["event"], **fields)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    initiated = sum(1 for x in lines if x["event"] == "sa-initiated")
    assert value(m, "ipsecrtp_keying_seconds_count", strategy="child-per-call", peer="gwa") == initiated == 2
    assert value(m, "ipsecrtp_calls_total", outcome="keyed") == 2
    for event in {x["event"] for x in lines}:
        assert value(m, "ipsecrtp_decisions_total", event=event) == sum(1 for x in lines if x["event"] == event)


def test_exporter_serves_the_registry_and_stops():
    m = Metrics()
    feed(m, keyed_call())
    ex = Exporter(("127.0.0.1", 0), m)
    ex.start()
    try:
        assert ex.address[1] != 0
        with urllib.request.urlopen(ex.url, timeout=5) as r:
            text = r.read().decode()
        families = {f.name for f in text_string_to_metric_families(text)}
        assert {"ipsecrtp_calls", "ipsecrtp_keying_seconds", "process_cpu_seconds"} <= families
    finally:
        ex.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(ex.url, timeout=2)


def controller_toml(tmp_path, metrics_line: str) -> str:
    psk = tmp_path / "psk"
    psk.write_text("0123456789abcdef0123456789abcdef\n")
    psk.chmod(0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""[controller]
interfaces = ["lo"]
vici = "unix:///nonexistent.vici"
{metrics_line}
[[peer]]
name = "gw-b"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["198.51.100.1/32"]
remote_media = ["198.51.100.2/32"]
psk_file = "{psk}"
""")
    return str(cfg)


@pytest.mark.parametrize("line, expected", [
    ("", None),
    ('metrics = "127.0.0.1:9464"', ("127.0.0.1", 9464)),
    ('metrics = "[::1]:9100"', ("::1", 9100)),
])
def test_the_metrics_key_is_off_by_default(tmp_path, line, expected):
    from ipsecrtp.config import load

    assert load(controller_toml(tmp_path, line)).metrics == expected


@pytest.mark.parametrize("line", ['metrics = "localhost:9464"', 'metrics = "127.0.0.1"', 'metrics = "1.2.3.4:0"'])
def test_a_bad_metrics_address_names_the_key(tmp_path, line):
    from ipsecrtp.config import ConfigError, load

    with pytest.raises(ConfigError, match="controller.metrics"):
        load(controller_toml(tmp_path, line))


@pytest.mark.skipif(os.geteuid() != 0, reason="the controller's capture (AF_PACKET) needs root")
def test_a_controller_serves_its_decisions_and_a_busy_address_stops_its_start():
    from ipsecrtp.config import ControllerConfig
    from ipsecrtp.controller import Controller, ControllerError

    def controller(port: int) -> Controller:
        # a dry run on lo: the real start-up path without charon
        cfg = ControllerConfig(("lo",), frozenset({5060}), "unix:///nonexistent.vici", (), 30.0, "auto",
                               dry_run=True, metrics=("127.0.0.1", port))
        return Controller(cfg, DecisionLog(io.StringIO()))

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ctl = controller(busy.getsockname()[1])
    try:
        with pytest.raises(ControllerError, match="controller.metrics http://127.0.0.1:.*in use"):
            ctl.start()
    finally:
        ctl.shutdown()
        busy.close()
    ctl = controller(0)
    try:
        ctl.start()
        assert ctl.exporter is not None
        with urllib.request.urlopen(ctl.exporter.url, timeout=5) as r:
            samples = {(s.name, s.labels.get("event")): s.value
                       for f in text_string_to_metric_families(r.read().decode()) for s in f.samples}
        assert samples[("ipsecrtp_decisions_total", "started")] == 1
        assert samples[("ipsecrtp_decisions_total", "metrics-serving")] == 1
    finally:
        ctl.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(ctl.exporter.url, timeout=2)


def test_cap_hits_count_by_cap_and_throttled_messages_by_what_was_dropped():
    m = Metrics()
    m({"event": "cap-hit", "cap": "vias", "limit": 70})
    m({"event": "cap-hit", "cap": "sip-per-source-per-s", "limit": 500, "source": "198.51.100.66", "dropped": 480})
    m({"event": "cap-hit", "cap": "sip-per-source-per-s", "limit": 500, "source": "198.51.100.66", "dropped": 20})
    assert value(m, "ipsecrtp_cap_hits_total", cap="vias") == 1
    assert value(m, "ipsecrtp_cap_hits_total", cap="sip-per-source-per-s") == 500
    assert value(m, "ipsecrtp_cap_hits_total", cap="headers") == 0  # every cap's series exists from the start


def test_clear_media_after_protection_is_counted_apart_from_the_post_answer_gap():
    m = Metrics()
    recs = keyed_call(clear=2)
    recs[-1]["metrics"]["clear_rtp_after_protection"] = 40  # an SA lost mid-call, opportunistic
    feed(m, recs)
    sp = {"strategy": "child-per-call", "peer": "gwa"}
    assert value(m, "ipsecrtp_rtp_clear_packets_total", **sp) == 2
    assert value(m, "ipsecrtp_rtp_clear_after_protection_packets_total", **sp) == 40
