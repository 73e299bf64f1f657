"""A real Kamailio (Debian's, its rtpengine module unmodified) in front of gwa's phone drives gwa's
controller over rtpengine's ng protocol (issue 20). gwa watches no SIP on the wire: the call it
keys, it learns from rtpengine_offer/rtpengine_answer, and rtpengine_delete (the proxy's BYE route)
removes the SA. Checked against independent views: charon's list-sas, a tcpdump of gwa's WAN,
Kamailio's own log."""

from __future__ import annotations

import os
import secrets
import time

import pytest

from ipsecrtp.netns import proxylab
from ipsecrtp.netns.baresip import BaresipControl
from ipsecrtp.netns.calls import Capture, child_sas, log_events, wait_log, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike

pytestmark = pytest.mark.lab
GWA, GWB = "198.51.100.1", "198.51.100.2"


@pytest.fixture(scope="module")
def run():
    lab = Lab("ng" + secrets.token_hex(4))
    out: dict = {"lab": lab}
    try:
        proxylab.up(lab)
        wait_ike(lab)
        cap = Capture(lab, "gwa", os.path.join(lab.dir, "wan.pcap"))
        bob = BaresipControl(lab.ua_ns("gwb"), timeout=15)
        alice = BaresipControl(lab.ua_ns("gwa"), timeout=15)
        try:
            # gwb's phone calls gwa's through gwa's Kamailio: alice answers, so gwa initiates the SA
            bob.command("dial", proxylab.proxy_uri(lab, "alice"))
            cid = bob.wait_event({"CALL_ESTABLISHED"}, 15)["id"]
            alice.wait_event({"CALL_ESTABLISHED"}, 15)
            out["cid"] = cid
            out["sa_up"] = wait_log(lab, "gwa", cid, "sa-up", 15)
            time.sleep(2.0)
            out["charon"] = child_sas(lab, "gwa")
            out["query"] = proxylab.ng_command(lab, "gwa", {"command": "query", "call-id": cid})
            out["list"] = proxylab.ng_command(lab, "gwa", {"command": "list"})
            out["refused"] = proxylab.ng_command(lab, "gwa", {"command": "ping"}, source="127.0.0.2", timeout=1.0)
            out["ping"] = proxylab.ng_command(lab, "gwa", {"command": "ping"})
            bob.command("hangup")
            bob.wait_event({"CALL_CLOSED"}, 15)
            alice.wait_event({"CALL_CLOSED"}, 15)
            out["removed"] = wait_log(lab, "gwa", cid, "sa-removed", 15)
            out["down_b"] = wait_log(lab, "gwb", cid, "sa-down", 15)
            out["charon_after"] = child_sas(lab, "gwa")
        finally:
            bob.close()
            alice.close()
            cap.stop()
        out["wire"] = wire_stats(cap.path, lab.rtp_ports)
        out["gwa_log"] = log_events(lab, "gwa")
        out["kamailio"] = open(os.path.join(proxylab.kamailio_dir(lab, "gwa"), "kamailio.out")).read()
        yield out
    finally:
        lab.down()
        leftovers = [n for n in os.popen("ip netns list").read().split() if n.startswith(f"irtp-{lab.name}-")]
        assert leftovers == [], f"namespaces left behind: {leftovers}"


def test_kamailio_found_the_ng_endpoint_and_no_command_failed(run):
    assert "rtpengine instance <udp:127.0.0.1:22222> found" in run["kamailio"]
    assert "replied with error" not in run["kamailio"]
    ng = [e for e in run["gwa_log"] if e["event"] == "ng" and e.get("call") == run["cid"]]
    assert [e["command"] for e in ng][:2] == ["offer", "answer"] and ng[-1]["command"] == "delete"
    assert {e["result"] for e in ng} == {"ok"}


