"""sdp.end_to_end_srtp: when both sides of an offer/answer protect every media stream with SRTP."""

from __future__ import annotations

import pytest

from ipsecrtp.sip.sdp import end_to_end_srtp, parse_sdp

CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
FP = "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3B:E3:65:F5:1B:B1"


def sdp(*streams: str, session: str = "", addr: str = "192.0.2.10") -> bytes:
    head = f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
    head += session + "\r\n" if session else ""
    return (head + "".join(s + "\r\n" for s in streams)).encode()


AUDIO_SDES = f"m=audio 10000 RTP/SAVP 0\r\n{CRYPTO}"
AUDIO_SAVPF = f"m=audio 10000 RTP/SAVPF 0\r\n{CRYPTO}"
AUDIO_DTLS = f"m=audio 10000 UDP/TLS/RTP/SAVP 0\r\n{FP}"
AUDIO_PLAIN = "m=audio 10000 RTP/AVP 0"
VIDEO_SDES = f"m=video 10002 RTP/SAVP 96\r\n{CRYPTO}"
VIDEO_PLAIN = "m=video 10002 RTP/AVP 96"
VIDEO_REJECTED = "m=video 0 RTP/AVP 96"


@pytest.mark.parametrize(("offer", "answer", "want"), [
    ((AUDIO_SDES,), (AUDIO_SDES,), "sdes"),
    ((AUDIO_SAVPF,), (AUDIO_SAVPF,), "sdes"),
    ((AUDIO_DTLS,), (AUDIO_DTLS,), "dtls"),
    ((AUDIO_SDES,), (AUDIO_PLAIN,), ""),
    ((AUDIO_PLAIN,), (AUDIO_PLAIN,), ""),
    ((AUDIO_SDES, VIDEO_SDES), (AUDIO_SDES, VIDEO_SDES), "sdes"),
    ((AUDIO_SDES, VIDEO_PLAIN), (AUDIO_SDES, VIDEO_PLAIN), ""),  # the video would cross in clear
    ((AUDIO_SDES, VIDEO_PLAIN), (AUDIO_SDES, VIDEO_REJECTED), "sdes"),  # rejected: carries nothing
    ((AUDIO_DTLS, VIDEO_SDES), (AUDIO_DTLS, VIDEO_SDES), "sdes"),  # mixed: named by the weaker keying
    (("m=audio 10000 RTP/SAVP 0",), ("m=audio 10000 RTP/SAVP 0",), ""),  # nothing keys it
    (("m=audio 10000 UDP/TLS/RTP/SAVP 0",), ("m=audio 10000 UDP/TLS/RTP/SAVP 0",), ""),
])
def test_end_to_end_srtp(offer, answer, want):
    assert end_to_end_srtp(parse_sdp(sdp(*offer)), parse_sdp(sdp(*answer, addr="203.0.113.20"))) == want


def test_a_session_level_fingerprint_covers_every_stream():
    offer = parse_sdp(sdp("m=audio 10000 UDP/TLS/RTP/SAVP 0", session=FP))
    assert offer.media[0].fingerprint and offer.media[0].srtp == "dtls"
    assert end_to_end_srtp(offer, offer) == "dtls"


def test_k_lines_are_not_srtp_keys_and_keys_never_print():
    d = parse_sdp(sdp("m=audio 10000 RTP/SAVP 0\r\nk=clear:secret-key"))
    assert d.media[0].srtp == "" and d.key_present
    d = parse_sdp(sdp(AUDIO_SDES))
    assert d.media[0].srtp == "sdes" and "inline" not in repr(d)
