"""SIP message parsing (RFC 3261 §7, §20, §25): bytes in, an immutable message out.

Pure: no sockets, no clock. A message that cannot be read raises :class:`SipParseError`
with a one-line reason; the caller decides whether that matters. The grammar of single header
values (lists, name-addr, URIs, Via) is :mod:`.headers`; this module reads the message around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .headers import Via, check_name_addr, check_request_uri, header_param, parse_via, split_commas

# RFC 3261 §7.3.3 compact forms, plus the ones registered since (RFC 3262, 3515, 3892, 4028, ...).
COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose values may be comma-joined lists (RFC 3261 §7.3.1). From/To/Call-ID/CSeq never are.
_LIST_HEADERS = frozenset(
    {"via", "contact", "route", "record-route", "allow", "supported", "require", "proxy-require",
     "unsupported", "accept", "accept-encoding", "accept-language", "allow-events", "content-encoding"}
)

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_HEADER_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:(.*)")
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/(\d+\.\d+)$")
_STATUS_LINE = re.compile(r"^SIP/(\d+\.\d+) (\d{3})(?: (.*))?$")


@dataclass(frozen=True)
class SipMessage:
    method: str | None  # request method, None for a response
    uri: str | None
    status: int | None  # response code, None for a request
    reason: str | None
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # lower-case full names, in order
    body: bytes = field(repr=False)
    # read once at parse time: the dialog layer asks for these on every message
    call_id: str = ""
    cseq: tuple[int, str] = (0, "")
    from_tag: str | None = None
    to_tag: str | None = None
    vias: tuple[Via, ...] = field(default=(), repr=False)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, with comma-joined list headers split (quotes and <> respected)."""
        name = name.lower()
        out: list[str] = []
        for k, v in self.headers:
            if k == name:
                out.extend(split_commas(v) if name in _LIST_HEADERS else [v])
        return out

    @property
    def content_type(self) -> str:
        return (self.get("content-type") or "").split(";")[0].strip().lower()

    def sdp_body(self) -> bytes | None:
        """The SDP carried by this message, also inside a multipart body (RFC 5621)."""
        if not self.body:
            return None
        ctype = self.content_type
        if ctype == "application/sdp":
            return self.body
        if ctype.startswith("multipart/"):
            boundary = _boundary(self.get("content-type") or "")
            if boundary:
                return _sdp_from_multipart(self.body, boundary)
        return None

    def summary(self) -> str:
        if self.is_request:
            return f"{self.method} {self.uri}"
        return f"{self.status} {self.reason} ({self.cseq[1] if self.get('cseq') else '?'})"


def _boundary(content_type: str) -> str | None:
    """The multipart boundary (RFC 2046 §5.1.1), quoted or not; parse_message has validated it."""
    for part in content_type.split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "boundary":
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            return v or None
    return None


