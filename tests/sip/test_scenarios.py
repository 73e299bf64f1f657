"""Dialog scenarios, each a message sequence in the order a network produces it (hand-written;
the ones captured from real user agents and proxies in the lab are in test_captures.py)."""

from ipsecrtp.media import Endpoint
from ipsecrtp.sip.dialog import DialogTracker

from .build import A, B, feed, kinds, msg, sdp

OFFER = sdp(A, "audio 10000 RTP/AVP 0")
ANSWER = sdp(B, "audio 20000 RTP/AVP 0")
INVITE = msg(f"INVITE sip:bob@{B} SIP/2.0", "1 INVITE", body=OFFER)
PRACK_100REL = ("Require: 100rel", "RSeq: 1")


def ports(flows):
    return sorted((f.kind, f.offerer.port, f.answerer.port) for f in flows)


def test_forking_two_early_dialogs_only_one_confirmed():
    tr = DialogTracker()
    ev = feed(tr, (0.0, INVITE),
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="fork1", body=sdp(B, "audio 20000 RTP/AVP 0"))),
              (0.2, msg("SIP/2.0 180 Ringing", "1 INVITE", to_tag="fork2", body=sdp("198.51.100.3", "audio 30000 RTP/AVP 0"))))
    assert kinds(ev) == ["DialogEarly", "MediaNegotiated", "DialogEarly", "MediaChanged"]
    assert [e.to_tag for e in ev] == ["fork1", "fork1", "fork2", "fork2"]
    assert ev[3].new[0].answerer == Endpoint("198.51.100.3", 30000)
    # fork1 answers: its media becomes the call's, fork2's early dialog is gone
    ev = feed(tr, (2.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="fork1", body=sdp(B, "audio 20000 RTP/AVP 0"))))
    assert kinds(ev) == ["DialogConfirmed", "MediaChanged"]
    assert ev[1].new[0].answerer == Endpoint(B, 20000) and ev[1].to_tag == "fork1"
    # fork2 answers too (a race the proxy could not stop): an extra dialog the caller will ACK and BYE
    ev = feed(tr, (2.1, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="fork2", body=sdp("198.51.100.3", "audio 30000 RTP/AVP 0"))),
              (2.2, msg(f"BYE sip:bob@{B} SIP/2.0", "2 BYE", to_tag="fork2", branch="z9hG4bKbye2")))
    assert kinds(ev) == ["ExtraDialog"]
    assert tr.dialogs["call1"].state == "confirmed" and tr.dialogs["call1"].to_tag == "fork1"
    ev = feed(tr, (9.0, msg(f"BYE sip:bob@{B} SIP/2.0", "3 BYE", to_tag="fork1", branch="z9hG4bKbye1")))
    assert [(type(e).__name__, e.reason) for e in ev] == [("DialogTerminated", "bye-by-caller")]


def test_reliable_183_answers_then_prack_and_200_do_not_renegotiate():
    tr = DialogTracker()
    ev = feed(tr, (0.0, INVITE),
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="t", body=ANSWER, extra=PRACK_100REL)),
              (0.15, msg(f"PRACK sip:bob@{B} SIP/2.0", "2 PRACK", to_tag="t", branch="z9hG4bKp", extra=("RAck: 1 1 INVITE",))),
              (0.2, msg("SIP/2.0 200 OK", "2 PRACK", to_tag="t", branch="z9hG4bKp")),
              (3.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)))
    assert kinds(ev) == ["DialogEarly", "MediaNegotiated", "DialogConfirmed"]
    assert ev[1].time == 0.1 and ev[1].offerer == "caller"


def test_late_offer_in_reliable_183_answered_in_prack():
    tr = DialogTracker()
    ev = feed(tr, (0.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "1 INVITE")),
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="t", body=ANSWER, extra=PRACK_100REL)),
              (0.2, msg(f"PRACK sip:bob@{B} SIP/2.0", "2 PRACK", to_tag="t", branch="z9hG4bKp", body=OFFER)),
              (0.3, msg("SIP/2.0 200 OK", "2 PRACK", to_tag="t", branch="z9hG4bKp")))
    assert kinds(ev) == ["DialogEarly", "MediaNegotiated"]
    assert ev[1].offerer == "callee" and ev[1].trigger.startswith("PRACK")
    assert ev[1].flows[0].offerer == Endpoint(B, 20000)


