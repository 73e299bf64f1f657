"""Crafted SIP for lab tests and benchmarks that signal a call from plain sockets in the gateways.

The controllers only watch the wire, so a test that needs exact SDP (a port count, a chosen media
port) or a call with nothing lingering afterwards sends the INVITE and its answer itself instead of
running a user agent. One builder for every such caller (the ESP-size measurement, the hostile-SDP
test, ...), so that what "a well-formed call" looks like is written once.
"""

from __future__ import annotations

import socket

from . import proc
from .lab import Lab
from .labstate import SIP_PORT


def sdp(addr: str, port: int, count: int = 0, proto: str = "RTP/AVP", extra: tuple[str, ...] = ()) -> str:
    """An audio offer/answer for ``addr:port``, PCMU, rtcp-mux (one flow pair); ``count`` > 0 writes
    the RFC 4566 port count (``m=audio PORT/COUNT``); ``proto`` the transport (``RTP/SAVP`` for
    SRTP) and ``extra`` further media-level lines (``a=crypto:...``, ``a=fingerprint:...``)."""
    ports = f"{port}/{count}" if count else str(port)
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {ports} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
            + "".join(line + "\r\n" for line in extra))


def sip(start: str, call_id: str, cseq: str, a: str, b: str, to_tag: str, body: str = "") -> bytes:
    """A request (``start`` = "INVITE sip:bob@B SIP/2.0") or response ("SIP/2.0 200 OK") of the
    dialog alice@a -> bob@b; ``to_tag`` is "" or ";tag=...". The branch is unique per call and method."""
    head = (f"{start}\r\nVia: SIP/2.0/UDP {a}:{SIP_PORT};branch=z9hG4bK{call_id}{cseq.split()[0]}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@{a}>;tag=a1\r\nTo: <sip:bob@{b}>{to_tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContact: <sip:alice@{a}>\r\n")
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode()


def udp_socket(lab: Lab, role: str, port: int = SIP_PORT) -> socket.socket:
    """A UDP socket bound to ``role``'s user-agent address inside its namespace (a socket stays in
    the namespace it was made in, so the caller may use it from any thread)."""
    addr = lab.ua_addr(role)

    def bind() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        return s

    return proc.in_netns(lab.ns(role), bind)
