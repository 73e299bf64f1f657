"""The input classes of ``ipsecrtp bench hostile``: IP packets as a gateway's WAN capture would see
them, built here (no lab), each class what an attacker on the signalling path could send.

A class is a function of a count giving packets: (bytes of an IPv4 packet, whether it is hostile).
Legitimate calls (:func:`legit_call`) are interleaved by the bench itself. Everything uses
documentation addresses: 192.0.2.0/24 behind this gateway, 203.0.113.0/24 behind its peer.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import sys
from collections.abc import Callable, Iterator

from .config import ControllerConfig
from .selectors import PeerConfig
from .sip.limits import DEFAULT_LIMITS, Limits

PHONE_A, PHONE_B, ATTACKER = "192.0.2.10", "203.0.113.20", "203.0.113.66"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout (tests/, fuzz/)


def gateway_config(strategy: str = "child-per-call", limits: Limits = DEFAULT_LIMITS) -> ControllerConfig:
    """gw-a: phones in 192.0.2.0/24, its peer's in 203.0.113.0/24 (the inputs' addresses)."""
    peer = PeerConfig("gw-b", "198.51.100.1", "198.51.100.2", ("192.0.2.0/24",), ("203.0.113.0/24",),
                      b"k" * 32, rtp_ports=(10000, 19999), strategy=strategy)
    return ControllerConfig(("wan0",), frozenset({5060}), "unix:///nonexistent", (peer,), 30.0, "kernel-libipsec",
                            name="gw-a", limits=limits)


def ipv4(proto: int, payload: bytes, src: str, dst: str) -> bytes:
    s, d = (bytes(int(x) for x in a.split(".")) for a in (src, dst))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, s, d) + payload


def udp(src: str, dst: str, data: bytes, sport: int = 5060, dport: int = 5060) -> bytes:
    return ipv4(17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, src, dst)


def tcp(src: str, dst: str, sport: int, seq: int, data: bytes, flags: int = 0x18) -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, 5060, seq, 0, 5 << 4, flags, 65535, 0, 0)
    return ipv4(6, head + data, src, dst)


def sdp(addr: str, port: int, count: int = 1, streams: int = 1, lines: int = 0) -> bytes:
    """An audio offer or answer; ``count`` a port count (RFC 8866 §5.14), ``streams`` m= lines, ``lines``
    extra attribute lines."""
    ports = f"{port}/{count}" if count != 1 else str(port)
    media = "".join(f"m=audio {ports if k == 0 else port + 2 * k} RTP/AVP 0\r\n" for k in range(streams))
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n{media}"
            + "a=sendrecv\r\n" * lines).encode()


def message(start: str, cid: str, cseq: str, *, src: str = PHONE_A, to_tag: str | None = None,
            branch: str = "", vias: int = 1, via_lines: bool = True, extra: tuple[str, ...] = (),
            body: bytes = b"", by_callee: bool = False) -> bytes:
    """One SIP message's bytes: a request of the caller's (``start`` a request line) or a response."""
    br = branch or f"z9hG4bK-{cid}-{cseq.split()[0]}"
    sent_by = PHONE_B if by_callee else PHONE_A
    via_values = [f"SIP/2.0/UDP {sent_by}:5060;branch={br}"] + \
        [f"SIP/2.0/UDP 198.51.100.{k % 250 + 1}:5060;branch=z9hG4bK{k}" for k in range(1, vias)]
    via = [f"Via: {v}" for v in via_values] if via_lines else ["Via: " + ", ".join(via_values)]
    lines = [start, *via, "From: <sip:alice@192.0.2.10>;tag=a1",
             "To: <sip:bob@203.0.113.20>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {cid}", f"CSeq: {cseq}", f"Contact: <sip:{src}:5060>", *extra]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def invite(cid: str, body: bytes | None = None, src: str = PHONE_A, **kw) -> bytes:
    data = message("INVITE sip:bob@203.0.113.20 SIP/2.0", cid, "1 INVITE", src=src,
                   body=sdp(PHONE_A, 10000) if body is None else body, **kw)
    return udp(src, PHONE_B, data)


def response(cid: str, status: int, cseq: str = "1 INVITE", to_tag: str = "b1", body: bytes = b"",
             src: str = PHONE_B, **kw) -> bytes:
    reason = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK"}.get(status, "Failed")
    return udp(src, PHONE_A, message(f"SIP/2.0 {status} {reason}", cid, cseq, to_tag=to_tag, body=body, **kw))


def legit_call(i: int, prefix: str = "legit") -> list[bytes]:
    """A call's messages: INVITE, 180, 200 with the answer (the keying decision), ACK, BYE, 200."""
    cid, a, b = f"{prefix}-{i}", 10000 + (4 * i) % 9000, 11000 + (4 * i) % 8000
    ack = message("ACK sip:bob@203.0.113.20 SIP/2.0", cid, "1 ACK", to_tag="b1", branch=f"z9hG4bK-{cid}-ack")
    bye = message("BYE sip:bob@203.0.113.20 SIP/2.0", cid, "2 BYE", to_tag="b1")
    return [invite(cid, sdp(PHONE_A, a)), response(cid, 180), response(cid, 200, body=sdp(PHONE_B, b)),
            udp(PHONE_A, PHONE_B, ack), udp(PHONE_A, PHONE_B, bye), response(cid, 200, "2 BYE")]


# -- the classes -----------------------------------------------------------------------------------

Packets = Iterator[bytes]


