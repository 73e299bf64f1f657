"""The gateway core's NAT decisions, fed packets as a capture would (the actions are collected,
none carried out): a phone behind a NAT keyed where its media really is, latching, re-keying
with a port a NAT chose, and refusals. The lab tests show the same on real calls."""

import pytest

from ipsecrtp.packet import UDP
from ipsecrtp.selectors import PeerConfig

from ..test_packet import ipv4, udp
from .harness import Harness, config

PHONE, NAT, FAR = "192.0.2.130", "192.0.2.20", "203.0.113.10"


def controller(name: str, translate: bool = True) -> tuple[Harness, Harness]:
    local, remote = ("192.0.2.0/25", "203.0.113.0/24") if name == "gwa" else ("203.0.113.0/24", "192.0.2.0/25")
    peer = PeerConfig("gwb" if name == "gwa" else "gwa", "198.51.100.1", "198.51.100.2", (local,), (remote,),
                      b"x" * 32, rtp_ports=(10000, 10199))
    cfg = config((peer,), name=name, nat_private=("192.0.2.128/25",), nat_translate=translate,
                 media_interfaces=("lan0",))
    h = Harness(cfg, backend="none (dry run)")
    return h, h


def events(out: Harness, event: str) -> list[dict]:
    return out.logs(event)


def sip_packet(src: str, dst: str, start: str, cseq: str, body: bytes, to_tag: str = "", via: str = PHONE) -> bytes:
    to = f"<sip:bob@{FAR}>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{start}\r\nVia: SIP/2.0/UDP {via}:5060;branch=z9hG4bKn1;rport\r\nFrom: <sip:alice@{via}>;tag=a1\r\n"
            f"To: {to}\r\nCall-ID: natcall\r\nCSeq: {cseq}\r\nContact: <sip:alice@{via}:5060>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return ipv4(UDP, udp(5060, 5060, head + body), src, dst)


def sdp(addr: str, port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\n").encode()


def answered_call(name: str, translate: bool = True) -> tuple[Harness, Harness]:
    """The INVITE of the phone behind the NAT (no ALG: its SDP names 192.0.2.130:10000), as both
    gateways' WAN sees it, and the far phone's 200 (203.0.113.10:10100)."""
    c, out = controller(name, translate)
    c.on_packet(1.0, sip_packet(NAT, FAR, f"INVITE sip:bob@{FAR} SIP/2.0", "1 INVITE", sdp(PHONE, 10000)))
    c.on_packet(1.2, sip_packet(FAR, NAT, "SIP/2.0 200 OK", "1 INVITE", sdp(FAR, 10100), to_tag="b1"))
    return c, out


def rtp(src: str, sport: int, dst: str, dport: int) -> bytes:
    return ipv4(UDP, udp(sport, dport, b"\x80" + bytes(11)), src, dst)


@pytest.mark.parametrize("name", ["gwa", "gwb"])
def test_media_a_nat_hid_is_keyed_at_the_nat_address(name):
    c, out = answered_call(name)
    (k,) = events(out, "keying")
    assert [f["offerer"] for f in k["flows"]] == [f"{NAT}:10000", f"{NAT}:10001"]  # RTP and RTCP
    tests = {f["test"] for e in events(out, "nat-sip") for f in e["findings"]}
    assert {"via-host-vs-source", "contact-private", "sdp-private", "sdp-vs-source"} <= tests


def test_latching_agrees_when_the_nat_kept_the_port():
    c, out = answered_call("gwa")
    c.on_packet(1.3, rtp(NAT, 10000, FAR, 10100), media_only=True)
    c.on_packet(1.31, rtp(NAT, 10000, FAR, 10100), media_only=True)  # reported once
    (m,) = events(out, "nat-media")
    assert m["consistent"] and m["sdp"] == f"{PHONE}:10000" and m["seen"] == f"{NAT}:10000"
    assert [f["test"] for f in m["findings"]] == ["media-latching"]


def test_a_port_the_nat_chose_is_latched_and_the_call_rekeyed_once_for_rtp_and_rtcp():
    c, out = answered_call("gwa")
    c.on_packet(1.3, rtp(NAT, 31000, FAR, 10100), media_only=True)
    c.on_packet(1.31, rtp(NAT, 31001, FAR, 10101), media_only=True)
    wrong = events(out, "nat-media")
    assert [m["relatched"] for m in wrong] == [f"{NAT}:31000", f"{NAT}:31001"]
    assert all(not m["consistent"] and "re-keying" in m["reason"] for m in wrong)
    c.handle_due(1.35)  # the responder waits 0.1 s for the RTCP
    assert len(events(out, "keying")) == 1
    c.handle_due(1.5)
    first, again = events(out, "keying")
    assert again["trigger"] == "media latching"
    assert [f["offerer"] for f in again["flows"]] == [f"{NAT}:31000", f"{NAT}:31001"]  # outside 10000-10199
    c.on_packet(1.6, rtp(NAT, 31000, FAR, 10100), media_only=True)
    assert events(out, "nat-media")[-1]["consistent"]


def test_the_far_gateway_latches_the_port_from_clear_media_on_its_wan():
    c, out = answered_call("gwb")
    c.on_packet(1.3, rtp(NAT, 31000, FAR, 10100))  # not yet matching any SA: in clear on the WAN
    (m,) = events(out, "nat-media")
    assert m["far"] and m["relatched"] == f"{NAT}:31000"
    c.handle_due(1.9)
    assert [f["offerer"] for f in events(out, "keying")[-1]["flows"]] == [f"{NAT}:31000", f"{NAT}:10001"]


def test_media_from_another_address_is_not_rekeyed():
    c, out = answered_call("gwa")
    c.on_packet(1.3, rtp("192.0.2.99", 10000, FAR, 10100), media_only=True)
    (m,) = events(out, "nat-media")
    assert not m["consistent"] and "stays outside the SA" in m["reason"] and "relatched" not in m
    c.handle_due(5.0)
    assert len(events(out, "keying")) == 1


def test_refused_with_the_reason_when_translation_is_off():
    c, out = answered_call("gwa", translate=False)
    (r,) = events(out, "refused")
    assert f"{PHONE} is a phone's private address behind a NAT" in r["reason"] and NAT in r["reason"]
    assert events(out, "keying") == []
    c.on_packet(1.3, rtp(NAT, 10000, FAR, 10100), media_only=True)
    assert events(out, "nat-media") == []  # nothing keyed, nothing to latch
