"""Dialog tracking: on SIP captured from real baresip calls in the lab, and on hand-made sequences."""

import os

from ipsecrtp.media import Endpoint
from ipsecrtp.offline import replay
from ipsecrtp.sip.dialog import DialogTracker
from ipsecrtp.sip.events import (
    DialogConfirmed,
    DialogEarly,
    DialogTerminated,
    MediaChanged,
    MediaNegotiated,
    MessageRejected,
    Retransmission,
)

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


def test_real_baresip_calls_from_the_lab_capture():
    """Three real calls: answered + caller BYE, answered + callee BYE, ringing + CANCEL."""
    report = replay(os.path.join(DATA, "baresip-calls.pcap"), {5060})
    assert report["rejected"] == []
    calls = report["calls"]
    assert [c["end_reason"] for c in calls] == ["bye-by-caller", "bye-by-callee", "cancelled"]
    for c in calls[:2]:
        kinds = [f["kind"] for f in c["flows"]]
        assert kinds == ["rtp", "rtcp"]
        rtp, rtcp = c["flows"]
        assert rtp["offerer"].startswith("198.51.100.1:") and rtp["answerer"].startswith("198.51.100.2:")
        assert int(rtcp["offerer"].split(":")[1]) == int(rtp["offerer"].split(":")[1]) + 1
        types = [e["type"] for e in c["events"]]
        assert types == ["Invite", "DialogEarly", "DialogConfirmed", "MediaNegotiated", "DialogTerminated"]
    assert calls[2]["flows"] == []
    assert [e["type"] for e in calls[2]["events"]] == ["Invite", "DialogEarly", "DialogTerminated"]


def msg(start: str, cseq: str, *, from_tag="ft", to_tag=None, branch="z9hG4bK1", body=b"", cid="call1") -> bytes:
    to = "<sip:bob@198.51.100.2>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{start}\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch={branch}\r\n"
            f"From: <sip:alice@198.51.100.1>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq}\r\n")
    if body:
        head += "Content-Type: application/sdp\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def sdp(addr: str, port: int, extra: str = "") -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\n{extra}").encode()


OFFER, ANSWER = sdp("198.51.100.1", 10000), sdp("198.51.100.2", 20000)


def feed(tr, *items):
    events = []
    for t, data in items:
        events.extend(tr.receive(data, t))
    return events


def test_offer_answer_early_media_and_retransmissions():
    tr = DialogTracker()
    ev = feed(tr,
              (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)),
              (0.01, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)),  # retransmitted
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="tt", body=ANSWER)),
              (2.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=ANSWER)),
              (2.1, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=ANSWER)))  # retransmitted 200
    assert [type(e) for e in ev] == [Retransmission, DialogEarly, MediaNegotiated, DialogConfirmed, Retransmission]
    neg = ev[2]
    assert neg.time == 0.1 and neg.offerer == "caller"
    assert neg.flows[0].offerer == Endpoint("198.51.100.1", 10000)
    assert neg.flows[0].answerer == Endpoint("198.51.100.2", 20000)


def test_late_offer_answer_in_ack():
    tr = DialogTracker()
    ev = feed(tr,
              (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE")),
              (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=ANSWER)),
              (1.1, msg("ACK sip:bob@198.51.100.2 SIP/2.0", "1 ACK", to_tag="tt", branch="z9hG4bK2", body=OFFER)))
    assert [type(e) for e in ev] == [DialogConfirmed, MediaNegotiated]
    assert ev[1].offerer == "callee" and ev[1].time == 1.1
    # the offer came from the callee: its address is the flow's offerer side
    assert ev[1].flows[0].offerer == Endpoint("198.51.100.2", 20000)


def test_reinvite_changing_port_then_bye_by_callee():
    tr = DialogTracker()
    feed(tr, (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)),
         (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=ANSWER)))
    ev = feed(tr,
              (5.0, msg("INVITE sip:alice@198.51.100.1 SIP/2.0", "7 INVITE", from_tag="tt", to_tag="ft",
                        branch="z9hG4bK9", body=sdp("198.51.100.2", 20010))),
              (5.1, msg("SIP/2.0 200 OK", "7 INVITE", from_tag="tt", to_tag="ft", branch="z9hG4bK9",
                        body=OFFER)))
    assert [type(e) for e in ev] == [MediaChanged]
    assert {f.offerer.port for f in ev[0].new} == {20010, 20011}
    ev = feed(tr, (9.0, msg("BYE sip:alice@198.51.100.1 SIP/2.0", "8 BYE", from_tag="tt", to_tag="ft",
                            branch="z9hG4bKa")))
    assert [(type(e), e.reason) for e in ev] == [(DialogTerminated, "bye-by-callee")]


def test_glare_drops_the_pending_offer():
    tr = DialogTracker()
    feed(tr, (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)),
         (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=ANSWER)))
    ev = feed(tr,
              (2.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "2 INVITE", to_tag="tt", branch="b2",
                        body=sdp("198.51.100.1", 10004))),
              (2.1, msg("SIP/2.0 491 Request Pending", "2 INVITE", to_tag="tt", branch="b2")))
    assert ev == []
    assert tr.dialogs["call1"].state == "confirmed" and tr.dialogs["call1"].offer is None


def test_rejection_and_cancel():
    tr = DialogTracker()
    ev = feed(tr, (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)),
              (0.5, msg("SIP/2.0 486 Busy Here", "1 INVITE", to_tag="tt")))
    assert [(type(e), e.reason) for e in ev] == [(DialogTerminated, "rejected-486")]
    ev = feed(tr, (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER, cid="c2")),
              (0.2, msg("SIP/2.0 180 Ringing", "1 INVITE", to_tag="tt", cid="c2")),
              (1.0, msg("CANCEL sip:bob@198.51.100.2 SIP/2.0", "1 CANCEL", cid="c2")),
              (1.1, msg("SIP/2.0 487 Request Terminated", "1 INVITE", to_tag="tt", cid="c2")))
    assert [type(e) for e in ev] == [DialogEarly, DialogTerminated]
    assert ev[-1].reason == "cancelled"


def test_timers_media_timeout_and_unanswered_invite():
    tr = DialogTracker(media_timeout=10.0, invite_timeout=60.0)
    feed(tr, (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)),
         (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=ANSWER)),
         (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER, cid="c2")))
    assert tr.next_timer() == 11.0
    tr.media_activity("call1", 8.0)
    assert tr.handle_timer(11.0) == []
    assert tr.next_timer() == 18.0
    ev = tr.handle_timer(18.0)
    assert [(e.call_id, e.reason) for e in ev] == [("call1", "media-timeout")]
    ev = tr.handle_timer(60.0)
    assert [(e.call_id, e.reason) for e in ev] == [("c2", "timeout")]


def test_malformed_message_and_bad_sdp_leave_state_alone():
    tr = DialogTracker()
    feed(tr, (0.0, msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", body=OFFER)))
    ev = feed(tr, (0.1, b"SIP/2.0 200 OK\r\nthis is not a header\r\n\r\n"),
              (0.2, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="tt", body=b"v=0\r\nm=audio x\r\n")))
    assert [type(e) for e in ev] == [MessageRejected, MessageRejected]
    assert "bad SDP" in ev[1].reason
    assert tr.dialogs["call1"].state == "trying" and tr.dialogs["call1"].offer is not None
