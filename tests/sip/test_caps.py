"""Caps on hostile input in the SIP core (issue 19): each one refuses what is beyond it before the
work it would cost, says which cap in a bounded name, and keeps legitimate input working."""

from __future__ import annotations

import dataclasses

import pytest

from ipsecrtp.media import TooManyPorts, flows, offer_endpoints
from ipsecrtp.sip.dialog import DialogTracker
from ipsecrtp.sip.errors import CapExceeded, SipParseError
from ipsecrtp.sip.events import (
    CapHit,
    DialogEarly,
    DialogEvicted,
    DialogTerminated,
    MediaNegotiated,
    MediaRefused,
)
from ipsecrtp.sip.framing import StreamFramer
from ipsecrtp.sip.limits import CAPS, DEFAULT_LIMITS, Limits
from ipsecrtp.sip.message import parse_message
from ipsecrtp.sip.sdp import SdpCapExceeded, SdpError, parse_sdp


def sdp(addr: str = "192.0.2.10", port: int = 10000, count: int = 1, streams: int = 1, lines: int = 0) -> bytes:
    ports = f"{port}/{count}" if count != 1 else str(port)
    media = "".join(f"m=audio {ports if k == 0 else port + 2 * k} RTP/AVP 0\r\n" for k in range(streams))
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n{media}"
            + "a=sendrecv\r\n" * lines).encode()


def msg(start: str = "INVITE sip:bob@203.0.113.20 SIP/2.0", cid: str = "c1", cseq: str = "1 INVITE",
        to_tag: str | None = None, body: bytes = b"", extra: tuple[str, ...] = (), branch: str = "") -> bytes:
    lines = [start, f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch or 'z9hG4bK-' + cid + cseq.split()[0]}",
             "From: <sip:alice@192.0.2.10>;tag=a1", "To: <sip:bob@203.0.113.20>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {cid}", f"CSeq: {cseq}", "Contact: <sip:192.0.2.10:5060>", *extra]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ok(cid: str = "c1", to_tag: str = "b1", body: bytes = b"", status: str = "200 OK") -> bytes:
    return msg(f"SIP/2.0 {status}", cid, "1 INVITE", to_tag=to_tag, body=body)


def test_every_cap_is_a_key_and_a_bounded_name():
    assert len(CAPS) == len(dataclasses.fields(Limits)) and len(set(CAPS)) == len(CAPS)
    assert "ports-per-stream" in CAPS and "dialogs-per-source" in CAPS
    assert all(getattr(DEFAULT_LIMITS, f.name) >= 1 for f in dataclasses.fields(Limits))


# -- port counts: never enumerated --------------------------------------------------------------------

def test_port_count_beyond_the_cap_raises_before_any_flow_is_made():
    offer, answer = parse_sdp(sdp(count=65000)), parse_sdp(sdp("203.0.113.20", 12000, count=65000))
    assert offer.media[0].port_count == 65000  # the parser keeps the number, allocates nothing per port
    with pytest.raises(TooManyPorts) as err:
        flows(offer, answer)
    assert err.value.cap == "ports-per-stream" and err.value.limit == 8
    assert "port count of 65000" in str(err.value) and "max_ports_per_stream 8" in str(err.value)
    with pytest.raises(TooManyPorts):
        offer_endpoints(offer)
    # the smaller side decides (RFC 3264: the answer may narrow), and a legitimate count is enumerated
    assert len(flows(offer, parse_sdp(sdp("203.0.113.20", 12000, count=2)))) == 4
    assert len(flows(parse_sdp(sdp(count=8)), parse_sdp(sdp("203.0.113.20", 12000, count=8)))) == 16


def test_an_offer_answer_beyond_the_port_cap_is_refused_with_its_reason():
    tr = DialogTracker()
    assert tr.receive(msg(body=sdp(count=65000)), 1.0, ("192.0.2.10", 5060)) == []
    ev = tr.receive(ok(body=sdp("203.0.113.20", 12000, count=65000)), 1.1, ("203.0.113.20", 5060))
    refused = [e for e in ev if isinstance(e, MediaRefused)]
    assert len(refused) == 1 and refused[0].cap == "ports-per-stream" and "65000" in refused[0].reason
    assert not any(isinstance(e, MediaNegotiated) for e in ev)
    assert tr.dialogs["c1"].flows == ()