_CTYPE = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+/[A-Za-z0-9.!%*_+`'~-]+$")


def _sdp_from_multipart(body: bytes, boundary: str) -> bytes | None:
    delim = b"--" + boundary.encode()
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        part = part.lstrip(b"\r\n")
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for line in head.split(b"\r\n"):
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-type" and v.split(b";")[0].strip().lower() == b"application/sdp":
                return content.rstrip(b"\r\n")
    return None


def find_header_end(data: bytes) -> int:
    """Index just past the blank line ending the header block, or -1."""
    i = data.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    i = data.find(b"\n\n")  # bare LF is tolerated on input (RFC 3261 §7.5 robustness)
    return i + 2 if i >= 0 else -1


_SINGLE = frozenset(("call-id", "cseq", "from", "to", "content-length", "max-forwards", "content-type"))
_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                   r"\d{4} \d{2}:\d{2}:\d{2} GMT$")


_HEADERS_ALL = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:(.*)$", re.MULTILINE)


def _read_headers(rest: str) -> list[tuple[str, str]]:
    """(lower-case full name, value) per header line; ``rest`` is the header block after the start line."""
    if "\n " not in rest and "\n\t" not in rest and rest[:1] not in (" ", "\t"):
        # no folding: one regex pass in C, then a count to prove every line was a header line
        pairs = _HEADERS_ALL.findall(rest)
        if len(pairs) == rest.count("\n") - 1:
            return [(COMPACT.get(n, n), v.strip()) for n, v in ((n.lower(), v) for n, v in pairs)]
    headers: list[tuple[str, str]] = []
    for line in rest.split("\n"):
        if line == "":
            continue
        if line[0] in " \t":  # folded continuation (RFC 3261 §7.3.1)
            if not headers:
                raise SipParseError("continuation line before any header")
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        m = _HEADER_LINE.match(line)
        if m is None:
            raise SipParseError(f"malformed header line: {line[:60]!r}")
        lname = m.group(1).lower()
        headers.append((COMPACT.get(lname, lname), m.group(2).strip()))
    return headers


def parse_message(data: bytes, stream: bool = False) -> SipMessage:
    """Parse one complete SIP message.

    On a datagram transport a missing Content-Length means "the rest of the datagram"
    (RFC 3261 §18.3); on a stream (``stream=True``) the caller framed it already.
    """
    if not data or not data.strip():
        raise SipParseError("empty message")
    end = find_header_end(data)
    if end < 0:
        raise SipParseError("no blank line after headers")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header block is not UTF-8 (byte {exc.start})") from None
    text = head.replace("\r\n", "\n").lstrip("\n")  # leading CRLFs: keep-alives (RFC 5626), robustness
    if not text:
        raise SipParseError("empty message")
    start, _, rest = text.partition("\n")
    method = uri = reason = None
    status = None
    m = _STATUS_LINE.match(start)
    if m:
        if m.group(1) != "2.0":
            raise SipParseError(f"unsupported SIP version {m.group(1)}")
        status, reason = int(m.group(2)), m.group(3) or ""
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
    else:
        m = _REQUEST_LINE.match(start)
        if not m:
            if start.startswith("SIP/"):
                raise SipParseError(f"malformed status line: {start[:60]!r}")
            raise SipParseError(f"malformed request line: {start[:60]!r}")
        if m.group(3) != "2.0":
            raise SipParseError(f"unsupported SIP version {m.group(3)}")
        method, uri = m.group(1), m.group(2)
        check_request_uri(uri)
    headers = _read_headers(rest)
    seen: dict[str, str] = {}
    via_values: list[str] = []
    contacts: list[str] = []
    date = None
    for k, v in headers:
        if k in _SINGLE:
            if k in seen:
                raise SipParseError(f"more than one {k} header")
            seen[k] = v
        elif k == "via":
            via_values.append(v)
        elif k == "contact":
            contacts.append(v)
        elif k == "date":
            date = v
    for required in ("call-id", "cseq", "from", "to"):
        if required not in seen:
            raise SipParseError(f"missing {required} header")
    if not via_values:
        raise SipParseError("missing via header")
    call_id = seen["call-id"]
    if not call_id or any(c in call_id for c in " \t"):
        raise SipParseError(f"malformed Call-ID: {call_id[:60]!r}")
    cseq_parts = seen["cseq"].split()
    if len(cseq_parts) != 2 or not cseq_parts[0].isdigit() or int(cseq_parts[0]) >= 2**31:
        raise SipParseError(f"malformed CSeq: {seen['cseq'][:60]!r}")
    if not _TOKEN.match(cseq_parts[1]):
        raise SipParseError(f"malformed CSeq method: {cseq_parts[1][:30]!r}")
    if method is not None and cseq_parts[1] != method:
        raise SipParseError("CSeq method does not match request method")
    mf = seen.get("max-forwards")
    if mf is not None and (not mf.isdigit() or int(mf) > 255):
        raise SipParseError(f"malformed Max-Forwards: {mf[:20]!r}")
    if date is not None and not _DATE.match(date):
        raise SipParseError(f"Date is not an RFC 1123 GMT date: {date[:40]!r}")
    for k in ("from", "to"):
        check_name_addr(seen[k], k)
    for v in contacts:
        for c in split_commas(v):
            check_name_addr(c, "contact")
    ctype = seen.get("content-type")
    if ctype is not None:
        main_type = ctype.split(";")[0].strip()
        if not _CTYPE.match(main_type):
            raise SipParseError(f"malformed Content-Type: {ctype[:40]!r}")
        if main_type.lower().startswith("multipart/"):
            b = _boundary(ctype)
            if not b or '"' in b or len(b) > 70:
                raise SipParseError("multipart Content-Type without a usable boundary")
    vias = tuple(parse_via(v) for hv in via_values for v in split_commas(hv))
    if not vias:
        raise SipParseError("missing via header")
    from_tag = header_param(seen["from"], "tag")
    to_tag = header_param(seen["to"], "tag")
    body = data[end:]
    clen_s = seen.get("content-length")
    if clen_s is not None:
        if not clen_s.isdigit():
            raise SipParseError(f"malformed Content-Length: {clen_s[:20]!r}")
        clen = int(clen_s)
        if clen > len(body):
            raise SipParseError(f"Content-Length {clen} exceeds the {len(body)} body bytes received")
        body = body[:clen]
    elif stream:
        raise SipParseError("missing Content-Length on a stream transport")
    return SipMessage(method, uri, status, reason, tuple(headers), bytes(body), call_id,
                      (int(cseq_parts[0]), cseq_parts[1].upper()), from_tag, to_tag, vias)


class StreamFramer:
    """Frames SIP messages out of one direction of a TCP connection (RFC 3261 §18.3).

    Feed it in-order bytes; it yields complete messages' bytes and keeps the rest.
    """

    MAX_BUFFER = 256 * 1024

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes | SipParseError]:
        self._buf += data
        out: list[bytes | SipParseError] = []
        while True:
            while self._buf[:2] == b"\r\n":  # keep-alive CRLFs between messages
                del self._buf[:2]
            if not self._buf:
                break
            end = find_header_end(bytes(self._buf[:65536]))
            if end < 0:
                if len(self._buf) > 65536:
                    out.append(SipParseError("header block larger than 64 KiB on stream; buffer dropped"))
                    self._buf.clear()
                break
            m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", bytes(self._buf[:end]))
            if not m:
                out.append(SipParseError("missing Content-Length on a stream transport; buffer dropped"))
                self._buf.clear()
                break
            total = end + int(m.group(1))
            if total > self.MAX_BUFFER:
                out.append(SipParseError("message larger than 256 KiB on stream; buffer dropped"))
                self._buf.clear()
                break
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out
