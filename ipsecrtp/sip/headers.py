"""SIP header values (RFC 3261 §7.3, §19.1, §20, §25): comma-separated lists, name-addr and
addr-spec, URIs, Via, Session-Expires.

Pure string functions, apart from :mod:`.message` so that the message parser reads as the order
of its checks while the grammar of each value lives here; both raise :class:`SipParseError`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from .errors import SipParseError

_VIA = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9-]+)\s+(.*)$", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DISPLAY_TOKENS = re.compile(r"^[A-Za-z0-9.!%*_+`'~\- \t]*$")


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v if v is not None else ""
        return None

    @property
    def branch(self) -> str | None:
        return self.param("branch")


# a list item without quotes: from its first non-blank character to the next comma outside <...> (a '<'
# never closed runs to the end, as in a quoted value). '[^>]*' stops at the first '>' or the end, where
# '>' or the end follows at once: no '<' rescans the rest (that made a 30 KB value cost seconds)
_LIST_ITEM = re.compile(r'(?:<[^>]*(?:>|\Z)|[^,<\s])(?:<[^>]*(?:>|\Z)|[^,<]+)*')
# quoted-string: a backslash escapes any character, only inside quotes (RFC 3261 §25.1)
_QUOTED = r'"(?:[^"\\]++|\\[\s\S])*+"'  # possessive: an unterminated one fails in one pass
# one list item where quotes may occur: quoted strings, <...> (a quoted '>' inside does not end it; one
# never closed runs to the end) and runs of any character but ',', '"' and '<'. Each alternative starts
# with its own character and nothing follows the item, so a match never backtracks into earlier runs;
# inside <...> the runs are possessive (*+, ++) because '>' or the end must follow them.
_QUOTED_ITEM = re.compile(rf'[\s,]*((?:{_QUOTED}|<(?:[^">]++|{_QUOTED})*+(?:>|\Z)|[^,"<]+)+)?')
# what precedes the first '<' outside quoted strings
_BEFORE_LT = re.compile(rf'(?:[^"<]++|{_QUOTED})*+')


def split_commas(value: str, most: int | None = None) -> list[str]:
    """Split a header value on commas outside quoted strings and <...>: the first ``most`` items (all by
    default; a caller telling a list beyond a cap asks for one more than it allows, and no more work)."""
    if '"' not in value:  # the common case (Via, Allow, Supported, most Contacts): no quoting to honour
        if "," not in value:
            v = value.strip()
            return [v] if v else []
        # found by the regex engine, blank ones never produced: the work is bounded by ``most``
        return [m.group(0).rstrip() for m in itertools.islice(_LIST_ITEM.finditer(value), most)]
    # the general case in one regex pass per item (a character loop costs ~10 ms on a 64 KiB value);
    # separators and blank items are skipped by the same pass
    out, pos, n = [], 0, len(value)
    while pos < n and (most is None or len(out) < most):
        m = _QUOTED_ITEM.match(value, pos)
        if m.group(1) is None:  # type: ignore[union-attr]  # (...)? always matches
            if m.end() < n:  # type: ignore[union-attr]  # a '"' (or a '<' before one) never closed
                raise SipParseError("unterminated quoted string in header value")
            break
        out.append(m.group(1).rstrip())  # type: ignore[union-attr]
        pos = m.end()  # type: ignore[union-attr]
    return out


def _unquoted_lt(value: str, what: str) -> int:
    """Index of the first '<' outside a quoted string (escapes honoured), -1 when there is none."""
    if '"' not in value:
        return value.find("<")
    i = _BEFORE_LT.match(value).end()  # type: ignore[union-attr]  # (...)* always matches
    if i == len(value):
        return -1
    if value[i] == '"':
        raise SipParseError(f"unterminated quoted string in {what}")
    return i


def _strip_name_addr(value: str) -> str:
    """Return the header parameters part of a name-addr / addr-spec (after the URI)."""
    lt = _unquoted_lt(value, "name-addr")
    if lt >= 0:
        end = value.find(">", lt)
        if end < 0:
            raise SipParseError("unterminated <...> in name-addr")
        return value[end + 1:]
    # addr-spec without <>: everything after the first ';' is a header parameter (RFC 3261 §20.10)
    semi = value.find(";")
    return value[semi:] if semi >= 0 else ""


def header_param(value: str, name: str) -> str | None:
    for part in _strip_name_addr(value).split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == name:
            return v.strip()
    return None


def parse_via(value: str) -> Via:
    m = _VIA.match(value)
    if not m:
        raise SipParseError(f"malformed Via: {value[:60]!r}")
    transport, rest = m.group(1).upper(), m.group(2)
    sent_by, _, params_s = rest.partition(";")
    sent_by = sent_by.strip()
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise SipParseError("malformed IPv6 reference in Via")
        host, port_s = sent_by[1:end], sent_by[end + 1:].lstrip(":").strip()
    else:
        host, _, port_s = sent_by.partition(":")
        host, port_s = host.strip(), port_s.strip()
    if not host:
        raise SipParseError("Via without sent-by host")
    port: int | None = None
    if port_s:
        if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5 and 0 < int(port_s) < 65536):
            raise SipParseError(f"bad port in Via: {port_s[:10]!r}")
        port = int(port_s)
    params: list[tuple[str, str | None]] = []
    for p in params_s.split(";") if params_s else []:
        k, eq, v = p.partition("=")
        if k.strip():
            params.append((k.strip().lower(), v.strip() if eq else None))
    return Via(transport, host, port, tuple(params))


def check_request_uri(uri: str) -> None:
    if not _SCHEME.match(uri):
        raise SipParseError(f"Request-URI without a scheme: {uri[:60]!r}")
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("sip", "sips"):
        # RFC 3261 §19.1.5: header components are not allowed in a Request-URI; a '?' in the
        # userinfo (before the last '@') is legal, one after the host starts headers
        hostpart = uri[uri.rfind("@") + 1:] if "@" in uri else uri.split(":", 1)[1]
        if "?" in hostpart:
            raise SipParseError("Request-URI carries header components")


def check_name_addr(value: str, header: str) -> None:
    """RFC 3261 §20.10 / §25.1 name-addr / addr-spec rules a robust parser still enforces."""
    v = value.strip()
    if header == "contact" and v == "*":
        return
    lt = _unquoted_lt(v, header)
    if lt < 0:
        uri = v.split(";", 1)[0].strip()
        if not _SCHEME.match(uri):
            raise SipParseError(f"{header} is neither a name-addr nor an addr-spec: {v[:60]!r}")
        if "?" in uri or " " in uri:
            raise SipParseError(f"{header} URI with '?' or spaces must be enclosed in <>")
        return
    display = v[:lt].strip()
    if display and not display.startswith('"') and not _DISPLAY_TOKENS.match(display):
        raise SipParseError(f"{header} display name has non-token characters and is not quoted")
    gt = v.find(">", lt)
    if gt < 0:
        raise SipParseError(f"unterminated <...> in {header}")
    inner = v[lt + 1:gt]
    if not inner or inner != inner.strip() or " " in inner:
        raise SipParseError(f"whitespace inside <...> in {header}")
    if not _SCHEME.match(inner):
        raise SipParseError(f"{header} URI without a scheme")


def session_expires(value: str | None) -> float | None:
    """The session interval of a Session-Expires value (RFC 4028 §4: delta-seconds, then parameters)."""
    if not value:
        return None
    delta = value.split(";")[0].strip()
    # ASCII digits only, and few ('²' passes isdigit; int() of thousands of digits raises)
    return float(delta) if delta.isascii() and delta.isdigit() and len(delta) <= 10 and int(delta) > 0 else None
