"""Measuring the emulated WAN from the gateways: ping RTT and capture-timestamped one-way delay.

Independent of the emulator's own view: ``ping`` in one gateway, and tcpdump on both gateways'
``wan0`` timestamping the same UDP datagrams leaving one side and arriving at the other (the
namespaces share one clock).
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass

from ..offline import ip_packets
from ..packet import UDP, decode_ip
from . import proc
from .calls import Capture
from .lab import Lab

PROBE_PORT = 9  # discard: nothing listens, the datagrams only have to cross the link
_MAGIC = b"irtp-probe"


@dataclass(frozen=True)
class LinkMeasurement:
    rtt_ms: float  # ping average
    rtt_min_ms: float
    rtt_max_ms: float
    one_way_ms: tuple[float, ...]  # per datagram, gwa -> gwb, from the two captures
    sent: int
    received: int

    @property
    def one_way_mean(self) -> float:
        return statistics.fmean(self.one_way_ms) if self.one_way_ms else float("nan")

    def to_json(self) -> dict:
        ow = sorted(self.one_way_ms)
        return {"rtt_ms": self.rtt_ms, "rtt_min_ms": self.rtt_min_ms, "rtt_max_ms": self.rtt_max_ms,
                "one_way_mean_ms": round(self.one_way_mean, 3) if ow else None,
                "one_way_min_ms": round(ow[0], 3) if ow else None,
                "one_way_max_ms": round(ow[-1], 3) if ow else None,
                "sent": self.sent, "received": self.received}


def ping(lab: Lab, count: int = 10, interval: float = 0.05) -> tuple[float, float, float]:
    """(avg, min, max) RTT in ms; one unmeasured ping first, so that ARP is not in the figures."""
    dst = lab.state["gateways"]["gwb"]["wan"].split("/")[0]
    proc.run(lab.ns("gwa"), "ping", "-n", "-c", "1", "-W", "2", "-q", dst, check=False)
    r = proc.run(lab.ns("gwa"), "ping", "-n", "-c", str(count), "-i", str(interval), "-q", dst, check=False)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", r.stdout)
    if not m:
        return float("nan"), float("nan"), float("nan")
    return float(m.group(2)), float(m.group(1)), float(m.group(3))


def _send_probes(dst: str, n: int, gap: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(n):
            s.sendto(_MAGIC + struct.pack("!I", i), (dst, PROBE_PORT))
            time.sleep(gap)
    finally:
        s.close()


def _probe_times(pcap: str, src: str) -> dict[int, float]:
    out = {}
    for t, data in ip_packets(pcap):
        p = decode_ip(data)
        if (p is not None and p.proto == UDP and p.dport == PROBE_PORT and p.src == src
                and p.payload.startswith(_MAGIC) and len(p.payload) >= len(_MAGIC) + 4):
            out.setdefault(struct.unpack_from("!I", p.payload, len(_MAGIC))[0], t)
    return out


def measure(lab: Lab, probes: int = 50, gap: float = 0.01) -> LinkMeasurement:
    avg, lo, hi = ping(lab)
    a, b = lab.state["gateways"]["gwa"]["wan"].split("/")[0], lab.state["gateways"]["gwb"]["wan"].split("/")[0]
    with tempfile.TemporaryDirectory(dir=lab.dir) as tmp:
        caps = {role: Capture(lab, role, os.path.join(tmp, f"{role}.pcap")) for role in ("gwa", "gwb")}
        try:
            proc.in_netns(lab.ns("gwa"), _send_probes, b, probes, gap)
            settings = lab.state.get("wan", {}).get("settings", {})
            time.sleep(0.3 + 2 * settings.get("delay_ms", 0) / 1000.0)
        finally:
            for c in caps.values():
                c.stop()
        left, arrived = _probe_times(caps["gwa"].path, a), _probe_times(caps["gwb"].path, a)
    one_way = tuple((arrived[i] - left[i]) * 1000.0 for i in sorted(arrived) if i in left)
    return LinkMeasurement(avg, lo, hi, one_way, len(left), len(arrived))
