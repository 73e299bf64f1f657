"""A user-space WAN link for the lab (this kernel has no netem): delay, jitter, loss and rate.

Runs in the lab's ``wan`` namespace and bridges two interfaces at layer 2 with AF_PACKET
sockets: every frame received on one is sent out of the other when its time has come. Per
direction: one-way delay, jitter (uniform in +-jitter, order kept unless ``reorder``), random
loss of any frame, random loss of IKE packets only (UDP 500, or 4500 with a zero non-ESP
marker), and an optional rate limit (serialisation delay). The settings live in a JSON file;
SIGHUP re-reads it, so an RTT sweep does not rebuild the lab. Counters go to the same
directory on SIGUSR1 and at exit.

A frame leaves late when the emulator wakes up late, and on a busy machine an ordinary process
can wait a scheduler tick or more for a CPU. So the emulator asks for the real-time class
SCHED_FIFO (it then preempts every ordinary process on its CPU), or failing that nice -20, and
logs which it got (``raise_priority``).

    python -m ipsecrtp.netns.wanem --config wan.json IF_A IF_B
"""

from __future__ import annotations

import argparse
import array
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_AUXDATA = 263, 8
TP_STATUS_CSUMNOTREADY = 8
BUSY_WAIT = 0.0003  # the last 0.3 ms before a departure are spun, not slept: select() overshoots
# above every ordinary process, below the kernel's own real-time threads (threaded IRQs run at 50);
# the spin above is at most BUSY_WAIT per frame, and the kernel's RT throttling (95 % by default)
# bounds even a runaway loop
RT_PRIORITY = 10


@dataclass
class LinkSettings:
    delay_ms: float = 0.0  # one way, each direction
    jitter_ms: float = 0.0
    loss: float = 0.0  # probability, any frame
    ike_loss: float = 0.0  # probability, IKE packets only
    rate_kbit: float = 0.0  # 0: unlimited
    reorder: bool = False
    seed: int = 1

    @classmethod
    def load(cls, path: str) -> LinkSettings:
        with open(path) as f:
            raw = json.load(f)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown WAN settings: {sorted(unknown)}")
        s = cls(**raw)
        if s.delay_ms < 0 or s.jitter_ms < 0 or s.jitter_ms > s.delay_ms:
            raise ValueError("delay and jitter must be >= 0 and jitter <= delay")
        if not (0 <= s.loss <= 1 and 0 <= s.ike_loss <= 1):
            raise ValueError("loss probabilities must be within 0..1")
        return s

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, path)


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))  # native order: fold, then swap back below if needed
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _l4(frame: bytes) -> tuple[int, int, int, bytes] | None:
    """(protocol, offset of the transport header, end of the IP payload, checksum pseudo-header)
    of an Ethernet frame carrying IPv4 or IPv6 (no extension headers), else None."""
    if len(frame) < 14:
        return None
    etype = struct.unpack_from("!H", frame, 12)[0]
    if etype == 0x0800 and len(frame) >= 34:
        proto, l4 = frame[23], 14 + (frame[14] & 0x0F) * 4
        end = 14 + struct.unpack_from("!H", frame, 16)[0]
        return proto, l4, end, frame[26:34] + struct.pack("!BBH", 0, proto, end - l4)
    if etype == 0x86DD and len(frame) >= 54:
        proto, l4 = frame[20], 54
        end = 54 + struct.unpack_from("!H", frame, 18)[0]
        return proto, l4, end, frame[22:54] + struct.pack("!IxxxB", end - l4, proto)
    return None


def complete_checksum(frame: bytes) -> bytes:
    """Fill in the UDP/TCP checksum a sender left to offload (veth hands such frames over as is;
    re-sent on another link unfinished, the receiver drops them)."""
    hdr = _l4(frame)
    if hdr is None:
        return frame
    proto, l4, end, pseudo = hdr
    off = {17: 6, 6: 16}.get(proto)
    if off is None or len(frame) < l4 + off + 2 or end > len(frame):
        return frame
    buf = bytearray(frame)
    buf[l4 + off:l4 + off + 2] = b"\0\0"
    c = _sum16(pseudo + bytes(buf[l4:end]))
    c = socket.htons(c) if sys.byteorder == "little" else c
    c = (~c) & 0xFFFF
    if proto == 17 and c == 0:
        c = 0xFFFF
    struct.pack_into("!H", buf, l4 + off, c)
    return bytes(buf)


def is_ike(frame: bytes) -> bool:
    """Ethernet + IPv4/IPv6 + UDP to or from 500, or 4500 carrying the zero non-ESP marker."""
    hdr = _l4(frame)
    if hdr is None or hdr[0] != 17 or len(frame) < hdr[1] + 8:
        return False
    l4 = hdr[1]
    sport, dport = struct.unpack_from("!HH", frame, l4)
    if 500 in (sport, dport):
        return True
    if 4500 in (sport, dport) and len(frame) >= l4 + 12:
        return frame[l4 + 8:l4 + 12] == b"\0\0\0\0"
    return False


@dataclass
class Direction:
    out: socket.socket
    queue: list = field(default_factory=list)  # heap of (due, seq, frame)
    last_due: float = 0.0
    link_free: float = 0.0
    stats: dict = field(default_factory=lambda: {"frames": 0, "sent": 0, "lost": 0, "ike_lost": 0})