def test_a_reinvite_beyond_the_port_cap_takes_the_calls_flows_away_and_a_sane_one_brings_them_back():
    tr = DialogTracker()
    tr.receive(msg(body=sdp()), 1.0)
    (neg,) = [e for e in tr.receive(ok(body=sdp("203.0.113.20", 12000)), 1.1) if isinstance(e, MediaNegotiated)]
    tr.receive(msg("INVITE sip:bob@203.0.113.20 SIP/2.0", cseq="2 INVITE", to_tag="b1", body=sdp(count=65000)), 5.0)
    ev = tr.receive(msg("SIP/2.0 200 OK", cseq="2 INVITE", to_tag="b1", body=sdp("203.0.113.20", 12000, count=9)), 5.1)
    (refused,) = [e for e in ev if isinstance(e, MediaRefused)]
    assert refused.old == neg.flows and tr.dialogs["c1"].flows == ()
    tr.receive(msg("INVITE sip:bob@203.0.113.20 SIP/2.0", cseq="3 INVITE", to_tag="b1", body=sdp()), 9.0)
    ev = tr.receive(msg("SIP/2.0 200 OK", cseq="3 INVITE", to_tag="b1", body=sdp("203.0.113.20", 12000)), 9.1)
    assert [e.flows for e in ev if isinstance(e, MediaNegotiated)] == [neg.flows]


def test_an_offer_beyond_the_port_cap_is_not_keyed_ahead_of_its_answer():
    tr = DialogTracker(report_messages=True)
    ev = tr.receive(msg(body=sdp(count=65000)), 1.0, ("192.0.2.10", 5060))
    assert [e.cap for e in ev if isinstance(e, CapHit)] == ["ports-per-stream"]
    offered = [e for e in ev if type(e).__name__ == "MediaOffered"]
    assert len(offered) == 1 and offered[0].endpoints == ()


# -- messages and SDP -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data, cap", [
    (msg(extra=("X-Pad: " + "a" * 40000,)), "message-bytes"),
    (msg(extra=tuple(f"X-H{k}: v" for k in range(200))), "headers"),
    (msg(extra=("Contact: " + ", ".join(f"<sip:c{k}@192.0.2.1>" for k in range(200)),)), "headers"),
    (msg(extra=("Via: " + ", ".join(f"SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK{k}" for k in range(100)),)), "vias"),
])
def test_a_message_beyond_a_cap_is_refused_naming_it(data, cap):
    with pytest.raises(CapExceeded) as err:
        parse_message(data)
    assert err.value.cap == cap and cap.replace("-", "_") in str(err.value)
    (hit,) = DialogTracker().receive(data, 1.0, ("203.0.113.66", 5060))
    assert isinstance(hit, CapHit) and hit.cap == cap and hit.source == ("203.0.113.66", 5060)


def test_caps_are_configurable_and_a_message_within_them_parses():
    data = msg(extra=tuple(f"X-H{k}: v" for k in range(200)))
    assert parse_message(data, limits=Limits(max_headers=300)).call_id == "c1"


@pytest.mark.parametrize("body, cap", [(sdp(streams=17), "media-lines"), (sdp(lines=300), "sdp-lines")])
def test_an_sdp_beyond_a_cap_is_refused_before_it_is_parsed(body, cap):
    with pytest.raises(SdpCapExceeded) as err:
        parse_sdp(body)
    assert err.value.cap == cap and isinstance(err.value, SdpError)
    assert len(parse_sdp(sdp(streams=16)).media) == 16
    (hit,) = DialogTracker().receive(msg(body=body), 1.0)
    assert isinstance(hit, CapHit) and hit.cap == cap and hit.call_id == "c1"


@pytest.mark.parametrize("old, new", [
    (b"CSeq: 1 INVITE", "CSeq: \u00b2 INVITE"), (b"CSeq: 1 INVITE", "CSeq: " + "1" * 5000 + " INVITE"),
    (b"Content-Length: 0", "Content-Length: \u0661"), (b"Content-Length: 0", "Content-Length: " + "1" * 5000),
    (b"Content-Length: 0", "Max-Forwards: \u00b2\r\nContent-Length: 0"),
    (b"Content-Length: 0", "Max-Forwards: " + "7" * 5000 + "\r\nContent-Length: 0"),
])
def test_numbers_in_headers_are_ascii_digits_or_a_parse_error(old, new):
    """'²' passes str.isdigit and int() refuses it; int() of 5000 digits raises ValueError: neither may
    escape the parser as anything but a SipParseError."""
    data = msg().replace(old, new.encode())
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert "malformed" in str(err.value)


