import pytest

from ipsecrtp.sip.errors import SipParseError
from ipsecrtp.sip.message import StreamFramer, parse_message

INVITE = (
    b"INVITE sip:bob@198.51.100.2 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b't: "Bob, \\"B\\"" <sip:bob@198.51.100.2>\r\n'
    b"f: Alice <sip:alice@198.51.100.1;transport=udp>;tag=1928301774\r\n"
    b"i: a84b4c76e66710@pc33\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@198.51.100.1>, <sip:alice@[2001:db8::1]:5070>\r\n"
    b"Subject: folded\r\n  continuation\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n\r\nv=0\r\nextra"
)


def test_compact_headers_tags_folding_and_lists():
    m = parse_message(INVITE)
    assert m.method == "INVITE" and m.uri == "sip:bob@198.51.100.2"
    assert m.call_id == "a84b4c76e66710@pc33"
    assert m.cseq == (314159, "INVITE")
    assert m.from_tag == "1928301774"
    assert m.to_tag is None  # the quoted display name must not be read as parameters
    assert m.get("subject") == "folded continuation"
    assert m.get_all("contact") == ["<sip:alice@198.51.100.1>", "<sip:alice@[2001:db8::1]:5070>"]
    via = m.vias[0]
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "198.51.100.1", 5060, "z9hG4bK776asdhds")
    assert via.param("rport") == ""
    assert m.body == b"v=0\r"  # Content-Length cuts the datagram's trailing bytes


def test_response_and_ipv6_via():
    m = parse_message(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKx\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: x\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert m.status == 180 and not m.is_request
    assert m.vias[0].host == "2001:db8::9" and m.vias[0].port == 5061
    assert m.to_tag == "2"


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"INVITE sip:x SIP/2.0\r\n", "blank line"),
    (b"INVITE nonsense SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\n"
     b"CSeq: 1 INVITE\r\n\r\n", "scheme"),
    (b"INVITE sip:x SIP/2.0\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n", "missing via"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n",
     "does not match"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
     b"Content-Length: 50\r\n\r\nshort", "exceeds"),
    (b"SIP/2.0 999 Bad\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
     "out of range"),
    (b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h:99999\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c\r\n"
     b"CSeq: 1 INVITE\r\n\r\n", "port"),
])
def test_malformed_messages_give_a_reason(data, reason):
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert reason.lower() in str(err.value).lower()


def test_stream_framer_split_and_coalesced():
    one = INVITE[: INVITE.index(b"v=0")] + b"v=0\r"
    fr = StreamFramer()
    assert fr.feed(one[:30]) == []
    out = fr.feed(one[30:] + b"\r\n" + one + one[:10])
    assert out == [one, one]
    assert fr.feed(one[10:]) == [one]


def test_stream_framer_requires_content_length():
    fr = StreamFramer()
    out = fr.feed(b"BYE sip:x SIP/2.0\r\nCall-ID: c\r\n\r\n")
    assert len(out) == 1 and isinstance(out[0], SipParseError)