def test_offer_in_prack_answered_in_its_200():
    tr = DialogTracker()
    ev = feed(tr, (0.0, INVITE),
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="t", body=ANSWER, extra=PRACK_100REL)),
              (0.2, msg(f"PRACK sip:bob@{B} SIP/2.0", "2 PRACK", to_tag="t", branch="z9hG4bKp",
                        body=sdp(A, "audio 10002 RTP/AVP 0", version=2))),
              (0.3, msg("SIP/2.0 200 OK", "2 PRACK", to_tag="t", branch="z9hG4bKp", body=sdp(B, "audio 20002 RTP/AVP 0"))))
    assert kinds(ev) == ["DialogEarly", "MediaNegotiated", "MediaChanged"]
    assert ports(ev[2].new) == [("rtcp", 10003, 20003), ("rtp", 10002, 20002)]


def test_update_in_early_dialog_changes_media_before_answer():
    tr = DialogTracker()
    ev = feed(tr, (0.0, INVITE),
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="t", body=ANSWER, extra=PRACK_100REL)),
              (1.0, msg(f"UPDATE sip:bob@{B} SIP/2.0", "3 UPDATE", to_tag="t", branch="z9hG4bKu",
                        body=sdp(A, "audio 10004 RTP/AVP 0|a=rtcp-mux", version=2))),
              (1.1, msg("SIP/2.0 200 OK", "3 UPDATE", to_tag="t", branch="z9hG4bKu",
                        body=sdp(B, "audio 20004 RTP/AVP 0|a=rtcp-mux"))),
              (2.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)))
    assert kinds(ev) == ["DialogEarly", "MediaNegotiated", "MediaChanged", "DialogConfirmed"]
    assert ports(ev[2].new) == [("rtp+rtcp", 10004, 20004)]


def test_unreliable_183_answer_revised_by_200():
    tr = DialogTracker()
    ev = feed(tr, (0.0, INVITE),
              (0.1, msg("SIP/2.0 183 Session Progress", "1 INVITE", to_tag="t", body=ANSWER)),
              (2.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=sdp(B, "audio 20010 RTP/AVP 0"))))
    assert kinds(ev) == ["DialogEarly", "MediaNegotiated", "DialogConfirmed", "MediaChanged"]
    assert ports(ev[3].new) == [("rtcp", 10001, 20011), ("rtp", 10000, 20010)]


def test_hold_by_sendonly_keeps_flows_hold_by_zero_address_drops_them_and_resume():
    tr = DialogTracker()
    feed(tr, (0.0, INVITE), (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)))
    # RFC 3264 §8.4 hold: sendonly; RTCP still flows, so the flows (and the SA) stay
    ev = feed(tr, (5.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "2 INVITE", to_tag="t", branch="z9hG4bKh",
                            body=sdp(A, "audio 10000 RTP/AVP 0|a=sendonly", version=2))),
              (5.1, msg("SIP/2.0 200 OK", "2 INVITE", to_tag="t", branch="z9hG4bKh",
                        body=sdp(B, "audio 20000 RTP/AVP 0|a=recvonly"))))
    assert kinds(ev) == ["MediaRenegotiated"]
    assert ev[0].notes == ("stream 0 (audio) offer sendonly", "stream 0 (audio) answer recvonly")
    # RFC 2543 hold: c=0.0.0.0 - nothing to key any more
    ev = feed(tr, (6.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "3 INVITE", to_tag="t", branch="z9hG4bKh2",
                            body=sdp("0.0.0.0", "audio 10000 RTP/AVP 0", version=3))),
              (6.1, msg("SIP/2.0 200 OK", "3 INVITE", to_tag="t", branch="z9hG4bKh2", body=ANSWER)))
    assert kinds(ev) == ["MediaChanged"] and ev[0].new == () and len(ev[0].old) == 2
    ev = feed(tr, (9.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "4 INVITE", to_tag="t", branch="z9hG4bKr",
                            body=sdp(A, "audio 10000 RTP/AVP 0", version=4))),
              (9.1, msg("SIP/2.0 200 OK", "4 INVITE", to_tag="t", branch="z9hG4bKr", body=ANSWER)))
    assert kinds(ev) == ["MediaNegotiated"] and len(ev[0].flows) == 2


