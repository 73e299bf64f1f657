"""The gateway core under hostile input (issue 19): a port count of 65000 costs what a normal offer
costs and is refused with one clear reason; every cap hit is a ``cap-hit`` line naming its cap;
legitimate calls are keyed while a flood is evicted; the caps are [controller] keys."""

from __future__ import annotations

import os
import statistics
import time

import pytest

from ipsecrtp.config import ConfigError, load
from ipsecrtp.gateway.actions import InstallChild
from ipsecrtp.hostile_inputs import ATTACKER, PHONE_B, gateway_config, invite, legit_call, response, sdp, tcp
from ipsecrtp.sip.limits import CAPS, Limits

from .harness import Harness


def gateway(strategy: str = "child-per-call", **limits) -> Harness:
    return Harness(gateway_config(strategy, Limits(**limits)), backend="none (dry run)")


def offer_answer(h: Harness, cid: str, count: int, t: float) -> float:
    """CPU time the core spends on an INVITE and its 200, both with this port count."""
    offer, answer = invite(cid, sdp("192.0.2.10", 10100, count=count)), \
        response(cid, 200, body=sdp(PHONE_B, 12100, count=count))
    t0 = time.process_time()
    h.on_packet(t, offer)
    h.on_packet(t + 0.1, answer)
    return time.process_time() - t0


@pytest.mark.parametrize("strategy", ["child-per-call", "speculative"])
def test_a_port_count_of_65000_costs_what_a_normal_offer_costs_and_is_refused(strategy):
    h = gateway(strategy)
    for i in range(5):  # warm: first uses of each path are start-up, not per call
        offer_answer(h, f"warm-{i}", 1, 1.0 + i)
    normal = [offer_answer(h, f"normal-{i}", 1, 10.0 + i) for i in range(30)]
    hostile = [offer_answer(h, f"hostile-{i}", 65000, 50.0 + i) for i in range(30)]
    # the same order of work; before the port count was capped it was ~1000 times a normal offer's
    assert statistics.median(hostile) < 3 * statistics.median(normal)
    refused = [r for r in h.logs("refused") if r["call"].startswith("hostile-")]
    assert len(refused) == 30
    assert all("port count of 65000, more than max_ports_per_stream 8" in r["reason"] for r in refused)
    caps = [c for c in h.logs("cap-hit") if c["call"].startswith("hostile-")]
    assert {c["cap"] for c in caps} == {"ports-per-stream"} and all(c["limit"] == 8 for c in caps)
    assert not [a for a in h.of(InstallChild) if a.call_id.startswith("hostile-")]
    assert not [k for k in h.logs("keying") + h.logs("keying-speculative") if k["call"].startswith("hostile-")]


def test_a_flood_from_one_source_is_evicted_while_legitimate_calls_are_keyed():
    h = gateway(max_dialogs=200, max_dialogs_per_source=50)
    legit = [m for i in range(10) for m in legit_call(i)]
    t = 1.0
    for i in range(600):
        h.on_packet(t, invite(f"flood-{i}", src=ATTACKER))
        if i % 10 == 0 and legit:
            h.on_packet(t, legit.pop(0))
        t += 0.01
    assert len(h.core.tracker.dialogs) <= 50 + 10
    assert {c["cap"] for c in h.logs("cap-hit")} == {"dialogs-per-source"}
    evicted = h.logs("dialog-evicted")
    assert len(evicted) == 550 and all(e["call"].startswith("flood-") for e in evicted)
    assert evicted[0]["call"] == "flood-0" and evicted[0]["source"] == ATTACKER
    assert sorted(k["call"] for k in h.logs("keying")) == sorted(f"legit-{i}" for i in range(10))
    assert len(h.core.timelines.calls) <= 50 + 10  # evicted calls' timelines were closed too


def test_tcp_reassembly_caps_are_logged_with_their_names():
    h = gateway(max_tcp_connections=20, max_tcp_buffered_bytes=100_000)
    for i in range(30):  # connections beyond the count cap
        h.on_packet(1.0 + i * 0.01, tcp(f"203.0.113.{100 + i}", "192.0.2.10", 2000 + i, 1, b"\r\n"))
    for i in range(10):  # segments far ahead of their stream, held for the gap: beyond the bytes cap
        h.on_packet(2.0 + i * 0.01, tcp(f"203.0.113.{100 + i}", "192.0.2.10", 3000 + i, 1, b"\r\n"))
        h.on_packet(2.0 + i * 0.01, tcp(f"203.0.113.{100 + i}", "192.0.2.10", 3000 + i, 5000, b"y" * 20000))
    ex = h.core.extractor
    assert ex.connections <= 20 and ex.buffered <= 100_000
    assert {c["cap"] for c in h.logs("cap-hit")} == {"tcp-connections", "tcp-buffered-bytes"}


def test_every_cap_hit_line_names_a_known_cap():
    h = gateway(max_dialogs=5)
    for i in range(10):
        h.on_packet(1.0 + i, invite(f"c{i}", sdp("192.0.2.10", 10000, streams=20)))
        h.on_packet(1.0 + i, invite(f"d{i}", src=ATTACKER))
    lines = h.logs("cap-hit")
    assert lines and all(c["cap"] in CAPS and isinstance(c["limit"], int) for c in lines)


def write(tmp_path, extra: str) -> str:
    psk = tmp_path / "psk"
    psk.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(psk, 0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""[controller]
interfaces = ["lo"]
vici = "unix:///x"
{extra}
[[peer]]
name = "b"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["198.51.100.1/32"]
remote_media = ["198.51.100.2/32"]
psk_file = "{psk}"
""")
    return str(cfg)


def test_caps_are_controller_keys_with_safe_defaults(tmp_path):
    assert load(write(tmp_path, "")).limits == Limits()
    cfg = load(write(tmp_path, "max_ports_per_stream = 4\nmax_dialogs = 500"))
    assert cfg.limits.max_ports_per_stream == 4 and cfg.limits.max_dialogs == 500
    assert cfg.limits.max_vias == Limits().max_vias
    for bad in ("max_dialogs = 0", 'max_vias = "70"', "max_forks = true"):
        with pytest.raises(ConfigError) as err:
            load(write(tmp_path, bad))
        assert bad.split()[0] in str(err.value)