def normal(n: int) -> Packets:
    """Legitimate calls and nothing else: the reference every other class is compared with."""
    for i in range(n // 6 + 1):
        yield from legit_call(i, "call")


def ports_65000(n: int) -> Packets:
    """issue 19's finding: m=audio 10100/65000 in the offer and in the answer."""
    for i in range(n // 2):
        cid = f"ports-{i}"
        yield invite(cid, sdp(PHONE_A, 10100, count=65000))
        yield response(cid, 200, body=sdp(PHONE_B, 10200, count=65000))


def m_lines_1000(n: int) -> Packets:
    for i in range(n):
        yield invite(f"mlines-{i}", sdp(PHONE_A, 10000, streams=1000))


def sdp_lines_2000(n: int) -> Packets:
    for i in range(n):
        yield invite(f"sdplines-{i}", sdp(PHONE_A, 10000, lines=2000))


def vias_500(n: int) -> Packets:
    """500 Vias, half the messages one per line, half comma-joined on one line."""
    for i in range(n):
        yield invite(f"vias-{i}", vias=500, via_lines=bool(i % 2))


def huge_headers(n: int) -> Packets:
    """In turn: one header of 30 KB (within the message cap: parsed), 1000 short headers and 500 quoted
    Contacts in one header (beyond the header cap), one header of 40 KB (beyond the message cap)."""
    kinds = (["X-Big: " + "a" * 30000], [f"X-H{k}: v" for k in range(1000)],
             ["Contact: " + ",".join(f'"n{k}" <sip:x{k}@192.0.2.1>' for k in range(500))],
             ["X-Huge: " + "b" * 40000])
    for i in range(n):
        yield invite(f"headers-{i}", extra=tuple(kinds[i % len(kinds)]))


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    if spec is None or spec.loader is None or not os.path.exists(os.path.join(ROOT, path)):
        raise FileNotFoundError(f"{path} (the bench needs the checkout's tests/ and fuzz/)")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # registered first: its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def torture(n: int) -> Packets:
    """The RFC 4475 messages of tests/sip/torture.py, valid and invalid, each Call-ID made unique per round."""
    mod = _load("tests/sip/torture.py", "torture")
    cases = [m for m, _ in mod.VALID.values()] + [m for m, _ in mod.INVALID.values()]
    for i in range(n):
        data = cases[i % len(cases)]
        yield udp(ATTACKER, PHONE_A, data.replace(b"Call-ID: ", f"Call-ID: r{i // len(cases)}-".encode(), 1))


def fuzz(n: int) -> Packets:
    """Mutants of real captured messages and the RFC 4475 ones (fuzz/sip.py's mutator and corpus)."""
    mod = _load("fuzz/sip.py", "fuzz_sip")
    rng, seeds = random.Random(19), mod.corpus()
    for _ in range(n):
        yield udp(ATTACKER, PHONE_A, mod.mutate(rng, rng.choice(seeds), seeds))


def invite_flood(n: int) -> Packets:
    """Never-answered INVITEs from one source, well beyond the dialog caps (evictions)."""
    for i in range(n):
        yield invite(f"flood-{i}", src=ATTACKER)


def forks(n: int) -> Packets:
    """One INVITE answered by ever more forks (a 183 with SDP from each new To tag)."""
    for i in range(n):
        if i % 200 == 0:
            yield invite(f"forks-{i // 200}")
        yield response(f"forks-{i // 200}", 183, to_tag=f"f{i}", body=sdp(PHONE_B, 12000))


def reinvites(n: int) -> Packets:
    """An answered call, then re-INVITEs changing its media as fast as they come (each would re-key)."""
    cid = "reinvites"
    yield invite(cid)
    yield response(cid, 200, body=sdp(PHONE_B, 12000))
    for i in range(n):
        data = message("INVITE sip:bob@203.0.113.20 SIP/2.0", cid, f"{i + 2} INVITE", to_tag="b1",
                       body=sdp(PHONE_A, 10000 + 2 * (i % 4000)))
        yield udp(PHONE_A, PHONE_B, data)


def tcp_connections(n: int) -> Packets:
    """Connections beyond the cap, in turn: a SYN; half a message (kept until it completes); a 30 KB
    segment far ahead of the stream (kept for the gap to fill: the bytes cap); a 1 MB message
    announced by its Content-Length (skipped as it arrives, never buffered)."""
    half = message("INVITE sip:bob@203.0.113.20 SIP/2.0", "tcp", "1 INVITE", body=sdp(PHONE_A, 10000))[:-60]
    big = message("MESSAGE sip:bob@203.0.113.20 SIP/2.0", "big", "1 MESSAGE", extra=("Content-Type: text/plain",))
    big = big.replace(b"Content-Length: 0", b"Content-Length: 1000000") + b"x" * 1000
    for i in range(n):
        src, port = f"203.0.113.{100 + i % 100}", 1024 + i
        kind = i % 4
        if kind == 0:
            yield tcp(src, PHONE_A, port, 0, b"", flags=0x02)
        elif kind == 1:
            yield tcp(src, PHONE_A, port, 1, half)
        elif kind == 2:
            yield tcp(src, PHONE_A, port, 1, b"\r\n")  # the stream's start, then a segment far beyond it
            yield tcp(src, PHONE_A, port, 100000, b"y" * 30000)
        else:
            yield tcp(src, PHONE_A, port, 1, big)


CLASSES: dict[str, Callable[[int], Packets]] = {
    "normal": normal, "ports-65000": ports_65000, "m-lines-1000": m_lines_1000, "sdp-lines-2000": sdp_lines_2000,
    "vias-500": vias_500, "huge-headers": huge_headers, "torture-rfc4475": torture, "fuzz-mutants": fuzz,
    "invite-flood": invite_flood, "forks": forks, "reinvites": reinvites, "tcp-connections": tcp_connections,
}
