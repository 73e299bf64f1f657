"""``ipsecrtp bench hostile`` on a few messages per class: every class runs, its figures are there and
its caps are hit (the figures themselves are the bench's to report, not a test's to assert)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ipsecrtp.cli.main import main
from ipsecrtp.hostile import format_text, run, run_class, within_goal
from ipsecrtp.hostile_inputs import CLASSES

EXPECTED_CAPS = {"ports-65000": "ports-per-stream", "m-lines-1000": "media-lines", "sdp-lines-2000": "sdp-lines",
                 "vias-500": "vias", "huge-headers": "message-bytes", "forks": "forks",
                 "reinvites": "reinvites-per-second", "tcp-connections": "message-bytes"}


def test_each_class_goes_through_a_core_and_hits_its_cap():
    for name in CLASSES:
        if name in ("invite-flood", "fuzz-mutants"):
            continue  # below: the flood needs its 20000, the fuzz corpus reads the captures
        r = run_class(name, 60)
        assert r["hostile"]["n"] >= 60 and r["legit"]["n"] >= 6, name
        assert r["legit_keyed"] == r["legit_calls"], name  # legitimate calls keyed meanwhile
        if name in EXPECTED_CAPS:
            assert EXPECTED_CAPS[name] in r["cap_hits"], (name, r["cap_hits"])
        assert r["held"]["dialogs"] < 100


def test_run_in_processes_of_their_own_and_the_report(tmp_path):
    report = run(["normal", "ports-65000"], messages=40)
    assert [r["class"] for r in report["classes"]] == ["normal", "ports-65000"]
    assert report["machine"]["host"] and report["date"] and report["limits"]["max_ports_per_stream"] == 8
    assert all(r["within_goal"] == within_goal(r) for r in report["classes"])
    text = format_text(report)
    assert "ports-per-stream 40" in text and report["machine"]["cpu"] in text


def test_cli_writes_the_results_file(tmp_path):
    out = tmp_path / "hostile.txt"
    r = CliRunner().invoke(main, ["bench", "hostile", "--class", "normal", "--messages", "30", "--json",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["classes"][0]["class"] == "normal"
    assert "ipsecrtp bench hostile" in out.read_text()
    r = CliRunner().invoke(main, ["bench", "hostile", "--class", "nonesuch"])
    assert r.exit_code != 0 and "nonesuch" in r.output
