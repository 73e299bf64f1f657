"""bench load's reading of what it measured, on synthetic inputs: the controllers' log lines, a
capture, the RTP sender's view of SIP. No lab: these are the pure parts."""

import struct

from ipsecrtp.netns import loadreport as lr
from ipsecrtp.netns.load import ports_needed
from ipsecrtp.netns.rtpsend import Sender

A, B = "198.51.100.1", "198.51.100.2"


def test_percentiles_are_nearest_rank():
    xs = [float(i) for i in range(1, 101)]
    assert lr.pcts(xs) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert lr.percentile([7.0], 0.99) == 7.0 and lr.percentile([], 0.5) is None


def log(call, answer, ended=None, keyed_ts=None, up=None, down=None):
    """The lines of one call as two controllers log them (gwb initiates: it holds the answerer's media)."""
    flows = [{"stream": 0, "kind": "rtp", "offerer": f"{A}:10000", "answerer": f"{B}:10000"}]
    gwa = [{"event": "keying", "call": call, "t": answer, "role": "responder", "flows": flows}]
    gwb = [{"event": "keying", "call": call, "t": answer, "role": "initiator", "flows": flows}]
    if keyed_ts is not None:
        gwb.append({"event": "sa-initiated", "call": call, "ts": keyed_ts, "keying_ms": 5.0,
                    "after_answer_ms": (keyed_ts - answer) * 1000})
    for lines in (gwa, gwb):
        if up is not None:
            lines.append({"event": "sa-up", "call": call, "ts": up})
        if ended is not None:
            lines.append({"event": "unkeying", "call": call, "t": ended})
        if down is not None:
            lines.append({"event": "sa-down", "call": call, "ts": down})
    return gwa, gwb


def records(*calls):
    logs = {"gwa": [], "gwb": []}
    for gwa, gwb in calls:
        logs["gwa"] += gwa
        logs["gwb"] += gwb
    return lr.call_records(logs)


def test_a_call_keyed_after_its_end_counts_as_late_not_keyed():
    recs = records(log("c1", 100.0, ended=110.0, keyed_ts=100.02, up=100.02, down=111.0),
                   log("c2", 101.0, ended=111.0, keyed_ts=112.5, up=112.5, down=113.0),
                   log("c3", 102.0, ended=112.0))
    by = {r["call"]: r for r in recs}
    assert [r["call"] for r in recs] == ["c1", "c2", "c3"]  # in the order of the answers
    assert by["c1"]["keyed_live"] and not by["c1"]["late"]
    assert by["c2"]["late"] and not by["c2"]["keyed_live"]
    assert not by["c3"]["keyed"] and not by["c3"]["late"]
    rows = lr.tenths(recs, {}, parts=3)
    assert [(t["keyed"], t["late"]) for t in rows] == [(1, 0), (0, 1), (0, 0)]
    assert rows[1]["after_answer_ms"]["p50"] == 11500.0  # a late SA's delay still shows the backlog


def test_an_sa_up_after_the_call_without_sa_initiated_counts_as_late():
    # the gateway core forgets a call at its BYE: an install still queued then comes up with an
    # sa-up line only (no sa-initiated); its delay is the initiator's sa-up after the answer
    recs = records(log("c1", 100.0, ended=110.0, up=112.0, down=113.0),
                   log("c2", 101.0, ended=111.0, keyed_ts=101.5, up=101.5, down=112.0))
    by = {r["call"]: r for r in recs}
    assert by["c1"]["late"] and not by["c1"]["keyed_live"] and by["c1"]["after_answer_ms"] == 12000.0
    assert by["c1"]["keying_ms"] is None and by["c1"]["sa_up_only"]
    assert by["c2"]["keyed_live"] and not by["c2"]["sa_up_only"]
    rows = lr.tenths(recs, {}, parts=1)
    assert (rows[0]["keyed"], rows[0]["late"]) == (1, 1)
    assert rows[0]["keying_ms"]["p50"] == 5.0  # the late SA has no keying time: left out, not a crash


def test_media_kept_from_the_wan_is_summed_from_both_gateways_timelines():
    c1, c2 = log("c1", 100.0, ended=110.0, keyed_ts=100.05), log("c2", 101.0, ended=111.0)
    for lines, before, after in ((c1[0], 1, 0), (c1[1], 2, 3), (c2[1], 40, 1)):
        lines.append({"event": "timeline", "call": lines[0]["call"],
                      "metrics": {"rtp_dropped_before_protection": before, "rtp_dropped_after_end": after}})
    c2[0].append({"event": "timeline", "call": "c2", "metrics": {}})  # a controller that logs no count
    recs = records(c1, c2)
    assert lr.kept_from_wan(recs) == {"before_protection": 43, "after_end": 4, "calls_counted": 2}
    assert [t["dropped"] for t in lr.tenths(recs, {}, parts=2)] == [3, 40]


