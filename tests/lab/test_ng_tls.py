"""SIP over TLS between two real Kamailios, each driving its gateway's controller over rtpengine's ng
protocol (issue 20, `lab up --signalling tls`). A capture of the WAN holds no SIP in clear, only TLS
on 5061, and the calls are keyed all the same, from what the proxies told the controllers."""

from __future__ import annotations

import os
import secrets

import pytest

from ipsecrtp.netns import proxylab
from ipsecrtp.netns.calls import Capture, Phones, child_sas, log_events, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike
from ipsecrtp.offline import ip_packets
from ipsecrtp.packet import TCP, UDP, decode_ip

pytestmark = pytest.mark.lab
SCENARIOS = ("caller-hangup", "callee-hangup", "cancel")


@pytest.fixture(scope="module")
def run():
    lab = Lab("tls" + secrets.token_hex(4))
    try:
        proxylab.up_tls(lab)
        wait_ike(lab)
        cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        try:
            results = {s: phones.call(s, talk=1.5) for s in SCENARIOS}
        finally:
            phones.close()
            cap.stop()
        yield {"lab": lab, "calls": results, "pcap": cap.path, "children": {r: child_sas(lab, r) for r in
                                                                           ("gwa", "gwb")},
               "logs": {r: log_events(lab, r) for r in ("gwa", "gwb")}}
    finally:
        if os.environ.get("IPSECRTP_KEEP_LOGS"):  # a copy of the lab's logs, to read after a failure
            import shutil

            shutil.copytree(lab.dir, os.environ["IPSECRTP_KEEP_LOGS"], dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.vici", "*.sock", "*.key"))
        lab.down()
        leftovers = [n for n in os.popen("ip netns list").read().split() if n.startswith(f"irtp-{lab.name}-")]
        assert leftovers == [], f"namespaces left behind: {leftovers}"


def test_the_wan_carries_no_sip_in_clear_only_tls_on_5061(run):
    tls, clear_sip = [], []
    for _, data in ip_packets(run["pcap"]):
        p = decode_ip(data)
        if p is None or p.proto not in (TCP, UDP):
            continue
        if b"SIP/2.0" in p.payload or {p.sport, p.dport} & {5060, 5062, 5070}:
            clear_sip.append((p.src, p.sport, p.dst, p.dport))
        if p.proto == TCP and proxylab.TLS_PORT in (p.sport, p.dport):
            tls.append(p)
    assert clear_sip == []
    records = [p for p in tls if p.payload[:1] in (b"\x16", b"\x17")]  # TLS handshake and application data
    assert {(p.src, p.dst) for p in records} == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
    assert any(p.payload[:1] == b"\x17" for p in records)


@pytest.mark.parametrize("scenario", ["caller-hangup", "callee-hangup"])
def test_answered_calls_are_keyed_from_the_proxies_and_esp_carries_them(run, scenario):
    r = run["calls"][scenario]
    for role, want in (("gwb", "initiator"), ("gwa", "responder")):
        keyed = [e for e in run["logs"][role] if e["event"] == "keying" and e.get("call") == r.call_id]
        assert [(e["trigger"], e["role"]) for e in keyed] == [("ng answer", want)]
        ng = [e["command"] for e in run["logs"][role] if e["event"] == "ng" and e.get("call") == r.call_id]
        # the proxy may offer twice (the phone re-sent its INVITE while the first TLS connection was set up)
        assert ng[0] == "offer" and "answer" in ng and ng.index("answer") < ng.index("delete")
    assert set(r.sa_up) == set(r.sa_down) == {"gwa", "gwb"}
    w = wire_stats(run["pcap"], run["lab"].rtp_ports)
    up, down = max(r.sa_up.values()), min(r.sa_down.values())
    assert len([p for p in w.esp if up <= p[0] <= down]) > 50
    assert [p for p in w.rtp_clear if {p[2], p[4]} <= r.ports] == []


@pytest.mark.parametrize("scenario", ["caller-hangup", "callee-hangup"])
def test_the_proxys_delete_at_bye_removes_the_sa(run, scenario):
    r = run["calls"][scenario]
    unkey = [e for e in run["logs"]["gwb"] if e["event"] == "unkeying" and e.get("call") == r.call_id]
    removed = [e for e in run["logs"]["gwb"] if e["event"] == "sa-removed" and e.get("call") == r.call_id]
    assert [e["reason"] for e in unkey] == ["ng-delete"] and [e["reason"] for e in removed] == ["ng-delete"]


def test_a_cancelled_call_is_never_keyed_and_nothing_is_left(run):
    r = run["calls"]["cancel"]
    for role in ("gwa", "gwb"):
        assert not [e for e in run["logs"][role] if e["event"] == "keying" and e.get("call") == r.call_id]
        ended = [e for e in run["logs"][role] if e["event"] == "dialog-ended" and e.get("call") == r.call_id]
        assert [e["reason"] for e in ended] == ["ng-delete"]
    assert run["children"] == {"gwa": [], "gwb": []}
