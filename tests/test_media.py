import pytest

from ipsecrtp.media import Endpoint, Flow, MediaPolicy, flows
from ipsecrtp.sip.sdp import SdpError, parse_sdp


def sdp(*media: str, c: str = "c=IN IP4 198.51.100.1") -> bytes:
    return ("v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\n" + c + "\r\nt=0 0\r\n" + "".join(media)).encode()


OFFER = sdp("m=audio 10000 RTP/AVP 0\r\na=sendrecv\r\n")
ANSWER = sdp("m=audio 20000 RTP/AVP 0\r\n", c="c=IN IP4 198.51.100.2")


def test_plain_audio_gives_rtp_and_rtcp_port_plus_one():
    fs = flows(parse_sdp(OFFER), parse_sdp(ANSWER))
    assert fs == (
        Flow(0, "rtp", Endpoint("198.51.100.1", 10000), Endpoint("198.51.100.2", 20000)),
        Flow(0, "rtcp", Endpoint("198.51.100.1", 10001), Endpoint("198.51.100.2", 20001)),
    )


def test_rtcp_attribute_and_mux():
    o = parse_sdp(sdp("m=audio 10000 RTP/AVP 0\r\na=rtcp:10500 IN IP4 198.51.100.9\r\na=rtcp-mux\r\n"))
    a_nomux = parse_sdp(sdp("m=audio 20000 RTP/AVP 0\r\na=rtcp:20011\r\n", c="c=IN IP4 198.51.100.2"))
    fs = flows(o, a_nomux)
    assert fs[1] == Flow(0, "rtcp", Endpoint("198.51.100.9", 10500), Endpoint("198.51.100.2", 20011))
    a_mux = parse_sdp(sdp("m=audio 20000 RTP/AVP 0\r\na=rtcp-mux\r\n", c="c=IN IP4 198.51.100.2"))
    assert flows(o, a_mux) == (Flow(0, "rtp+rtcp", Endpoint("198.51.100.1", 10000),
                                    Endpoint("198.51.100.2", 20000)),)


def test_port_count_rejected_stream_and_hold():
    o = parse_sdp(sdp("m=audio 10000/2 RTP/AVP 0\r\n", "m=video 10100 RTP/AVP 96\r\n",
                      "m=video 10200 RTP/AVP 96\r\n"))
    a = parse_sdp(sdp("m=audio 20000/2 RTP/AVP 0\r\n", "m=video 0 RTP/AVP 96\r\n",
                      "m=video 20200 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\n", c="c=IN IP4 198.51.100.2"))
    fs = flows(o, a)
    assert [(f.kind, f.offerer.port, f.answerer.port) for f in fs] == [
        ("rtp", 10000, 20000), ("rtcp", 10001, 20001), ("rtp", 10002, 20002), ("rtcp", 10003, 20003)]


def test_key_material_never_in_repr():
    s = parse_sdp(sdp("m=audio 10000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                      "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2\r\n"))
    assert s.key_present and s.media[0].crypto_count == 1
    assert "inline" not in repr(s)


@pytest.mark.parametrize("body, reason", [
    (b"x=0\r\n", "v="),
    (sdp("m=audio 99999 RTP/AVP 0\r\n"), "port"),
    (sdp("m=audio 10000 RTP/AVP 0\r\n", c="c=IN IP4 not-an-ip"), "not an IP"),
    (b"v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n", "o="),
])
def test_bad_sdp(body, reason):
    with pytest.raises(SdpError) as err:
        parse_sdp(body)
    assert reason in str(err.value)


def test_policy_refuses_hostile_flows():
    pol = MediaPolicy.build(["198.51.100.1/32"], ["198.51.100.2/32"], (10000, 20001))
    good = Flow(0, "rtp", Endpoint("198.51.100.1", 10000), Endpoint("198.51.100.2", 20000))
    assert pol.check(good) is None
    assert pol.orient(good) == (Endpoint("198.51.100.1", 10000), Endpoint("198.51.100.2", 20000))
    assert "neither" in pol.check(Flow(0, "rtp", Endpoint("198.51.100.1", 10000), Endpoint("192.0.2.7", 20000)))
    assert "RTP range" in pol.check(Flow(0, "rtp", Endpoint("198.51.100.1", 5060), Endpoint("198.51.100.2", 20000)))
    assert "does not join" in pol.check(Flow(0, "rtp", Endpoint("198.51.100.1", 10000),
                                             Endpoint("198.51.100.1", 10002)))