def test_clear_packets_are_placed_before_while_and_after_the_sending_side_sa():
    recs = records(log("c1", 100.0, ended=110.0, keyed_ts=100.05, up=100.05, down=111.0))
    clear = {"c1": [(100.01, A), (100.02, B), (105.0, A), (111.5, B)]}
    phases = lr.clear_phases(recs, clear, {A: "gwa", B: "gwb"})
    assert phases == {"c1": {"before_sa": 2, "while_keyed": 1, "after_sa": 1}}


def pcap(packets) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for t, src, sport, dst, dport, payload, frag in packets:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, frag, 64, 17, 0,
                         bytes(int(x) for x in src.split(".")), bytes(int(x) for x in dst.split("."))) + udp
        frame = b"\0" * 12 + b"\x08\x00" + ip
        out += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)) + frame
    return out


def test_wire_counts_tell_media_from_ike_esp_and_sip(tmp_path):
    path = tmp_path / "wan.pcap"
    path.write_bytes(pcap([
        (100.01, A, 10000, B, 10000, b"\x80\x08rtp", 0),  # c1's RTP in clear
        (100.02, B, 10000, A, 10000, b"\x80\x08rtp", 0),
        (100.03, A, 4500, B, 4500, b"\0\0\0\0ike", 0),  # IKE on the NAT-T port (non-ESP marker)
        (100.04, A, 4500, B, 4500, b"\x12\x34\x56\x78esp", 0),  # ESP-in-UDP
        (100.05, A, 5060, B, 5060, b"BYE", 0),
        (100.06, A, 12000, B, 12000, b"\x80\x08rtp", 0),  # on the range, but no call has that flow
        (100.07, A, 1, B, 2, b"rest of a fragment", 185),  # a later fragment: no UDP header in it
    ]))
    recs = records(log("c1", 100.0))
    w = lr.wire_counts(str(path), (10000, 19999), lr.call_flows(recs))
    assert (w.rtp_clear, w.esp, w.ike, w.sip, w.clear_unattributed) == (3, 1, 1, 1, 1)
    assert [src for _t, src in w.clear_by_call["c1"]] == [A, B]


def test_sipp_ports_fit_the_range():
    assert ports_needed(10, 10000) == (10000, 10036)
    assert ports_needed(100_000, 10000) == (10000, 19996)  # sipp wraps after 2,500 calls


def sip_packet(src, dst, first_line, call, cseq, sdp_port=None):
    body = b""
    if sdp_port is not None:
        body = (f"v=0\r\no=- 1 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
                f"m=audio {sdp_port} RTP/AVP 8\r\na=rtcp-mux\r\n").encode()
    msg = (f"{first_line}\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{call}{cseq.replace(' ', '')}\r\n"
           f"From: <sip:a@{A}>;tag=1\r\nTo: <sip:b@{B}>\r\nCall-ID: {call}\r\nCSeq: {cseq}\r\n"
           + ("Content-Type: application/sdp\r\n" if body else "") + f"Content-Length: {len(body)}\r\n\r\n").encode()
    msg += body
    udp = struct.pack("!HHHH", 5060, 5060, 8 + len(msg), 0) + msg
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                       bytes(int(x) for x in src.split(".")), bytes(int(x) for x in dst.split("."))) + udp


def test_sender_streams_from_the_answer_to_the_bye():
    # loopback addresses: the sender binds this side's media endpoint for real
    me, peer = "127.0.0.1", "127.0.0.2"
    s = Sender(me, ptime=0.02, max_stream=60)
    try:
        s.sip(sip_packet(me, peer, f"INVITE sip:b@{peer} SIP/2.0", "c1", "1 INVITE", sdp_port=34560), 1.0)
        s.sip(sip_packet(peer, me, "SIP/2.0 180 Ringing", "c1", "1 INVITE"), 1.1)
        assert s.stats["streams"] == 0  # ringing: nothing sent yet
        s.sip(sip_packet(peer, me, "SIP/2.0 200 OK", "c1", "1 INVITE", sdp_port=34562), 1.2)
        assert s.stats["streams"] == 1 and "c1" in s.streams
        s.sip(sip_packet(peer, me, "SIP/2.0 200 OK", "c1", "1 INVITE", sdp_port=34562), 1.3)  # retransmitted
        assert s.stats["streams"] == 1
        s.send_due(1.2)
        assert s.stats["sent"] + s.stats["send_errors"] == 1
        s.sip(sip_packet(me, peer, f"BYE sip:b@{peer} SIP/2.0", "c1", "2 BYE"), 5.0)
        assert s.streams == {} and "c1" in s.ended
        s.send_due(10.0)
        assert s.stats["sent"] + s.stats["send_errors"] == 1
    finally:
        s.close()
