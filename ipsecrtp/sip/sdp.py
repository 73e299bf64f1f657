"""SDP (RFC 8866) reading, limited to what decides media flows, plus what must never leak.

Key material (``k=``, ``a=crypto``) is kept only as a count and in fields excluded from
repr so that logging an object cannot print it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """An SDP body that cannot be used; ``str(err)`` is a one-line reason."""


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


_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")


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
    if not s.isdigit() or int(s) > 65535:
        raise SdpError(f"bad {what} port: {s[:10]!r}")
    return int(s)


def parse_sdp(body: bytes) -> SessionDescription:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP body is not UTF-8") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP does not start with v=")
    if lines[0] != "v=0":
        raise SdpError(f"unsupported SDP version {lines[0][2:]!r}")
    origin: tuple[str, str, str] | None = None
    session_addr: str | None = None
    session_dir = "sendrecv"
    key_present = False
    media_raw: list[dict] = []
    cur: dict | None = None
    for ln in lines[1:]:
        if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha():
            raise SdpError(f"malformed SDP line: {ln[:60]!r}")
        kind, value = ln[0], ln[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"malformed m= line: {value[:60]!r}")
            port_s, _, count_s = parts[1].partition("/")
            count = _port(count_s, "m= count") if count_s else 1
            if count < 1:
                raise SdpError("m= port count must be at least 1")
            cur = {
                "media": parts[0], "port": _port(port_s, "m="), "count": count, "proto": parts[2],
                "formats": tuple(parts[3:]), "addr": None, "rtcp": None, "rtcp_addr": None,
                "mux": False, "dir": None, "ice": False, "crypto": [],
            }
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
        elif kind == "a":
            name, _, val = value.partition(":")
            if name in DIRECTIONS:
                if cur is None:
                    session_dir = name
                else:
                    cur["dir"] = name
            elif cur is None:
                continue
            elif name == "rtcp":
                parts = val.split()
                if not parts:
                    raise SdpError("a=rtcp without a port")
                cur["rtcp"] = _port(parts[0], "a=rtcp")
                if len(parts) >= 4:
                    cur["rtcp_addr"] = _parse_connection(" ".join(parts[1:4]))
            elif name == "rtcp-mux":
                cur["mux"] = True
            elif name == "crypto":
                key_present = True
                cur["crypto"].append(val)
            elif name in ("candidate", "ice-ufrag", "ice-pwd", "ice-lite", "ice-options"):
                cur["ice"] = True
    if origin is None:
        raise SdpError("SDP without o= line")
    media = []
    for m in media_raw:
        addr = m["addr"] or session_addr
        if addr is None and m["port"] != 0:
            raise SdpError(f"no c= line for the {m['media']} stream")
        media.append(MediaDescription(
            media=m["media"], port=m["port"], port_count=m["count"], proto=m["proto"],
            formats=m["formats"], address=addr, rtcp_port=m["rtcp"], rtcp_address=m["rtcp_addr"],
            rtcp_mux=m["mux"], direction=m["dir"] or session_dir, ice=m["ice"],
            crypto_count=len(m["crypto"]), crypto=tuple(m["crypto"]),
        ))
    return SessionDescription(origin, session_addr, tuple(media), key_present)
