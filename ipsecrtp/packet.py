"""Decoding of captured IP packets and framing of SIP out of them. Pure: bytes in, values out."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .sip.errors import SipParseError
from .sip.message import StreamFramer

UDP, TCP = 17, 6


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    payload: bytes
    seq: int = 0  # TCP only
    syn: bool = False
    fin_or_rst: bool = False


def decode_ip(data: bytes) -> Packet | None:
    """Decode an IPv4/IPv6 packet carrying UDP or TCP; anything else (or a fragment) gives None."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        total = struct.unpack_from("!H", data, 2)[0]
        frag = struct.unpack_from("!H", data, 6)[0]
        if frag & 0x3FFF:  # MF set or non-zero offset: reassembly is not ours to do
            return None
        proto = data[9]
        # formatted here, not by socket.inet_ntop: the gateway core imports this module and stays clear
        # of socket (tests/gateway/test_purity.py); %-formatting is as fast, str.format twice as slow
        src, dst = "%d.%d.%d.%d" % tuple(data[12:16]), "%d.%d.%d.%d" % tuple(data[16:20])  # noqa: UP031
        body = data[ihl:total] if total >= ihl else b""
    elif version == 6:
        if len(data) < 40:
            return None
        plen = struct.unpack_from("!H", data, 4)[0]
        proto = data[6]
        # the form the SDP parser and the xfrm reader give an address (ipaddress), so that a packet's
        # address matches the SDP's also for the IPv4-mapped forms inet_ntop writes otherwise
        src, dst = str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
        body = data[40:40 + plen]
        # skip hop-by-hop, routing and destination options headers
        while proto in (0, 43, 60) and len(body) >= 8:
            proto, hlen = body[0], (body[1] + 1) * 8
            body = body[hlen:]
    else:
        return None
    if proto == UDP and len(body) >= 8:
        sport, dport, ulen = struct.unpack_from("!HHH", body, 0)
        return Packet(src, dst, UDP, sport, dport, body[8:ulen] if ulen >= 8 else body[8:])
    if proto == TCP and len(body) >= 20:
        sport, dport, seq = struct.unpack_from("!HHI", body, 0)
        off = (body[12] >> 4) * 4
        flags = body[13]
        return Packet(src, dst, TCP, sport, dport, body[off:], seq, bool(flags & 0x02), bool(flags & 0x05))
    return None


IKE_PORT, NAT_T_PORT = 500, 4500


def classify(pkt: Packet, is_sip: bool) -> str:
    """What a gateway does with a packet: 'sip', 'ike' (on 500, or on 4500 behind the non-ESP
    marker), 'esp' (ESP-in-UDP on 4500, at least an SPI and a sequence number), 'media' (any other
    UDP: RTP, RTCP) or 'other'. The live capture and the offline replay both sort with this."""
    if is_sip:
        return "sip"
    if pkt.proto != UDP:
        return "other"
    ports = (pkt.sport, pkt.dport)
    if IKE_PORT in ports or (NAT_T_PORT in ports and pkt.payload[:4] == b"\0\0\0\0"):
        return "ike"
    if NAT_T_PORT in ports:
        return "esp" if len(pkt.payload) >= 8 else "other"
    return "media"


def ike_port(pkt: Packet) -> int:
    return NAT_T_PORT if NAT_T_PORT in (pkt.sport, pkt.dport) else IKE_PORT


def esp_spi(pkt: Packet) -> int:
    return struct.unpack_from("!I", pkt.payload)[0]


class _TcpDirection:
    """In-order delivery of one direction of a TCP connection to a SIP framer."""

    MAX_PENDING = 64

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}
        self.framer = StreamFramer()

    def feed(self, pkt: Packet) -> list[bytes | SipParseError]:
        seq = pkt.seq + (1 if pkt.syn else 0)
        if self.next_seq is None:
            self.next_seq = seq  # joined mid-stream: start at the first segment seen
        if not pkt.payload:
            if pkt.syn:
                self.next_seq = seq
            return []
        delta = (seq - self.next_seq) & 0xFFFFFFFF
        if delta >= 0x80000000:  # entirely or partly old: a retransmission
            overlap = (self.next_seq - seq) & 0xFFFFFFFF
            if overlap >= len(pkt.payload):
                return []
            seq, payload = self.next_seq, pkt.payload[overlap:]
        else:
            payload = pkt.payload
        if seq != self.next_seq:
            if len(self.pending) < self.MAX_PENDING:
                self.pending[seq] = payload
            return []
        out = []
        data = payload
        while True:
            out.extend(self.framer.feed(data))
            self.next_seq = (self.next_seq + len(data)) & 0xFFFFFFFF
            data = self.pending.pop(self.next_seq, None)
            if data is None:
                break
        return out


class SipExtractor:
    """Turns captured packets into SIP message bytes, reassembling TCP streams per connection."""

    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self._tcp: dict[tuple, _TcpDirection] = {}

    def is_sip(self, pkt: Packet) -> bool:
        return pkt.sport in self.ports or pkt.dport in self.ports

    def feed(self, pkt: Packet) -> list[tuple[bytes | SipParseError, bool]]:
        """List of (message bytes or framing error, framed-from-stream) for this packet."""
        if not self.is_sip(pkt):
            return []
        if pkt.proto == UDP:
            if pkt.payload.strip(b"\r\n\x00 ") == b"":
                return []  # keep-alive
            return [(pkt.payload, False)]
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        if pkt.syn and not pkt.payload:
            self._tcp[key] = _TcpDirection()
        direction = self._tcp.setdefault(key, _TcpDirection())
        out = [(m, True) for m in direction.feed(pkt)]
        if pkt.fin_or_rst:
            self._tcp.pop(key, None)
        return out
