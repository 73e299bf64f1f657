"""SIP message parsing (RFC 3261 §7, §20, §25): bytes in, an immutable message out.

Pure: no sockets, no clock. A message that cannot be read raises :class:`SipParseError`
with a one-line reason; the caller decides whether that matters. The grammar of single header
values (lists, name-addr, URIs, Via) is :mod:`.headers`; this module reads the message around them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import CapExceeded, SipParseError
from .framing import StreamFramer, find_header_end
from .headers import Via, check_name_addr, check_request_uri, header_param, parse_via, split_commas
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["COMPACT", "SipMessage", "StreamFramer", "find_header_end", "parse_message"]

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


def _items(values: list[str], most: int) -> list[str]:
    """The comma-separated items of header values, at most ``most``: one more than a cap allows is enough
    to refuse the message, and splitting no further keeps its cost within the cap's."""
    out: list[str] = []
    for v in values:
        if len(out) >= most:
            break
        out += split_commas(v, most - len(out))
    return out


def _cap(cap: str, n: int, limit: int, what: str) -> None:
    if n > limit:
        raise CapExceeded(cap, limit, f"{what.format(n=n)}, more than max_{cap.replace('-', '_')} {limit}")


def _number(s: str, most: int = 10) -> int | None:
    """A decimal number of ASCII digits (``isdigit`` alone lets '²' through, which int() refuses, and
    int() of thousands of digits raises ValueError), else None."""
    return int(s) if s.isascii() and s.isdigit() and len(s) <= most else None


def _start_line(start: str) -> tuple[str | None, str | None, int | None, str | None]:
    """(method, Request-URI, status, reason) of a request or status line."""
    m = _STATUS_LINE.match(start)
    if m:
        if m.group(1) != "2.0":
            raise SipParseError(f"unsupported SIP version {m.group(1)}")
        status = int(m.group(2))
        if not 100 <= status <= 699:
            raise SipParseError(f"status code out of range: {status}")
        return None, None, status, m.group(3) or ""
    m = _REQUEST_LINE.match(start)
    if not m:
        if start.startswith("SIP/"):
            raise SipParseError(f"malformed status line: {start[:60]!r}")
        raise SipParseError(f"malformed request line: {start[:60]!r}")
    if m.group(3) != "2.0":
        raise SipParseError(f"unsupported SIP version {m.group(3)}")
    check_request_uri(m.group(2))
    return m.group(1), m.group(2), None, None


def _by_name(headers: list[tuple[str, str]]) -> tuple[dict[str, str], list[str], list[str], str | None]:
    """The single-valued headers (each at most once, the required ones there), Via and Contact values, Date."""
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
    return seen, via_values, contacts, date


def _check_fields(seen: dict[str, str], method: str | None, date: str | None) -> tuple[int, str]:
    """Call-ID, CSeq (returned), Max-Forwards, Date, From, To and Content-Type as RFC 3261 writes them."""
    call_id = seen["call-id"]
    if not call_id or any(c in call_id for c in " \t"):
        raise SipParseError(f"malformed Call-ID: {call_id[:60]!r}")
    cseq_parts = seen["cseq"].split()
    number = _number(cseq_parts[0]) if len(cseq_parts) == 2 else None
    if number is None or number >= 2**31:
        raise SipParseError(f"malformed CSeq: {seen['cseq'][:60]!r}")
    if not _TOKEN.match(cseq_parts[1]):
        raise SipParseError(f"malformed CSeq method: {cseq_parts[1][:30]!r}")
    if method is not None and cseq_parts[1] != method:
        raise SipParseError("CSeq method does not match request method")
    mf = seen.get("max-forwards")
    if mf is not None and ((n := _number(mf)) is None or n > 255):
        raise SipParseError(f"malformed Max-Forwards: {mf[:20]!r}")
    if date is not None and not _DATE.match(date):
        raise SipParseError(f"Date is not an RFC 1123 GMT date: {date[:40]!r}")
    for k in ("from", "to"):
        check_name_addr(seen[k], k)
    ctype = seen.get("content-type")
    if ctype is not None:
        main_type = ctype.split(";")[0].strip()
        if not _CTYPE.match(main_type):
            raise SipParseError(f"malformed Content-Type: {ctype[:40]!r}")
        if main_type.lower().startswith("multipart/"):
            b = _boundary(ctype)
            if not b or '"' in b or len(b) > 70:
                raise SipParseError("multipart Content-Type without a usable boundary")
    return number, cseq_parts[1].upper()


def _body(body: bytes, clen_s: str | None, stream: bool) -> bytes:
    if clen_s is not None:
        clen = _number(clen_s)
        if clen is None:
            raise SipParseError(f"malformed Content-Length: {clen_s[:20]!r}")
        if clen > len(body):
            raise SipParseError(f"Content-Length {clen} exceeds the {len(body)} body bytes received")
        return body[:clen]
    if stream:
        raise SipParseError("missing Content-Length on a stream transport")
    return body


def parse_message(data: bytes, stream: bool = False, limits: Limits = DEFAULT_LIMITS) -> SipMessage:
    """Parse one complete SIP message.

    On a datagram transport a missing Content-Length means "the rest of the datagram"
    (RFC 3261 §18.3); on a stream (``stream=True``) the caller framed it already. A message beyond
    a cap of ``limits`` raises :class:`CapExceeded` before the work its size would cost.
    """
    _cap("message-bytes", len(data), limits.max_message_bytes, "a message of {n} bytes")
    if not data or not data.strip():
        raise SipParseError("empty message")
    end = find_header_end(data)
    if end < 0:
        raise SipParseError("no blank line after headers")
    # counted on the bytes before anything is decoded or split (folded lines count: an upper bound)
    _cap("headers", data.count(b"\n", 0, end) - 2, limits.max_headers, "{n} header lines")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header block is not UTF-8 (byte {exc.start})") from None
    text = head.replace("\r\n", "\n").lstrip("\n")  # leading CRLFs: keep-alives (RFC 5626), robustness
    if not text:
        raise SipParseError("empty message")
    start, _, rest = text.partition("\n")
    method, uri, status, reason = _start_line(start)
    headers = _read_headers(rest)
    seen, via_values, contacts, date = _by_name(headers)
    cseq = _check_fields(seen, method, date)
    others = len(headers) - len(contacts)
    contact_items = _items(contacts, limits.max_headers - others + 1)
    _cap("headers", others + len(contact_items), limits.max_headers, "at least {n} header fields")
    for c in contact_items:
        check_name_addr(c, "contact")
    via_items = _items(via_values, limits.max_vias + 1)
    _cap("vias", len(via_items), limits.max_vias, "at least {n} Via values")
    vias = tuple(parse_via(v) for v in via_items)
    if not vias:
        raise SipParseError("missing via header")
    from_tag = header_param(seen["from"], "tag")
    to_tag = header_param(seen["to"], "tag")
    body = _body(data[end:], seen.get("content-length"), stream)
    return SipMessage(method, uri, status, reason, tuple(headers), bytes(body), seen["call-id"], cseq,
                      from_tag, to_tag, vias)