def test_sdp_numbers_and_addresses_in_other_scripts_are_errors():
    with pytest.raises(SdpError):
        parse_sdp(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 \xd9\xa1.2.3.4\r\nm=audio 10000 RTP/AVP 0\r\n")
    with pytest.raises(SdpError):
        parse_sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nm=audio \u00b2 RTP/AVP 0\r\n".encode())
    with pytest.raises(SipParseError):
        parse_message(msg().replace(b"192.0.2.10:5060;branch", "192.0.2.10:\u00b2;branch".encode()))


def test_the_framer_skips_a_message_beyond_the_cap_and_frames_the_next():
    fr = StreamFramer(max_message=1000)
    big = msg("MESSAGE sip:b@x SIP/2.0", cseq="1 MESSAGE").replace(b"Content-Length: 0", b"Content-Length: 5000")
    nxt = msg("BYE sip:b@x SIP/2.0", cseq="2 BYE", to_tag="b1")
    out = fr.feed(big + b"x" * 1500)
    assert [type(o) for o in out] == [CapExceeded] and out[0].cap == "message-bytes"
    assert fr.buffered == 0  # skipped as it arrives, never held
    assert fr.feed(b"x" * 3500 + nxt) == [nxt]
    out = fr.feed(b"INVITE sip:b@x SIP/2.0\r\nX: " + b"a" * 1200)  # no end of headers within the cap
    assert isinstance(out[0], CapExceeded) and fr.buffered == 0
    out = StreamFramer().feed(b"BYE sip:x SIP/2.0\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n")
    assert len(out) == 1 and isinstance(out[0], SipParseError)  # not a ValueError from int()
    assert StreamFramer().feed(b"\r\n" * 20000 + nxt) == [nxt]  # keep-alives dropped in one step


# -- what the tracker holds ---------------------------------------------------------------------------

def invite(cid: str) -> bytes:
    return msg(cid=cid, body=sdp())


def test_a_flood_from_one_source_evicts_its_own_oldest_unanswered_dialogs():
    tr = DialogTracker(limits=Limits(max_dialogs=100, max_dialogs_per_source=10))
    tr.receive(invite("legit"), 0.5, ("192.0.2.10", 5060))
    evicted = []
    for i in range(25):
        for ev in tr.receive(invite(f"flood-{i}"), 1.0 + i, ("203.0.113.66", 5060)):
            if isinstance(ev, DialogEvicted):
                evicted.append(ev.call_id)
                assert ev.cap == "dialogs-per-source" and ev.state == "trying"
    assert evicted == [f"flood-{i}" for i in range(15)]  # oldest first, the other source untouched
    assert "legit" in tr.dialogs and len(tr.dialogs) == 11


def test_an_evicted_unanswered_dialog_is_reported_ended_and_an_ended_one_goes_first():
    tr = DialogTracker(limits=Limits(max_dialogs=3))
    for cid in ("a", "b", "c"):
        tr.receive(invite(cid), 1.0)
    tr.receive(ok("b", status="486 Busy Here"), 2.0)  # b ended: kept 32 s for retransmissions
    ev = tr.receive(invite("d"), 3.0)
    assert [(e.call_id, e.state) for e in ev if isinstance(e, DialogEvicted)] == [("b", "terminated")]
    assert not any(isinstance(e, DialogTerminated) for e in ev)  # it had ended already
    ev = tr.receive(invite("e"), 4.0)
    assert [(e.call_id, e.state) for e in ev if isinstance(e, DialogEvicted)] == [("a", "trying")]
    assert [(e.call_id, e.reason) for e in ev if isinstance(e, DialogTerminated)] == [("a", "evicted")]
    assert sorted(tr.dialogs) == ["c", "d", "e"]


def test_answered_dialogs_are_never_evicted_a_new_invite_is_refused_instead():
    tr = DialogTracker(limits=Limits(max_dialogs=2))
    for cid in ("a", "b"):
        tr.receive(invite(cid), 1.0)
        tr.receive(ok(cid, body=sdp("203.0.113.20", 12000)), 1.1)
    (hit,) = tr.receive(invite("c"), 2.0, ("192.0.2.10", 5060))
    assert isinstance(hit, CapHit) and hit.cap == "dialogs" and "not tracked" in hit.detail
    assert sorted(tr.dialogs) == ["a", "b"]


def test_forks_beyond_the_cap_are_ignored():
    tr = DialogTracker(limits=Limits(max_forks=3))
    tr.receive(invite("c1"), 1.0)
    kinds = [type(e) for k in range(5) for e in tr.receive(ok(to_tag=f"f{k}", status="180 Ringing"), 1.1 + k)]
    assert kinds == [DialogEarly] * 3 + [CapHit] * 2
    assert len(tr.dialogs["c1"].legs) == 3


def test_offers_in_a_dialog_beyond_the_rate_are_ignored():
    tr = DialogTracker(limits=Limits(max_reinvites_per_second=2))
    tr.receive(invite("c1"), 1.0)
    tr.receive(ok(body=sdp("203.0.113.20", 12000)), 1.1)
    hits = []
    for k in range(5):
        re = msg(cseq=f"{k + 2} INVITE", to_tag="b1", body=sdp(port=10100 + 2 * k))
        hits += [e.cap for e in tr.receive(re, 2.0 + k * 0.1) if isinstance(e, CapHit)]
    assert hits == ["reinvites-per-second"] * 3
    re = msg(cseq="9 INVITE", to_tag="b1", body=sdp(port=10200))
    assert tr.receive(re, 3.5) == []  # a second later: allowed again


def test_transactions_remembered_per_dialog_are_reset_beyond_the_cap():
    tr = DialogTracker(limits=Limits(max_dialog_transactions=8))
    tr.receive(invite("c1"), 1.0)
    tr.receive(ok(body=sdp("203.0.113.20", 12000)), 1.1)
    caps = []
    for k in range(10):
        info = msg("INFO sip:bob@203.0.113.20 SIP/2.0", cseq=f"{k + 2} INFO", to_tag="b1")
        caps += [e.cap for e in tr.receive(info, 2.0 + k) if isinstance(e, CapHit)]
    assert caps and set(caps) == {"dialog-transactions"}
    d = tr.dialogs["c1"]
    assert len(d.seen_requests) + len(d.seen_responses) <= 8


def test_the_timer_heap_stays_bounded_under_a_flood_and_expires_in_batches():
    tr = DialogTracker(limits=Limits(max_dialogs=50, max_dialogs_per_source=50), timer_batch=8)
    for i in range(5000):
        tr.receive(invite(f"f{i}"), 1.0 + i * 0.001, ("203.0.113.66", 5060))
        assert len(tr._timers) <= 2 * len(tr.dialogs) + 64 + 2 * 32
    assert len(tr.dialogs) == 50
    assert tr.next_timer() == pytest.approx(1.0 + 4950 * 0.001 + 180.0)  # the oldest kept INVITE's Timer C
    ends = tr.handle_timer(400.0)
    assert len(ends) == 8 and tr.next_timer() <= 400.0  # the rest are still due: the loop comes back
    while (t := tr.next_timer()) is not None and t <= 400.0:
        ends += tr.handle_timer(400.0)
    assert len(ends) == 50 and all(e.reason == "timeout" for e in ends)


def test_relayed_copies_do_not_grow_what_a_dialog_remembers():
    """A request whose second Via names a branch seen already is a proxy's copy: remembered, so its own
    retransmissions are recognised, and within the cap however many copies come."""
    tr = DialogTracker(limits=Limits(max_dialog_transactions=8))
    tr.receive(invite("c1"), 1.0)
    tr.receive(ok(body=sdp("203.0.113.20", 12000)), 1.1)
    info = msg("INFO sip:bob@203.0.113.20 SIP/2.0", cseq="2 INFO", to_tag="b1", branch="z9hG4bKorig")
    tr.receive(info, 2.0)
    for k in range(50):
        relayed = info.replace(b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKorig",
                               f"Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKp{k}\r\n"
                               f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKorig".encode())
        tr.receive(relayed, 2.1 + k * 0.01)
        d = tr.dialogs["c1"]
        assert len(d.seen_requests) + len(d.seen_responses) <= 8
