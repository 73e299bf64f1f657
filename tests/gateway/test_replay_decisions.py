"""``calls --pcap F --config C``: the live core's decisions on a capture of three real baresip
calls (answered and hung up by each side, cancelled while ringing), as gwb (the answerer's
gateway, which initiates) and as gwa would have made them, with charon played by a stand-in."""

import json
import os

import pytest
from click.testing import CliRunner

from ipsecrtp.cli.main import main
from ipsecrtp.offline import decisions
from ipsecrtp.selectors import PeerConfig

from .harness import config

CAPTURE = os.path.join(os.path.dirname(__file__), "..", "data", "baresip-calls.pcap")
GWA, GWB = "198.51.100.1", "198.51.100.2"


def gateway(name: str, strategy: str = "child-per-call"):
    local, remote = (GWA, GWB) if name == "gwa" else (GWB, GWA)
    peer = PeerConfig("gwb" if name == "gwa" else "gwa", local, remote, (f"{local}/32",), (f"{remote}/32",),
                      b"k" * 32, rtp_ports=(10000, 10199), strategy=strategy)
    return config((peer,), name=name, teardown_delay=1.0)


def by_kind(recs: list[dict]) -> list[str]:
    return [r.get("event") or r["action"] for r in recs]


def test_the_answerers_gateway_keys_each_answered_call_and_removes_it_after_the_bye():
    per_call = decisions(CAPTURE, gateway("gwb"))
    answered = [c for c, recs in per_call.items() if "InstallChild" in by_kind(recs)]
    assert len(answered) == 2
    for call in answered:
        recs = per_call[call]
        (install,) = [r for r in recs if r.get("action") == "InstallChild"]
        (keying,) = [r for r in recs if r.get("event") == "keying"]
        assert keying["role"] == "initiator"
        # exactly the call's flows: RTP and RTCP of each side, this gateway's side local
        assert all(ts.startswith(f"{GWB}/32[udp/") for ts in install["local_ts"])
        assert all(ts.startswith(f"{GWA}/32[udp/") for ts in install["remote_ts"])
        (unkey,) = [r for r in recs if r.get("event") == "unkeying"]
        (remove,) = [r for r in recs if r.get("action") == "RemoveChild"]
        assert remove["child"] == install["child"]
        assert remove["time"] == pytest.approx(unkey["t"] + 1.0)  # the teardown delay, at capture time
        assert "sa-removed" in by_kind(recs)
    (cancelled,) = [c for c in per_call if c not in answered]
    assert "InstallChild" not in by_kind(per_call[cancelled])
    assert [r["reason"] for r in per_call[cancelled] if r.get("event") == "dialog-ended"] == ["cancelled"]


def test_the_offerers_gateway_waits_for_the_peer():
    per_call = decisions(CAPTURE, gateway("gwa"))
    kinds = [k for recs in per_call.values() for k in by_kind(recs)]
    assert "InstallChild" not in kinds and "RemoveChild" not in kinds
    assert [r["role"] for recs in per_call.values() for r in recs if r.get("event") == "keying"] == \
        ["responder", "responder"]


def test_speculative_keys_the_offer_of_every_call_even_the_cancelled_one():
    per_call = decisions(CAPTURE, gateway("gwa", "speculative"))
    spec = [c for c, recs in per_call.items() if "keying-speculative" in by_kind(recs)]
    assert len(spec) == 3
    for call in spec:
        installs = [r for r in per_call[call] if r.get("action") == "InstallChild"]
        removes = {r["child"] for r in per_call[call] if r.get("action") == "RemoveChild"}
        assert {i["child"] for i in installs} == removes  # everything keyed is removed again


def test_cli_shows_offered_flows_and_decisions(tmp_path):
    psk = tmp_path / "gwa.psk"
    psk.write_text("k" * 32)
    psk.chmod(0o600)
    cfg = tmp_path / "gwb.toml"
    cfg.write_text(f'[controller]\ninterfaces = ["wan0"]\nvici = "unix:///nonexistent"\nrtp_ports = "10000-10199"\n'
                   f'name = "gwb"\n[[peer]]\nname = "gwa"\nike_local = "{GWB}"\nike_remote = "{GWA}"\n'
                   f'local_media = ["{GWB}/32"]\nremote_media = ["{GWA}/32"]\npsk_file = "{psk}"\n')
    r = CliRunner().invoke(main, ["calls", "--pcap", CAPTURE, "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    calls = json.loads(r.output)["calls"]
    (cancelled,) = [c for c in calls if c["end_reason"] == "cancelled"]
    assert cancelled["flows"] == [] and len(cancelled["offered"]) == 2  # what it offered, RTP and RTCP
    for c in calls:
        for e in c["events"]:
            if e["type"] in ("MediaNegotiated", "MediaChanged"):
                assert all(":" in f["offerer"] and ":" in f["answerer"] for f in e["flows"])
    assert sum("InstallChild" in by_kind(c["decisions"]) for c in calls) == 2
    assert "k" * 32 not in r.output
    human = CliRunner().invoke(main, ["calls", "--pcap", CAPTURE, "--config", str(cfg)])
    assert human.exit_code == 0 and "decided" in human.output and "InstallChild" in human.output