def test_the_call_is_keyed_from_what_the_proxy_told(run):
    keyed = [e for e in run["gwa_log"] if e["event"] == "keying" and e.get("call") == run["cid"]]
    assert len(keyed) == 1 and keyed[0]["trigger"] == "ng answer" and keyed[0]["role"] == "initiator"
    # gwa saw no SIP of it on the wire (it watches no SIP port): every dialog line came from ng
    assert not [e for e in run["gwa_log"] if e["event"] in ("sip-rejected", "dialog-early")]
    up = run["sa_up"]
    assert up["local_ts"] and all(t.startswith(f"{GWA}/32[udp/") for t in up["local_ts"])
    assert up["remote_ts"] and all(t.startswith(f"{GWB}/32[udp/") for t in up["remote_ts"])


def test_esp_carries_the_media_on_the_wan_and_nothing_leaves_in_clear(run):
    w = run["wire"]
    spis = {int(run["charon"][0]["spi-in"], 16), int(run["charon"][0]["spi-out"], 16)}
    esp = [p for p in w.esp if p[3] in spis]
    assert len(esp) > 100  # 2 s of 50 pkt/s each way, and more
    assert {(p[1], p[2]) for p in esp} == {(GWA, GWB), (GWB, GWA)}
    assert [p for p in w.rtp_clear if p[1] == GWA] == []


def test_query_and_list_agree_with_charon(run):
    (child,) = run["charon"]
    q = run["query"]
    assert q["result"] == "ok" and q["call"] == run["cid"] and q["role"] == "initiator"
    (sa,) = q["sas"]
    assert (sa["child"], sa["sa"], sa["spi_in"], sa["spi_out"], sa["state"]) == \
        (child["name"], child["uniqueid"], child["spi-in"], child["spi-out"], "up")
    assert sa["local_ts"] == child["local-ts"] and sa["remote_ts"] == child["remote-ts"]
    assert float(q["times"]["sa_up"]) >= float(q["times"]["invite"])
    assert run["list"]["calls"] == [run["cid"]]


def test_rtpengine_delete_at_bye_removes_the_sa(run):
    assert run["removed"]["reason"] == "ng-delete" and run["removed"]["child"] == run["charon"][0]["name"]
    assert run["charon_after"] == []
    assert run["down_b"]["call"] == run["cid"]


def test_an_unconfigured_source_is_refused(run):
    assert run["refused"] is None and run["ping"] == {"result": "pong"}
    refused = [e for e in run["gwa_log"] if e["event"] == "ng-source-refused"]
    assert [e["source"] for e in refused] == ["127.0.0.2"]


def test_a_call_told_by_the_proxy_and_seen_on_the_wire_is_keyed_once():
    """gwa also watches SIP on the WAN (bob's SIP to gwa's Kamailio crosses it in clear here): the
    proxy's offer/answer and the captured messages are one dialog, keyed once."""
    lab = Lab("ngw" + secrets.token_hex(4))
    try:
        proxylab.up(lab, watch_sip=True)
        wait_ike(lab)
        bob = BaresipControl(lab.ua_ns("gwb"), timeout=15)
        alice = BaresipControl(lab.ua_ns("gwa"), timeout=15)
        try:
            bob.command("dial", proxylab.proxy_uri(lab, "alice"))
            cid = bob.wait_event({"CALL_ESTABLISHED"}, 15)["id"]
            alice.wait_event({"CALL_ESTABLISHED"}, 15)
            wait_log(lab, "gwa", cid, "sa-up", 15)
            time.sleep(1.0)
            bob.command("hangup")
            bob.wait_event({"CALL_CLOSED"}, 15)
            timeline = wait_log(lab, "gwa", cid, "timeline", 30)
            wait_log(lab, "gwa", cid, "sa-removed", 15)
        finally:
            bob.close()
            alice.close()
        events = [e["event"] for e in log_events(lab, "gwa", cid)]
        ng = [e["command"] for e in log_events(lab, "gwa", cid, "ng")]
    finally:
        lab.down()
    assert "offer" in ng and "answer" in ng and "delete" in ng  # the proxy told it
    assert timeline["ack"] is not None and timeline["bye"] is not None  # and the wire showed it (ng has no ACK)
    assert events.count("keying") == 1 and events.count("sa-initiated") == 1 and events.count("sa-removed") == 1
