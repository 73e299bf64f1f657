import struct

from ipsecrtp.packet import TCP, UDP, SipExtractor, decode_ip
from ipsecrtp.sip.dialog import DialogTracker
from ipsecrtp.sip.events import MediaNegotiated


def ipv4(proto: int, payload: bytes, src="198.51.100.1", dst="198.51.100.2") -> bytes:
    s = bytes(int(x) for x in src.split("."))
    d = bytes(int(x) for x in dst.split("."))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, s, d) + payload


def udp(sport, dport, data):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp(sport, dport, seq, data, flags=0x18):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + data


def sip(start, cseq, body=b"", to_tag=""):
    to = "<sip:b@198.51.100.2>" + (f";tag={to_tag}" if to_tag else "")
    h = (f"{start}\r\nVia: SIP/2.0/TCP 198.51.100.1;branch=z9hG4bKt\r\nFrom: <sip:a@198.51.100.1>;tag=f\r\n"
         f"To: {to}\r\nCall-ID: tcp1\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode()
    return h + body


def sdp(addr, port):
    return f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n".encode()


def test_decode_udp_and_tcp():
    p = decode_ip(ipv4(UDP, udp(5060, 5060, b"hello")))
    assert (p.proto, p.src, p.dst, p.sport, p.dport, p.payload) == (UDP, "198.51.100.1", "198.51.100.2", 5060,
                                                                     5060, b"hello")
    p = decode_ip(ipv4(TCP, tcp(5060, 40000, 7, b"x")))
    assert (p.proto, p.seq, p.payload) == (TCP, 7, b"x")
    assert decode_ip(b"\x45") is None


def test_tcp_sip_split_coalesced_reordered_and_retransmitted():
    invite = sip("INVITE sip:b@198.51.100.2 SIP/2.0", "1 INVITE", sdp("198.51.100.1", 10000))
    ok = sip("SIP/2.0 200 OK", "1 INVITE", sdp("198.51.100.2", 10002), to_tag="t")
    ex, tr = SipExtractor({5060}), DialogTracker()
    events = []

    def seg(sport, dport, seq, data, t, flags=0x18):
        for item, stream in ex.feed(decode_ip(ipv4(TCP, tcp(sport, dport, seq, data, flags)))):
            events.extend(tr.receive(item, t, stream=stream))

    seg(40000, 5060, 999, b"", 0.0, flags=0x02)  # SYN: the stream starts at 1000

    # caller -> proxy: INVITE in two segments delivered out of order, the first one retransmitted
    seg(40000, 5060, 1000 + 50, invite[50:], 0.0)
    seg(40000, 5060, 1000, invite[:50], 0.1)
    seg(40000, 5060, 1000, invite[:50], 0.2)
    # proxy -> caller: a keep-alive CRLF and the 200 in one segment
    seg(5060, 40000, 5000, b"\r\n" + ok, 1.0)
    neg = [e for e in events if isinstance(e, MediaNegotiated)]
    assert len(neg) == 1 and neg[0].time == 1.0
    assert neg[0].flows[0].offerer.port == 10000 and neg[0].flows[0].answerer.port == 10002