def test_added_and_removed_video_stream():
    tr = DialogTracker()
    feed(tr, (0.0, INVITE), (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)))
    ev = feed(tr, (3.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "2 INVITE", to_tag="t", branch="z9hG4bKv",
                            body=sdp(A, "audio 10000 RTP/AVP 0", "video 10010 RTP/AVP 96", version=2))),
              (3.1, msg("SIP/2.0 200 OK", "2 INVITE", to_tag="t", branch="z9hG4bKv",
                        body=sdp(B, "audio 20000 RTP/AVP 0", "video 20010 RTP/AVP 96"))))
    assert kinds(ev) == ["MediaChanged"]
    assert sorted({f.stream for f in ev[0].new}) == [0, 1] and len(ev[0].new) == 4
    ev = feed(tr, (4.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "3 INVITE", to_tag="t", branch="z9hG4bKv2",
                            body=sdp(A, "audio 10000 RTP/AVP 0", "video 0 RTP/AVP 96", version=3))),
              (4.1, msg("SIP/2.0 200 OK", "3 INVITE", to_tag="t", branch="z9hG4bKv2",
                        body=sdp(B, "audio 20000 RTP/AVP 0", "video 0 RTP/AVP 96"))))
    assert kinds(ev) == ["MediaChanged"] and {f.stream for f in ev[0].new} == {0}
    assert "stream 1 (video) rejected (port 0)" in ev[0].notes


def test_reinvite_by_callee_with_glare_then_retry():
    tr = DialogTracker()
    feed(tr, (0.0, INVITE), (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)))
    ev = feed(tr,
              (5.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "2 INVITE", to_tag="t", branch="z9hG4bKa",
                        body=sdp(A, "audio 10002 RTP/AVP 0", version=2))),
              (5.0, msg(f"INVITE sip:alice@{A} SIP/2.0", "1 INVITE", from_tag="t", to_tag="ft", branch="z9hG4bKb",
                        body=sdp(B, "audio 20002 RTP/AVP 0", version=2), reverse=True)),
              (5.1, msg("SIP/2.0 491 Request Pending", "2 INVITE", to_tag="t", branch="z9hG4bKa")),
              (5.1, msg("SIP/2.0 491 Request Pending", "1 INVITE", from_tag="t", to_tag="ft", branch="z9hG4bKb",
                        reverse=True)))
    assert ev == []
    # RFC 3261 §14.1: the callee (not the Call-ID owner) retries after 0-2 s
    ev = feed(tr,
              (6.0, msg(f"INVITE sip:alice@{A} SIP/2.0", "2 INVITE", from_tag="t", to_tag="ft", branch="z9hG4bKc",
                        body=sdp(B, "audio 20002 RTP/AVP 0", version=3), reverse=True)),
              (6.1, msg("SIP/2.0 200 OK", "2 INVITE", from_tag="t", to_tag="ft", branch="z9hG4bKc",
                        body=sdp(A, "audio 10000 RTP/AVP 0", version=2), reverse=True)))
    assert kinds(ev) == ["MediaChanged"]
    assert ports(ev[0].new) == [("rtcp", 20003, 10001), ("rtp", 20002, 10000)]


def test_redirect_and_other_final_failures():
    for status, reason in (("302 Moved Temporarily", "rejected-302"), ("404 Not Found", "rejected-404"),
                           ("503 Service Unavailable", "rejected-503"), ("603 Decline", "rejected-603")):
        tr = DialogTracker()
        ev = feed(tr, (0.0, INVITE), (0.3, msg(f"SIP/2.0 {status}", "1 INVITE", to_tag="t")))
        assert [(type(e).__name__, e.reason) for e in ev] == [("DialogTerminated", reason)]


def test_cancel_crossing_a_200_leaves_a_confirmed_call():
    """RFC 3261 §9.1: a CANCEL that arrives after the 2xx has no effect; the caller then sends BYE."""
    tr = DialogTracker()
    ev = feed(tr, (0.0, INVITE), (0.1, msg("SIP/2.0 180 Ringing", "1 INVITE", to_tag="t")),
              (2.0, msg(f"CANCEL sip:bob@{B} SIP/2.0", "1 CANCEL")),
              (2.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)),
              (2.01, msg("SIP/2.0 200 OK", "1 CANCEL")),
              (2.1, msg(f"BYE sip:bob@{B} SIP/2.0", "2 BYE", to_tag="t", branch="z9hG4bKbye")))
    assert kinds(ev) == ["DialogEarly", "DialogConfirmed", "MediaNegotiated", "DialogTerminated"]
    assert ev[-1].reason == "bye-by-caller"


