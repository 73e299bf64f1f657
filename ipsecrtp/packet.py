"""Decoding of captured IP packets and framing of SIP out of them. Pure: bytes in, values out."""

from __future__ import annotations

import collections
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .sip.errors import CapExceeded, SipParseError
from .sip.framing import StreamFramer
from .sip.limits import DEFAULT_LIMITS, Limits

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
    """In-order delivery of one direction of a TCP connection to a SIP framer. What it holds is
    bounded: the framer's buffer by the message cap, segments waiting for a gap by count and bytes."""

    MAX_PENDING = 64

    def __init__(self, max_message: int) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}
        self.pending_bytes = 0
        self.max_pending_bytes = max_message  # a gap longer than a message cannot be a message's middle
        self.framer = StreamFramer(max_message)

    @property
    def buffered(self) -> int:
        return self.pending_bytes + self.framer.buffered

    def _hold(self, seq: int, payload: bytes) -> None:
        """Keep an out-of-order segment for later, within the caps (beyond them it is lost, like a
        segment the capture missed: the framer resynchronises on the next message)."""
        old = len(self.pending.get(seq, b""))
        if (old or len(self.pending) < self.MAX_PENDING) and \
                self.pending_bytes - old + len(payload) <= self.max_pending_bytes:
            self.pending[seq] = payload
            self.pending_bytes += len(payload) - old

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
            self._hold(seq, payload)
            return []
        out = []
        data: bytes | None = payload
        while data is not None:
            out.extend(self.framer.feed(data))
            self.next_seq = (self.next_seq + len(data)) & 0xFFFFFFFF
            data = self.pending.pop(self.next_seq, None)
            if data is not None:
                self.pending_bytes -= len(data)
        return out


Item = tuple[bytes | SipParseError, bool]


class SipExtractor:
    """Turns captured packets into SIP message bytes, reassembling TCP streams per connection.

    The directions it reassembles are capped in number (the least recently fed dropped first) and
    in the bytes they hold together; a drop is reported as a :class:`CapExceeded` item."""

    def __init__(self, ports: set[int], limits: Limits = DEFAULT_LIMITS) -> None:
        self.ports = ports
        self.limits = limits
        self._tcp: collections.OrderedDict[tuple, _TcpDirection] = collections.OrderedDict()  # oldest first
        self.buffered = 0  # bytes held by all directions together

    @property
    def connections(self) -> int:
        return len(self._tcp)

    def is_sip(self, pkt: Packet) -> bool:
        return pkt.sport in self.ports or pkt.dport in self.ports

    def feed(self, pkt: Packet) -> list[Item]:
        """List of (message bytes or framing error, framed-from-stream) for this packet."""
        if not self.is_sip(pkt):
            return []
        if pkt.proto == UDP:
            if pkt.payload.strip(b"\r\n\x00 ") == b"":
                return []  # keep-alive
            return [(pkt.payload, False)]
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        direction = self._tcp.get(key)
        if direction is None or (pkt.syn and not pkt.payload):
            self._drop(key)
            direction = self._tcp[key] = _TcpDirection(self.limits.max_message_bytes)
        else:
            self._tcp.move_to_end(key)
        before = direction.buffered
        out: list[Item] = [(m, True) for m in direction.feed(pkt)]
        self.buffered += direction.buffered - before
        if pkt.fin_or_rst:
            self._drop(key)
        return out + self._enforce()

    def _drop(self, key: tuple) -> None:
        direction = self._tcp.pop(key, None)
        if direction is not None:
            self.buffered -= direction.buffered

    def _enforce(self) -> list[Item]:
        """Drop the least recently fed directions while beyond a cap: one item per cap hit."""
        lim = self.limits
        out = self._shed("tcp-connections", lim.max_tcp_connections, lambda: len(self._tcp))
        return out + self._shed("tcp-buffered-bytes", lim.max_tcp_buffered_bytes, lambda: self.buffered)

    def _shed(self, cap: str, limit: int, size: Callable[[], int]) -> list[Item]:
        dropped = 0
        while self._tcp and size() > limit:
            self._drop(next(iter(self._tcp)))
            dropped += 1
        if not dropped:
            return []
        return [(CapExceeded(cap, limit, f"{dropped} least recently used TCP connection(s) no longer reassembled "
                             f"(more than max_{cap.replace('-', '_')} {limit})"), True)]
