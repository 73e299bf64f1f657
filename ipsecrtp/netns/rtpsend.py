"""A small RTP sender for load runs: real RTP on real UDP sockets for every call answered on the wire.

It runs in a gateway's namespace next to sipp, watches SIP on the WAN interface (both directions),
and from a call's answer (a 2xx to its INVITE) sends RTP from this side's media endpoint (the SDP
this address sent) to the other side's until the BYE, as a phone does. Why not sipp's
``play_pcap_audio``: sipp sends that on a raw socket, and for a raw socket the kernel's route and
xfrm lookups carry no ports (``raw_sendmsg`` fills them in for ICMP only), so a per-flow routing
rule or xfrm policy would never match and every packet would leave in clear.

Packets carry ``ptime`` ms of PCMA silence each (8 bytes a ms, at most 1,200), so the byte rate is
a phone's whatever the packet rate. On SIGTERM it writes its counters as JSON to ``--stats`` and exits.

    python -m ipsecrtp.netns.rtpsend --iface wan0 --local 198.51.100.1 --ptime 100 --stats F
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

from ..packet import UDP, decode_ip
from ..sip.message import SipParseError, parse_message
from ..sip.sdp import SdpError, parse_sdp

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SIP_PORT = 5060
PCMA = 8
MAX_PAYLOAD = 1200

# Classic BPF over the IP header (a SOCK_DGRAM packet socket hands the filter the network layer):
# IPv4 UDP, not a fragment, either port 5060. Everything else (RTP, ESP: thousands a second under
# load) stays in the kernel instead of waking this process.
_SIP_FILTER = [
    (0x30, 0, 0, 9),           # ldb [9]            protocol
    (0x15, 0, 8, 17),          # jeq #17            UDP, else drop
    (0x28, 0, 0, 6),           # ldh [6]            flags + fragment offset
    (0x45, 6, 0, 0x1FFF),      # jset #0x1fff       a later fragment: drop
    (0xB1, 0, 0, 0),           # ldxb 4*([0]&0xf)   header length
    (0x48, 0, 0, 0),           # ldh [x+0]          source port
    (0x15, 2, 0, SIP_PORT),    # jeq #5060          accept
    (0x48, 0, 0, 2),           # ldh [x+2]          destination port
    (0x15, 0, 1, SIP_PORT),    # jeq #5060          accept, else drop
    (0x06, 0, 0, 0x40000),     # ret #262144        accept
    (0x06, 0, 0, 0),           # ret #0             drop
]


def sip_socket(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    prog = b"".join(struct.pack("HBBI", *ins) for ins in _SIP_FILTER)
    buf = ctypes.create_string_buffer(prog)
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(_SIP_FILTER), ctypes.addressof(buf)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((iface, ETH_P_ALL))
    s.setblocking(False)
    return s


@dataclass
class Stream:
    sock: socket.socket
    ptime: float
    until: float  # a cap, in case the BYE is never seen
    seq: int = field(default_factory=lambda: random.randrange(1 << 16))
    ts: int = field(default_factory=lambda: random.randrange(1 << 32))
    ssrc: int = field(default_factory=lambda: random.randrange(1 << 32))

    def packet(self) -> bytes:
        n = int(8 * self.ptime * 1000)  # 8 kHz PCMA, one byte a sample
        hdr = struct.pack("!BBHII", 0x80, PCMA, self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + n) & 0xFFFFFFFF
        # a long ptime would not fit one frame: fragments would neither be keyed by port nor
        # counted as RTP by a capture, so the payload stops short of the MTU (timestamps stay right)
        return hdr + b"\xd5" * min(n, MAX_PAYLOAD)


@dataclass
class Sender:
    local: str
    ptime: float  # seconds
    max_stream: float
    media: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)  # call -> side -> endpoint
    streams: dict[str, Stream] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    due: list[tuple[float, int, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: {"streams": 0, "sent": 0, "received": 0,
                                                           "send_errors": 0, "bind_errors": 0})
    _n: int = 0

    def sip(self, data: bytes, now: float) -> None:
        p = decode_ip(data)
        if p is None or p.proto != UDP or SIP_PORT not in (p.sport, p.dport):
            return
        try:
            msg = parse_message(p.payload)
        except SipParseError:
            return
        cid = msg.call_id
        if cid in self.ended:
            return
        body = msg.sdp_body()
        if body and (msg.method == "INVITE" or (msg.status and msg.cseq[1] == "INVITE")):
            try:
                m = next((m for m in parse_sdp(body).media if m.media == "audio" and m.port), None)
            except SdpError:
                m = None
            if m is not None and m.address:
                side = "local" if p.src == self.local else "remote"
                self.media.setdefault(cid, {})[side] = (m.address, m.port)
        if msg.method == "BYE" or msg.method == "CANCEL":
            self.stop(cid)
        elif msg.status and 200 <= msg.status < 300 and msg.cseq[1] == "INVITE" and cid not in self.streams:
            self.start(cid, now)

    def start(self, cid: str, now: float) -> None:
        ends = self.media.get(cid, {})
        if "local" not in ends or "remote" not in ends:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # sipp wraps its ports after 2,500 calls
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        try:
            s.bind(ends["local"])
            s.connect(ends["remote"])
        except OSError:
            s.close()
            self.stats["bind_errors"] += 1
            return
        s.setblocking(False)
        self.streams[cid] = Stream(s, self.ptime, now + self.max_stream)
        self.stats["streams"] += 1
        self._schedule(now, cid)

    def stop(self, cid: str) -> None:
        self.ended.add(cid)
        self.media.pop(cid, None)
        st = self.streams.pop(cid, None)
        if st is not None:
            self._drain(st)
            st.sock.close()

    def _schedule(self, when: float, cid: str) -> None:
        self._n += 1
        heapq.heappush(self.due, (when, self._n, cid))

    def _drain(self, st: Stream) -> None:
        """Count what the far side's sender got through to us (decrypted, when keyed)."""
        while True:
            try:
                st.sock.recv(2048)
            except OSError:  # BlockingIOError, or an ICMP error queued on the socket
                return
            self.stats["received"] += 1

    def send_due(self, now: float) -> None:
        while self.due and self.due[0][0] <= now:
            when, _n, cid = heapq.heappop(self.due)
            st = self.streams.get(cid)
            if st is None:
                continue
            if now > st.until:
                self.stop(cid)
                continue
            try:
                st.sock.send(st.packet())
                self.stats["sent"] += 1
            except OSError:  # ICMP port unreachable before the far sender bound its port
                self.stats["send_errors"] += 1
            self._drain(st)
            # keep the cadence, but after a stall restart it rather than send a burst
            nxt = when + st.ptime
            self._schedule(nxt if nxt > now - st.ptime else now + st.ptime, cid)

    def close(self) -> None:
        for cid in list(self.streams):
            self.stop(cid)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iface", default="wan0")
    ap.add_argument("--local", required=True, help="this gateway's media address")
    ap.add_argument("--ptime", type=float, default=100.0, help="ms of audio per packet (one packet every ptime)")
    ap.add_argument("--max-stream", type=float, default=600.0, help="seconds a stream may last without its BYE")
    ap.add_argument("--stats", required=True, help="JSON counters written here on SIGTERM")
    a = ap.parse_args(argv)
    stop = False

    def on_term(_sig, _frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    cap = sip_socket(a.iface)
    snd = Sender(a.local, a.ptime / 1000.0, a.max_stream)
    with open(a.stats + ".ready", "w") as f:
        f.write(str(os.getpid()))
    try:
        while not stop:
            now = time.monotonic()
            wait = min(0.2, max(0.0, snd.due[0][0] - now)) if snd.due else 0.2
            try:
                ready, _, _ = select.select([cap], [], [], wait)
            except InterruptedError:
                continue
            now = time.monotonic()
            if ready:
                for _ in range(256):
                    try:
                        data = cap.recv(65535)
                    except BlockingIOError:
                        break
                    snd.sip(data, now)
            snd.send_due(now)
    finally:
        snd.close()
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(snd.stats, f)
        os.replace(tmp, a.stats)


if __name__ == "__main__":
    main()