def test_session_timer_expiry_and_refresh():
    tr = DialogTracker(media_timeout=None, session_timer_grace=0.0)
    feed(tr, (0.0, INVITE), (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER,
                                      extra=("Session-Expires: 90;refresher=uac", "Require: timer"))))
    assert tr.next_timer() == 91.0
    # refresh by UPDATE without SDP at 45 s (RFC 4028 §10: half the interval)
    feed(tr, (45.0, msg(f"UPDATE sip:bob@{B} SIP/2.0", "2 UPDATE", to_tag="t", branch="z9hG4bKs")),
         (45.1, msg("SIP/2.0 200 OK", "2 UPDATE", to_tag="t", branch="z9hG4bKs", extra=("Session-Expires: 90;refresher=uac",))))
    assert tr.handle_timer(91.0) == [] and tr.next_timer() == 135.1
    ev = tr.handle_timer(135.1)
    assert [(type(e).__name__, e.reason) for e in ev] == [("DialogTerminated", "session-expired")]


def test_bye_answered_481_and_in_dialog_408_end_the_call():
    tr = DialogTracker()
    feed(tr, (0.0, INVITE), (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)))
    ev = feed(tr, (5.0, msg(f"INFO sip:bob@{B} SIP/2.0", "2 INFO", to_tag="t", branch="z9hG4bKi")),
              (5.1, msg("SIP/2.0 481 Call/Transaction Does Not Exist", "2 INFO", to_tag="t", branch="z9hG4bKi")))
    assert [(type(e).__name__, e.reason) for e in ev] == [("DialogTerminated", "failed-481")]


def test_multipart_offer_and_ipv6_media():
    boundary = "b0undary"
    v6offer = sdp("2001:db8::1", "audio 10000 RTP/AVP 0|a=rtcp:10011 IN IP6 2001:db8::11")
    body = (f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode() + v6offer
            + f"\r\n--{boundary}\r\nContent-Type: application/isup\r\n\r\n\x01\x02\r\n--{boundary}--\r\n".encode())
    tr = DialogTracker()
    ev = feed(tr, (0.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "1 INVITE", body=body,
                            ctype=f'multipart/mixed;boundary="{boundary}"')),
              (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=sdp("2001:db8::2", "audio 20000 RTP/AVP 0"))))
    assert kinds(ev) == ["DialogConfirmed", "MediaNegotiated"]
    rtp, rtcp = sorted(ev[1].flows, key=lambda f: f.kind, reverse=True)
    assert rtp.offerer == Endpoint("2001:db8::1", 10000) and rtcp.offerer == Endpoint("2001:db8::11", 10011)
    assert str(rtcp) == "rtcp#0 udp [2001:db8::11]:10011<->[2001:db8::2]:20001"


def test_ice_and_sdes_reported_as_notes_never_as_keys():
    tr = DialogTracker()
    key = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VxdWVuY2Ug"
    ev = feed(tr, (0.0, msg(f"INVITE sip:bob@{B} SIP/2.0", "1 INVITE",
                            body=sdp(A, f"audio 10000 RTP/SAVP 0|a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}|"
                                        "a=ice-ufrag:abcd|a=candidate:1 1 UDP 2130706431 198.51.100.1 10000 typ host"))),
              (1.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t",
                        body=sdp(B, f"audio 20000 RTP/SAVP 0|a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}"))))
    neg = ev[-1]
    assert any("ICE" in n for n in neg.notes) and any("key material" in n for n in neg.notes)
    assert key not in repr(neg) and key not in repr(tr.dialogs["call1"].legs)


def test_dialog_of_another_from_tag_and_stray_responses_are_ignored():
    tr = DialogTracker()
    ev = feed(tr, (0.0, msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t", body=ANSWER)),  # no INVITE seen
              (0.1, INVITE),
              (0.2, msg("SIP/2.0 200 OK", "1 INVITE", from_tag="someone-else", to_tag="t", body=ANSWER)),
              (0.3, msg(f"BYE sip:bob@{B} SIP/2.0", "2 BYE", to_tag="unknown", branch="z9hG4bKx")))
    assert ev == []
    assert tr.dialogs["call1"].state == "trying"
