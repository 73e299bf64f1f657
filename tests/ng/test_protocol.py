"""The ng wire format (ipsecrtp/ng/protocol.py): what Kamailio's rtpengine module sends is read,
everything else is an NgError naming what is wrong (with the cookie to reply to, when there is one)."""

from __future__ import annotations

import fastbencode
import pytest

from ipsecrtp.ng.protocol import MAX_COOKIE, NgError, bencodable, encode_reply, error_reply, parse, split

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 10000 RTP/AVP 0\r\n"


def datagram(cookie: bytes = b"5_1234", **fields) -> bytes:
    return cookie + b" " + fastbencode.bencode({k.replace("_", "-").encode(): v for k, v in fields.items()})


def test_ping():
    cookie, req = parse(datagram(command=b"ping"))
    assert cookie == b"5_1234" and req.command == "ping"


def test_an_offer_as_kamailio_sends_it_with_the_flags_it_adds_accepted_and_ignored():
    data = datagram(command=b"offer", call_id=b"abc@192.0.2.10", from_tag=b"a1", sdp=SDP,
                    flags=[b"trust-address"], replace=[b"origin", b"session-connection"],
                    received_from=[b"IP4", b"192.0.2.10"], direction=[b"external", b"internal"],
                    via_branch=b"z9hG4bK.1", ICE=b"remove", transport_protocol=b"RTP/AVP")
    cookie, req = parse(data, ("127.0.0.1", 5060))
    assert (req.command, req.call_id, req.from_tag, req.to_tag, req.sdp) == ("offer", "abc@192.0.2.10", "a1", "", SDP)
    assert req.source == ("127.0.0.1", 5060)


def test_an_answer_needs_its_to_tag():
    _, req = parse(datagram(command=b"answer", call_id=b"c", from_tag=b"a", to_tag=b"b", sdp=SDP))
    assert req.to_tag == "b"
    with pytest.raises(NgError, match="missing to-tag") as e:
        parse(datagram(command=b"answer", call_id=b"c", from_tag=b"a", sdp=SDP))
    assert e.value.cookie == b"5_1234"


@pytest.mark.parametrize("data", [b"", b"nocookie", b" d7:command4:pinge", b"x" * (MAX_COOKIE + 1) + b" de",
                                  b"\x00\x01 d7:command4:pinge"])
def test_without_a_cookie_there_is_nothing_to_reply_to(data):
    with pytest.raises(NgError) as e:
        split(data) if data else parse(data)
    assert e.value.cookie is None


@pytest.mark.parametrize(("body", "reason"), [
    (b"garbage", "not bencode"),
    (b"d7:command4:pinge-junk", "not bencode"),
    (b"li1ee", "not a bencoded dictionary"),
    (b"de", "missing command"),
    (b"d7:commandi1ee", "missing command"),
    (b"d7:command6:reboote", "unknown command"),
    (b"d7:call-id1:c7:command6:delete8:from-tagi1ee", "from-tag must be a string"),
    (b"d7:call-id2:\xff\xfe7:command5:querye", "not UTF-8"),
    (b"d7:call-id2:a\n7:command5:querye", "control characters"),
    (b"d7:call-id1:c7:command5:offer8:from-tag1:a3:sdp0:e", "sdp must be"),
    (b"d7:command4:list5:limiti-1ee", "limit"),
])
def test_malformed_commands_are_named_errors_with_the_cookie(body, reason):
    with pytest.raises(NgError, match=reason) as e:
        parse(b"ck " + body)
    assert e.value.cookie == b"ck"


def test_replies_are_bencoded_with_the_same_cookie():
    out = encode_reply(b"ck", {"result": "ok", "sdp": SDP, "n": 3, "t": 1.5, "none": None, "yes": True,
                               "l": [1, None, "x"], "d": {"a": None, "b": "c"}})
    cookie, _, body = out.partition(b" ")
    assert cookie == b"ck"
    assert fastbencode.bdecode(body) == {b"result": b"ok", b"sdp": SDP, b"n": 3, b"t": b"1.5", b"yes": 1,
                                         b"l": [1, b"x"], b"d": {b"b": b"c"}}
    err = fastbencode.bdecode(error_reply(b"ck", "unknown call-id").partition(b" ")[2])
    assert err == {b"result": b"error", b"error-reason": b"unknown call-id"}


def test_bencodable_keeps_bytes_and_ints():
    assert bencodable({"a": b"\xff", "b": 0}) == {b"a": b"\xff", b"b": 0}


def test_keys_in_the_order_kamailio_writes_them_are_read():
    """Kamailio 5.6's rtpengine module does not sort its keys (seen in the lab: fastbencode alone
    refused every offer with "dict keys disordered")."""
    body = (b"d3:sdp" + b"%d:" % len(SDP) + SDP + b"3:ICE6:remove7:call-id1:c8:from-tag1:a"
            b"5:flagsl13:trust-addresse7:command5:offere")
    _, req = parse(b"ck " + body)
    assert (req.command, req.call_id, req.from_tag, req.sdp) == ("offer", "c", "a", SDP)


def test_a_duplicate_key_is_still_refused():
    with pytest.raises(NgError, match="not bencode"):
        parse(b"ck d7:command4:ping7:command5:querye")


def shuffled_encoding(value, rnd) -> bytes:
    """bencode with every dictionary's keys in a random order (as a proxy may write them)."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return b"d" + b"".join(fastbencode.bencode(k) + shuffled_encoding(v, rnd) for k, v in items) + b"e"
    if isinstance(value, list):
        return b"l" + b"".join(shuffled_encoding(v, rnd) for v in value) + b"e"
    return fastbencode.bencode(value)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

values = st.recursive(st.integers() | st.binary(max_size=12),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=6), inner,
                                                                                  max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(values, st.randoms(use_true_random=False))
def test_canonical_order_gives_back_the_canonical_encoding(value, rnd):
    from ipsecrtp.ng.order import canonical

    assert canonical(shuffled_encoding(value, rnd)) == fastbencode.bencode(value)
