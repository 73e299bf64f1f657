"""What the SIP lab's capture must read as (shared by the committed capture's test and the live lab test).

The media ports are checked against tshark's own SDP dissection of the same file, not against
numbers written here."""

from __future__ import annotations

import subprocess
from collections import defaultdict

SCENARIOS = ["baresip-udp-proxied", "baresip-tcp-proxied", "sipp-late-offer", "sipp-100rel-ipv6-tcp",
             "sipp-rejected", "baresip-forked"]
END_REASONS = ["bye-by-caller", "bye-by-callee", "bye-by-caller", "bye-by-callee", "rejected-486", "bye-by-caller"]


def tshark_sdp_media(pcap: str) -> dict[str, set[tuple[str, int]]]:
    """(connection address, m= port) of every SDP per Call-ID, as tshark dissects them."""
    out = subprocess.run(["tshark", "-r", pcap, "-Y", "sdp", "-T", "fields", "-E", "separator=|",
                          "-e", "sip.Call-ID", "-e", "sdp.connection_info.address", "-e", "sdp.media.port"],
                         capture_output=True, text=True, check=True).stdout
    media: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for line in out.splitlines():
        cid, addrs, ports = line.split("|")
        for addr in addrs.split(","):
            for port in ports.split(","):
                media[cid].add((addr, int(port)))
    return media


def split(ep: str) -> tuple[str, int]:
    host, _, port = ep.rpartition(":")
    return host.strip("[]"), int(port)


def check_lab_capture(report: dict, media: dict[str, set[tuple[str, int]]]) -> None:
    calls = report["calls"]
    assert report["rejected"] == []
    assert [c["end_reason"] for c in calls] == END_REASONS
    for c in calls:
        types = [e["type"] for e in c["events"]]
        # after the end only the other hop's copies of the last messages may follow
        main_types = [t for t in types if t not in ("Relayed", "Retransmission")]
        assert types[0] == "Invite" and main_types[-1] == "DialogTerminated" and types.count("DialogTerminated") == 1
        assert c["relayed"] > 0  # the capture point is the proxy: it sees every message twice
        assert c["retransmissions"] == 0
        for f in c["flows"]:
            if f["kind"] in ("rtp", "rtp+rtcp"):
                assert {split(f["offerer"]), split(f["answerer"])} <= media[c["call_id"]], c["call_id"]
    udp, tcp, late, prack, rejected, forked = calls
    for c in (udp, tcp, forked):
        assert [f["kind"] for f in c["flows"]] == ["rtp", "rtcp"]
        neg = [e for e in c["events"] if e["type"] == "MediaNegotiated"]
        assert len(neg) == 1 and neg[0]["detail"].startswith("200 ")
    assert [f["kind"] for f in late["flows"]] == ["rtp+rtcp"]
    neg = [e for e in late["events"] if e["type"] == "MediaNegotiated"]
    assert len(neg) == 1 and neg[0]["detail"].startswith("ACK ")  # late offer: the ACK answers
    assert split(late["flows"][0]["offerer"])[0] == "198.51.100.31"  # the callee offered
    neg = [e for e in prack["events"] if e["type"] == "MediaNegotiated"]
    assert len(neg) == 1 and neg[0]["detail"].startswith("183 ")  # the reliable 183 answers
    assert all(":" in split(f["offerer"])[0] for f in prack["flows"])  # IPv6
    assert "MediaRenegotiated" in [e["type"] for e in prack["events"]]  # hold by sendonly
    assert "stream 0 (audio) offer sendonly" in prack["notes"]
    assert prack["session_expires"] == 90
    assert rejected["flows"] == [] and "MediaNegotiated" not in [e["type"] for e in rejected["events"]]
    early = [e for e in forked["events"] if e["type"] == "DialogEarly"]
    assert len(early) == 2 and len({e["detail"] for e in early}) == 2  # two forks, two To tags
    assert [e["type"] for e in forked["events"]].count("DialogConfirmed") == 1
