"""Builders for hand-written SIP sequences (the scenario tests feed them in wire order)."""

from __future__ import annotations

A, B = "198.51.100.1", "198.51.100.2"


def msg(start: str, cseq: str, *, from_tag: str | None = "ft", to_tag: str | None = None, branch: str = "z9hG4bK1",
        body: bytes = b"", cid: str = "call1", extra: tuple[str, ...] = (), ctype: str = "application/sdp",
        reverse: bool = False) -> bytes:
    """A message of call ``cid``; ``reverse`` swaps From/To for requests the callee sends."""
    frm = f"<sip:alice@{A}>" + (f";tag={from_tag}" if from_tag else "")
    to = f"<sip:bob@{B}>" + (f";tag={to_tag}" if to_tag else "")
    if reverse:
        frm, to = f"<sip:bob@{B}>;tag={from_tag}", f"<sip:alice@{A}>;tag={to_tag}"
    lines = [start, f"Via: SIP/2.0/UDP {A}:5060;branch={branch}", f"From: {frm}", f"To: {to}",
             f"Call-ID: {cid}", f"CSeq: {cseq}", *extra]
    if body:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sdp(addr: str, *media: str, version: int = 1) -> bytes:
    """An SDP body; each ``media`` is an m= line (without ``m=``) optionally followed by attribute lines
    separated by '|', e.g. ``"audio 10000 RTP/AVP 0|a=rtcp-mux"``."""
    fam = "IP6" if ":" in addr else "IP4"
    out = ["v=0", f"o=- 1 {version} IN {fam} {addr}", "s=-", f"c=IN {fam} {addr}", "t=0 0"]
    for m in media or ("audio 10000 RTP/AVP 0",):
        first, *attrs = m.split("|")
        out.append("m=" + first)
        out.extend(attrs)
    return ("\r\n".join(out) + "\r\n").encode()


def feed(tracker, *items, source=None):
    events = []
    for t, data in items:
        events.extend(tracker.receive(data, t, source))
    return events


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]
