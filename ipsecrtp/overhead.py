"""What each way of protecting RTP costs on the wire: bytes per packet, packets and kbit/s per direction.

Pure: no I/O, no clock. Every figure comes from the field sizes of the RFCs named below, so that a
packet's layout can be listed field by field (``layout``) and checked against a capture.

- ESP (RFC 4303): SPI 4 + sequence number 4, then the cipher's IV, the protected data, padding so
  that data + padding + the 2-byte trailer (pad length, next header) is a multiple of 4 bytes or of
  the cipher's block size if larger, then the ICV. Ciphers: AES-GCM (RFC 4106: 8-byte IV, 16-byte
  ICV, 4-byte alignment), AES-CBC (RFC 3602: 16-byte IV, 16-byte blocks) with HMAC-SHA2-256-128
  (RFC 4868: 16-byte ICV), NULL (RFC 2410: no IV, 4-byte alignment) with HMAC-SHA2-256-128, and
  AES-GMAC (RFC 4543: 8-byte IV, 16-byte ICV, integrity only). Tunnel mode carries the whole inner IP
  packet; transport mode only what follows the IP header (UDP + RTP). UDP encapsulation (RFC 3948,
  NAT-T) puts an 8-byte UDP header before the ESP header.
- SRTP (RFC 3711): the RTP header stays in clear, the payload is encrypted in place (AES counter
  mode keeps its length) and an authentication tag follows: 10 bytes for HMAC-SHA1-80, 4 for -32.
  Its IV is derived from the SSRC, packet index and salt, never sent; no MKI. AEAD-AES-128-GCM
  (RFC 7714): a 16-byte tag, IV likewise derived, nothing else.
- Payload-only encryption: the payload encrypted in place with a length-keeping cipher whose IV
  comes from the RTP header (SRTP with NULL authentication is one): 0 bytes more, and no integrity.
- Ethernet: a frame adds a 14-byte header and a 4-byte FCS and is at least 64 bytes (``l2_bytes``);
  on the cable each frame also takes 8 bytes of preamble and SFD and a 12-byte inter-frame gap
  (``l1_bytes``, 20 more). No VLAN tag.

Only RTP is counted: RTCP (a few packets every 5 s) and SRTCP's 4-byte index and tag are left out.
Codec payloads are the constant-bitrate sizes: bitrate x packet time / 8, or the codec's framing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

RTP_HEADER = 12  # no CSRCs, no header extension
UDP_HEADER = 8
IP_HEADER = {4: 20, 6: 40}  # no IPv4 options, no IPv6 extension headers
ESP_HEADER = 8  # SPI + sequence number
ESP_TRAILER = 2  # pad length + next header
NATT_UDP = 8  # RFC 3948 UDP encapsulation
ETH_HEADER, ETH_FCS, ETH_MIN_FRAME = 14, 4, 64
ETH_PREAMBLE_SFD, ETH_IFG = 8, 12
PTIMES = (10, 20, 30, 60)


@dataclass(frozen=True)
class Codec:
    name: str
    label: str
    kbps: float
    frame_ms: int  # packet times must be a multiple of this (sample-based codecs: 1)
    amr_wb_bits: int = 0  # AMR-WB: speech bits per frame, packed per RFC 4867 bandwidth-efficient mode

    def payload(self, ptime: int) -> int | None:
        """RTP payload bytes for ``ptime`` ms, None when the codec cannot be packetised so."""
        if ptime <= 0 or ptime % self.frame_ms:
            return None
        if self.amr_wb_bits:
            # 4-bit CMR, a 6-bit table-of-contents entry and the speech bits per frame, padded to a byte
            frames = ptime // self.frame_ms
            return math.ceil((4 + frames * (6 + self.amr_wb_bits)) / 8)
        return round(self.kbps * ptime / 8)


CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec("g711", "G.711 64k", 64, 1),
    Codec("g722", "G.722 64k", 64, 1),
    Codec("g729", "G.729 8k", 8, 10),
    # Opus in CBR mode: each packet is exactly bitrate x duration (TOC byte included)
    Codec("opus20", "Opus 20k", 20, 10),
    Codec("opus32", "Opus 32k", 32, 10),
    Codec("opus64", "Opus 64k", 64, 10),
    Codec("amrwb", "AMR-WB 23.85k", 23.85, 20, amr_wb_bits=477),
)}


@dataclass(frozen=True)
class EspCipher:
    name: str  # charon's ESP proposal keyword, so that the lab can ask for exactly this
    label: str
    iv: int
    icv: int
    block: int  # alignment of data + padding + trailer: 4, or the cipher's block if larger
    encrypts: bool


ESP_CIPHERS: dict[str, EspCipher] = {c.name: c for c in (
    EspCipher("aes128gcm16", "AES-GCM-128", 8, 16, 4, True),
    EspCipher("aes256gcm16", "AES-GCM-256", 8, 16, 4, True),
    EspCipher("aes128-sha256", "AES-CBC-128 + HMAC-SHA2-256-128", 16, 16, 16, True),
    EspCipher("null-sha256", "NULL + HMAC-SHA2-256-128", 0, 16, 4, False),
    EspCipher("aes128gmac", "AES-GMAC-128", 8, 16, 4, False),
)}

# SRTP and the other RTP-level alternatives: bytes after the payload, label
RTP_LEVEL = {
    "srtp-aescm-sha1-80": (10, "SRTP AES-CM + HMAC-SHA1-80"),
    "srtp-aescm-sha1-32": (4, "SRTP AES-CM + HMAC-SHA1-32"),
    "srtp-aead-aes128gcm": (16, "SRTP AEAD-AES-128-GCM"),
    "payload-only": (0, "payload-only encryption"),
    "plain": (0, "plain RTP"),
}


STACKED_SRTP = "srtp-aescm-sha1-80"  # the SRTP profile shown inside ESP (RFC 4568's most common suite)


@dataclass(frozen=True)
class Profile:
    """One way of carrying RTP: an ESP cipher with mode and encapsulation, or an RTP-level scheme."""

    kind: str  # "esp" or a key of RTP_LEVEL
    ip: int = 4
    cipher: EspCipher | None = None
    mode: str = ""  # ESP: "tunnel" or "transport"
    udp_encap: bool = False  # ESP: in UDP (NAT-T)
    # ESP: an RTP-level scheme of the packet it carries (srtp = "protect" on a call that is already
    # SRTP: both layers); "" for plain RTP inside
    inner: str = ""

    @property
    def name(self) -> str:
        if self.cipher is None:
            return f"{self.kind}-ipv{self.ip}"
        inner = f"-{self.inner}" if self.inner else ""
        return f"esp-{self.cipher.name}-{self.mode}{'-udp' if self.udp_encap else ''}{inner}-ipv{self.ip}"

    @property
    def label(self) -> str:
        if self.cipher is None:
            return f"{RTP_LEVEL[self.kind][1]}, IPv{self.ip}"
        inner = f"{RTP_LEVEL[self.inner][1]} inside " if self.inner else ""
        return f"{inner}ESP {self.cipher.label}, {self.mode}{' in UDP' if self.udp_encap else ''}, IPv{self.ip}"

    @property
    def integrity(self) -> bool:
        return self.kind not in ("plain", "payload-only")

    @property
    def confidentiality(self) -> bool:
        return self.cipher.encrypts if self.cipher else self.kind != "plain"


def profiles(ips: Iterable[int] = (4, 6)) -> list[Profile]:
    """Every profile: each ESP cipher in tunnel and transport mode, with and without UDP
    encapsulation, then the RTP-level alternatives; for each IP version."""
    out: list[Profile] = []
    for ip in ips:
        out += [Profile("esp", ip, c, mode, encap) for c in ESP_CIPHERS.values()
                for mode in ("tunnel", "transport") for encap in (True, False)]
        out += [Profile(k, ip) for k in RTP_LEVEL]
        # both layers (a call already SRTP, keyed with srtp = "protect"): the default proposal's four ways
        out += [Profile("esp", ip, ESP_CIPHERS["aes128gcm16"], mode, encap, inner=STACKED_SRTP)
                for mode in ("tunnel", "transport") for encap in (True, False)]
    return out


def profile(name: str) -> Profile:
    for p in profiles():
        if p.name == name:
            return p
    raise KeyError(name)


def esp_pad(data: int, block: int) -> int:
    """Padding bytes so that data + padding + trailer fills whole ``block``-byte units (RFC 4303 2.4)."""
    return -(data + ESP_TRAILER) % block


def layout(p: Profile, payload: int) -> list[tuple[str, int]]:
    """The packet's fields in wire order with their sizes; their sum is the IP packet's length."""
    ip = IP_HEADER[p.ip]
    # what follows the IP header of plain RTP (of SRTP, with its tag, when ESP carries SRTP)
    rtp = UDP_HEADER + RTP_HEADER + payload + (RTP_LEVEL[p.inner][0] if p.inner else 0)
    if p.cipher is None:
        fields = [("IP", ip), ("UDP", UDP_HEADER), ("RTP", RTP_HEADER), ("payload", payload)]
        tag = RTP_LEVEL[p.kind][0]
        return fields + ([("tag", tag)] if tag else [])
    inner = ip + rtp if p.mode == "tunnel" else rtp
    c = p.cipher
    fields = [("IP", ip)] + ([("UDP (NAT-T)", NATT_UDP)] if p.udp_encap else [])
    fields += [("ESP", ESP_HEADER)] + ([("IV", c.iv)] if c.iv else [])
    fields += [("inner IP/UDP/RTP" if p.mode == "tunnel" else "UDP/RTP", inner),
               ("pad/trailer", esp_pad(inner, c.block) + ESP_TRAILER), ("ICV", c.icv)]
    return fields


def ip_bytes(p: Profile, payload: int) -> int:
    return sum(n for _, n in layout(p, payload))


def l2_bytes(ip: int) -> int:
    """An Ethernet frame: header + FCS, padded up to the 64-byte minimum."""
    return max(ETH_MIN_FRAME, ip + ETH_HEADER + ETH_FCS)


def l1_bytes(ip: int) -> int:
    """What the frame occupies on the cable: preamble + SFD and the inter-frame gap as well."""
    return l2_bytes(ip) + ETH_PREAMBLE_SFD + ETH_IFG


@dataclass(frozen=True)
class Row:
    profile: str
    label: str
    codec: str
    ptime: int
    payload: int
    ip_bytes: int
    l2_bytes: int
    l1_bytes: int
    pps: float
    kbps_ip: float  # one direction
    kbps_l2: float
    kbps_l1: float
    overhead_bytes: int  # IP level, over plain RTP of the same IP version
    overhead_pct: float
    overhead_kbps: float
    confidentiality: bool
    integrity: bool
    layout: tuple[tuple[str, int], ...]


def kbps(bytes_per_packet: int, ptime: int) -> float:
    return bytes_per_packet * 8 / ptime  # bits per ms = kbit/s


def row(p: Profile, codec: Codec, ptime: int) -> Row | None:
    """One profile for one codec at one packet time; None when the codec has no such packetisation."""
    payload = codec.payload(ptime)
    if payload is None:
        return None
    ip = ip_bytes(p, payload)
    plain = ip_bytes(Profile("plain", p.ip), payload)
    return Row(p.name, p.label, codec.name, ptime, payload, ip, l2_bytes(ip), l1_bytes(ip),
               1000 / ptime, kbps(ip, ptime), kbps(l2_bytes(ip), ptime), kbps(l1_bytes(ip), ptime),
               ip - plain, round(100 * (ip - plain) / plain, 2), kbps(ip - plain, ptime),
               p.confidentiality, p.integrity, tuple(layout(p, payload)))


def table(codecs: Iterable[str] | None = None, ptimes: Iterable[int] | None = None,
          ips: Iterable[int] = (4, 6)) -> list[Row]:
    """Rows for every profile, codec and packet time asked for (all when None), grouped by codec and
    packet time. Unknown codec names raise KeyError."""
    cs = [CODECS[c] for c in codecs] if codecs is not None else list(CODECS.values())
    out = []
    for c in cs:
        for t in ptimes if ptimes is not None else PTIMES:
            out += [r for p in profiles(ips) if (r := row(p, c, t)) is not None]
    return out


def gateway_mbps(r: Row, calls: int = 1000, level: str = "ip") -> float:
    """Mbit/s a gateway carrying ``calls`` such calls sends and receives together (both directions)."""
    per_direction = {"ip": r.kbps_ip, "l2": r.kbps_l2, "l1": r.kbps_l1}[level]
    return per_direction * 2 * calls / 1000
