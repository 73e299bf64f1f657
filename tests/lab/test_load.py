"""``bench load``'s code path on a tiny load: sipp calls through a lab of their own, the raw charon
figure, the report. Stable properties only (every call keyed, nothing left behind, the report's
fields present and consistent), never a time: the figures are the benchmark's business."""

import os
import secrets
import subprocess

import pytest

from ipsecrtp.netns import load
from ipsecrtp.netns.loadreport import PHASES, format_text

pytestmark = pytest.mark.lab

CALLS = 10


@pytest.fixture(scope="module")
def report():
    name = "t" + secrets.token_hex(4)
    try:
        yield load.run(rate=5, calls=CALLS, hold=2, rtp_ports=(20000, 20099), raw_seconds=1.0, name=name,
                       settle_timeout=60)
    finally:
        # run() removes its lab whatever happens; check that it did, by name
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"irtp-{name}-")]
        assert left == [], f"namespaces left behind: {left}"
        assert not os.path.exists(load.Lab(name).dir)


def test_every_call_keyed(report):
    c = report["calls"]
    assert c["offered"] == CALLS
    assert c["keyed"] + c["not_keyed"] == c["offered"]
    assert c["seen"] == c["keyed"] == c["sa_up_both"] == CALLS
    assert c["keying_failed"] == 0
    assert c["sipp_successful"] == CALLS and c["sipp_failed"] == 0


def test_nothing_left_after(report):
    assert report["settled"]
    for role, leaks in report["leaks"].items():
        assert "charon_error" not in leaks, role
        assert all(v == 0 for v in leaks.values()), (role, leaks)
        assert report["after"][role]["child_sas"] == 0


def test_report_consistent(report):
    tenths = report["tenths"]
    assert [t["tenth"] for t in tenths] == list(range(1, 11))
    assert sum(t["calls"] for t in tenths) == report["calls"]["seen"]
    assert sum(t["keyed"] for t in tenths) == report["calls"]["keyed"]
    for t in tenths:
        for key in ("after_answer_ms", "keying_ms"):
            p = t[key]
            assert p["p50"] <= p["p90"] <= p["p99"]
    w = report["wire"]
    assert sum(w["clear"][k] for k in PHASES) + w["clear_unattributed"] == w["rtp_clear"]
    assert w["esp"] > 0 and w["sip"] >= 6 * CALLS  # INVITE 180 200 ACK BYE 200 at least, per call
    m = report["media"]
    assert m["streams"] == 2 * CALLS and m["sent"] > 0 and m["received"] > 0
    raw = report["raw_charon"]
    assert raw["created"] > 0 and raw["create_per_s"] >= raw["cycle_per_s"] > 0
    for role in ("gwa", "gwb"):
        for kind in ("controller", "charon"):
            r = report["resources"][role][kind]
            assert r["cpu_s"] >= 0 and r["peak_rss_mb"] > 0
    text = format_text(report)
    assert "raw charon" in text and "tenth" in text


CHURN = 100


@pytest.fixture(scope="module")
def churn():
    """Short calls, many at once: set-ups still queued when their call ends, SAs that come up after
    it, removals racing set-ups on one IKE_SA; the paths where something could be left behind."""
    name = "c" + secrets.token_hex(4)
    try:
        yield load.run(rate=25, calls=CHURN, hold=0.5, rtp_ports=(20000, 20499), ptime=200, raw_seconds=0.5,
                       name=name, settle_timeout=60)
    finally:
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"irtp-{name}-")]
        assert left == [], f"namespaces left behind: {left}"


def test_no_leak_after_a_churn(churn):
    c = churn["calls"]
    assert c["sipp_successful"] == CHURN and c["seen"] == CHURN  # every call went through the controllers
    assert c["keyed"] > 0  # the run keyed calls (a broken charon would leave nothing to leak, and prove nothing)
    assert churn["settled"]
    for role, leaks in churn["leaks"].items():
        assert "charon_error" not in leaks, role
        assert all(v == 0 for v in leaks.values()), (role, leaks)
        assert churn["after"][role]["child_sas"] == 0


def test_range_too_small_refused():
    with pytest.raises(load.LoadError, match="fewer than"):
        load.run(rate=5, calls=100, hold=1, rtp_ports=(20000, 20099))
