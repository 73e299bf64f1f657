"""SDP (RFC 8866) reading, limited to what decides media flows, plus what must never leak.

Key material (``k=``, ``a=crypto``) is kept only as a count and in fields excluded from
repr so that logging an object cannot print it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .errors import Capped
from .limits import DEFAULT_LIMITS, Limits

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SDES_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
DTLS_PROTOS = ("UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")


class SdpError(ValueError):
    """An SDP body that cannot be used; ``str(err)`` is a one-line reason."""


class SdpCapExceeded(Capped, SdpError):
    """An SDP beyond a cap (m= lines): refused before it is parsed."""


@dataclass(frozen=True)
class MediaDescription:
    media: str  # audio, video, ...
    port: int
    port_count: int
    proto: str  # RTP/AVP, RTP/SAVP, ...
    formats: tuple[str, ...]
    address: str | None  # media-level c= if any, else session-level (resolved)
    rtcp_port: int | None  # a=rtcp (RFC 3605)
    rtcp_address: str | None
    rtcp_mux: bool
    direction: str
    ice: bool
    crypto_count: int = 0
    crypto: tuple[str, ...] = field(default=(), repr=False, compare=False)
    fingerprint: bool = False  # a=fingerprint (RFC 8122) here or at session level: DTLS-SRTP's anchor

    @property
    def srtp(self) -> str:
        """How this stream keys SRTP itself: "sdes" (an SAVP profile with an a=crypto line, RFC 4568),
        "dtls" (UDP/TLS/RTP/SAVP[F] with a fingerprint, RFC 5764), else "" (plain RTP, or an SRTP
        profile without anything to key it: not protected end to end)."""
        if self.proto in SDES_PROTOS and any(not c.startswith("k=") for c in self.crypto):
            return "sdes"
        if self.proto in DTLS_PROTOS and self.fingerprint:
            return "dtls"
        return ""

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def on_hold_address(self) -> bool:
        """RFC 2543-style hold: connection address 0.0.0.0 (or ::)."""
        return self.address in ("0.0.0.0", "::")  # addresses are kept in canonical form


@dataclass(frozen=True)
class SessionDescription:
    origin: tuple[str, str, str]  # username, sess-id, sess-version
    address: str | None  # session-level c=
    media: tuple[MediaDescription, ...]
    key_present: bool = field(default=False, compare=False)


# ASCII digits only: str patterns' \d takes any script's digits, which int() reads but ipaddress refuses
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$", re.ASCII)


def _parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line: {value[:60]!r}")
    addr = parts[2].split("/")[0]  # multicast TTL / count suffixes
    if parts[1] == "IP4" and _IPV4.match(addr):
        if all(int(o) <= 255 for o in addr.split(".")) and not any(len(o) > 1 and o[0] == "0" for o in addr.split(".")):
            return addr  # already canonical: skip ipaddress (it dominates SDP parsing time)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise SdpError(f"c= address is not an IP address: {addr[:60]!r}") from None
    if (ip.version == 4) != (parts[1] == "IP4"):
        raise SdpError(f"c= address family mismatch: {value[:60]!r}")
    return str(ip)


def _port(s: str, what: str) -> int:
    if not (s.isascii() and s.isdigit() and len(s) <= 5) or int(s) > 65535:  # '²' passes isdigit alone
        raise SdpError(f"bad {what} port: {s[:10]!r}")
    return int(s)


# the last body parsed and its result. The tracker and the gateway's NAT detection both read the SDP
# of each INVITE and 2xx, from the same message's body object: the second read gets the first one's
# result (whatever its caps: the first read kept within its own). By identity, never equality: a
# retransmission's equal body still gets an object of its own (the tracker tells an INVITE's own
# offer from a spiral's by identity). The reference held keeps the body's id from being reused.
_last: tuple[bytes, SessionDescription] | None = None


def parse_sdp(body: bytes, limits: Limits = DEFAULT_LIMITS) -> SessionDescription:
    """The session description, or :class:`SdpError` (:class:`SdpCapExceeded` beyond ``limits``)."""
    global _last
    if _last is not None and _last[0] is body:
        return _last[1]
    sd = _parse_sdp(body, limits)
    _last = (body, sd)
    return sd


def _media_line(value: str) -> dict:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"malformed m= line: {value[:60]!r}")
    port_s, _, count_s = parts[1].partition("/")
    count = _port(count_s, "m= count") if count_s else 1  # kept as a number: never a port each (media.py)
    if count < 1:
        raise SdpError("m= port count must be at least 1")
    return {
        "media": parts[0], "port": _port(port_s, "m="), "count": count, "proto": parts[2],
        "formats": tuple(parts[3:]), "addr": None, "rtcp": None, "rtcp_addr": None,
        "mux": False, "dir": None, "ice": False, "crypto": [], "fp": False,
    }


def _attribute(cur: dict, name: str, val: str) -> None:
    """A media-level attribute that decides flows (or says keys are present)."""
    if name == "rtcp":
        parts = val.split()
        if not parts:
            raise SdpError("a=rtcp without a port")
        cur["rtcp"] = _port(parts[0], "a=rtcp")
        if len(parts) >= 4:
            cur["rtcp_addr"] = _parse_connection(" ".join(parts[1:4]))
    elif name == "rtcp-mux":
        cur["mux"] = True
    elif name == "crypto":
        cur["crypto"].append(val)
    elif name == "fingerprint":
        cur["fp"] = True
    elif name in ("candidate", "ice-ufrag", "ice-pwd", "ice-lite", "ice-options"):
        cur["ice"] = True


def _streams(media_raw: list[dict], session_addr: str | None, session_dir: str,
             session_fp: bool = False) -> tuple[MediaDescription, ...]:
    media = []
    for m in media_raw:
        addr = m["addr"] or session_addr
        if addr is None and m["port"] != 0:
            raise SdpError(f"no c= line for the {m['media']} stream")
        media.append(MediaDescription(
            media=m["media"], port=m["port"], port_count=m["count"], proto=m["proto"],
            formats=m["formats"], address=addr, rtcp_port=m["rtcp"], rtcp_address=m["rtcp_addr"],
            rtcp_mux=m["mux"], direction=m["dir"] or session_dir, ice=m["ice"],
            crypto_count=len(m["crypto"]), crypto=tuple(m["crypto"]), fingerprint=m["fp"] or session_fp,
        ))
    return tuple(media)


def _lines(body: bytes, limits: Limits) -> list[str]:
    """The SDP's non-blank lines, the caps checked on the bytes first (lines are split on LF, as here),
    before any line is split or a stream built: each line costs a few microseconds of parsing."""
    n_media = body.count(b"\nm=") + body.startswith(b"m=")
    if n_media > limits.max_media_lines:
        raise SdpCapExceeded("media-lines", limits.max_media_lines, f"SDP with {n_media} m= lines, more than "
                             f"max_media_lines {limits.max_media_lines}")
    n_lines = body.count(b"\n") + 1
    if n_lines > limits.max_sdp_lines:
        raise SdpCapExceeded("sdp-lines", limits.max_sdp_lines, f"SDP with {n_lines} lines, more than "
                             f"max_sdp_lines {limits.max_sdp_lines}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP body is not UTF-8") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP does not start with v=")
    if lines[0] != "v=0":
        raise SdpError(f"unsupported SDP version {lines[0][2:]!r}")
    return lines


def _parse_sdp(body: bytes, limits: Limits) -> SessionDescription:
    origin: tuple[str, str, str] | None = None
    session_addr: str | None = None
    session_dir = "sendrecv"
    key_present = session_fp = False
    media_raw: list[dict] = []
    cur: dict | None = None
    for ln in _lines(body, limits)[1:]:
        if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha():
            raise SdpError(f"malformed SDP line: {ln[:60]!r}")
        kind, value = ln[0], ln[2:]
        if kind == "a":  # most lines: first
            name, _, val = value.partition(":")
            if name in DIRECTIONS:
                if cur is None:
                    session_dir = name
                else:
                    cur["dir"] = name
            elif cur is not None:
                _attribute(cur, name, val)
                key_present = key_present or name == "crypto"
            elif name == "fingerprint":  # session level: every stream's (RFC 8122 5)
                session_fp = True
        elif kind == "m":
            cur = _media_line(value)
            media_raw.append(cur)
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"malformed o= line: {value[:60]!r}")
            origin = (parts[0], parts[1], parts[2])
        elif kind == "c":
            addr = _parse_connection(value)
            if cur is None:
                session_addr = addr
            else:
                cur["addr"] = addr
        elif kind == "k":
            key_present = True
            if cur is not None:
                cur["crypto"].append("k=" + value)
    if origin is None:
        raise SdpError("SDP without o= line")
    return SessionDescription(origin, session_addr, _streams(media_raw, session_addr, session_dir, session_fp),
                              key_present)


def end_to_end_srtp(offer: SessionDescription, answer: SessionDescription) -> str:
    """How the call keys SRTP end to end, "sdes" or "dtls", when every stream that carries media
    (answered with a port, not held at 0.0.0.0) is SRTP on both sides, each stream keyed the same
    way on both; "" otherwise (one plain stream is enough: its media would cross in clear), and ""
    when no stream carries media."""
    kinds = set()
    for o, a in zip(offer.media, answer.media, strict=False):
        if o.rejected or a.rejected or o.on_hold_address or a.on_hold_address:
            continue
        if not o.srtp or o.srtp != a.srtp:
            return ""
        kinds.add(o.srtp)
    if len(answer.media) > len(offer.media) or not kinds:
        return ""
    return "sdes" if "sdes" in kinds else "dtls"  # SDES's keys travel in the SDP: the weaker one names it