class Emulator:
    def __init__(self, ifaces: tuple[str, str], config: str) -> None:
        self.config = config
        self.settings = LinkSettings.load(config)
        self.rng = random.Random(self.settings.seed)
        self.socks = []
        for name in ifaces:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.bind((name, ETH_P_ALL))
            s.setblocking(False)
            self.socks.append(s)
        # frames read from socks[0] leave by socks[1] and the other way round
        self.dirs = {self.socks[0]: Direction(self.socks[1]), self.socks[1]: Direction(self.socks[0])}
        self.seq = 0
        self.reload_pending = False
        self.stats_pending = False
        self.running = True
        self.scheduling = "not set"  # what raise_priority() got, reported with the counters

    def reload(self) -> None:
        self.settings = LinkSettings.load(self.config)
        self.rng = random.Random(self.settings.seed)

    def write_stats(self) -> None:
        names = ["a_to_b", "b_to_a"]
        stats: dict[str, object] = {n: d.stats for n, d in zip(names, self.dirs.values(), strict=True)}
        stats["settings"] = asdict(self.settings)
        stats["scheduling"] = self.scheduling
        tmp = self.config + ".stats.tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, self.config + ".stats")

    def receive(self, s: socket.socket, now: float) -> None:
        d = self.dirs[s]
        st = self.settings
        for _ in range(512):
            try:
                frame, anc, _flags, addr = s.recvmsg(65535, 64)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmissions on this interface
            for level, kind, raw in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and struct.unpack_from("=I", raw)[0] & \
                        TP_STATUS_CSUMNOTREADY:
                    frame = complete_checksum(frame)
            d.stats["frames"] += 1
            if st.loss and self.rng.random() < st.loss:
                d.stats["lost"] += 1
                continue
            if st.ike_loss and is_ike(frame) and self.rng.random() < st.ike_loss:
                d.stats["ike_lost"] += 1
                continue
            due = now + st.delay_ms / 1000.0
            if st.jitter_ms:
                due += self.rng.uniform(-st.jitter_ms, st.jitter_ms) / 1000.0
            if st.rate_kbit:
                start = max(now, d.link_free)
                d.link_free = start + len(frame) * 8 / (st.rate_kbit * 1000.0)
                due = max(due, d.link_free + st.delay_ms / 1000.0)
            if not st.reorder:
                due = max(due, d.last_due)
            d.last_due = due
            self.seq += 1
            heapq.heappush(d.queue, (due, self.seq, frame))

    def send_due(self, now: float) -> None:
        for d in self.dirs.values():
            while d.queue and d.queue[0][0] <= now:
                _, _, frame = heapq.heappop(d.queue)
                try:
                    d.out.send(frame)
                    d.stats["sent"] += 1
                except OSError:
                    d.stats["lost"] += 1

    def run(self) -> None:
        while self.running:
            if self.reload_pending:
                self.reload_pending = False
                self.reload()
            if self.stats_pending:
                self.stats_pending = False
                self.write_stats()
            now = time.monotonic()
            nxt = min((d.queue[0][0] for d in self.dirs.values() if d.queue), default=None)
            timeout = 0.5 if nxt is None else max(0.0, nxt - now - BUSY_WAIT)
            try:
                readable, _, _ = select.select(self.socks, [], [], timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for s in readable:
                self.receive(s, now)
            nxt = min((d.queue[0][0] for d in self.dirs.values() if d.queue), default=None)
            if nxt is not None and 0 < nxt - now <= BUSY_WAIT:
                while time.monotonic() < nxt:
                    pass
            self.send_due(time.monotonic())
        self.write_stats()


def raise_priority() -> str:
    """Make wake-ups punctual on a loaded machine: SCHED_FIFO where the kernel (and the cgroup's RT
    budget) allow it, else nice -20, else as is. Returns what it got, for the log; never fails."""
    try:
        # RESET_ON_FORK: nothing this process might start inherits the real-time class
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(RT_PRIORITY))
        return f"SCHED_FIFO priority {RT_PRIORITY}"
    except (OSError, AttributeError) as exc:
        fifo = f"SCHED_FIFO refused: {exc}"
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
        return f"SCHED_OTHER nice -20 ({fifo})"
    except OSError as exc:
        return f"SCHED_OTHER as started ({fifo}; nice -20 refused: {exc})"


def main() -> int:
    ap = argparse.ArgumentParser(description="user-space WAN link between two interfaces")
    ap.add_argument("--config", required=True, help="JSON settings (re-read on SIGHUP)")
    ap.add_argument("ifaces", nargs=2)
    args = ap.parse_args()
    try:
        emu = Emulator((args.ifaces[0], args.ifaces[1]), args.config)
    except (OSError, ValueError) as exc:
        print(f"wanem: {exc}", file=sys.stderr)
        return 1

    def on_hup(*_):
        emu.reload_pending = True

    def on_usr1(*_):
        emu.stats_pending = True

    def on_term(*_):
        emu.running = False

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    emu.scheduling = raise_priority()
    print(f"wanem: {args.ifaces[0]} <-> {args.ifaces[1]} {asdict(emu.settings)}; scheduling: {emu.scheduling}",
          flush=True)
    emu.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
