"""SIP messages parsed and tracked per second on one core, from captures.

    .venv/bin/python bench/sip_throughput.py [--pcap FILE ...] [--copies N] [--profile]

The captures' packets are read once into memory (reading pcap with scapy is not what is measured),
then each call's messages are replayed ``--copies`` times under fresh Call-IDs and tags, so that
every copy is a new dialog for the tracker rather than a retransmission. Three figures:
  parse        parse_message alone
  parse+track  DialogTracker.receive (parse, SDP, dialog state, flows, events)
  pipeline     decode_ip + SipExtractor (UDP and TCP reassembly) + DialogTracker, from raw IP packets
With --profile, the functions where parse+track spends its time.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import os
import pstats
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ipsecrtp.offline import ip_packets  # noqa: E402
from ipsecrtp.packet import SipExtractor, decode_ip  # noqa: E402
from ipsecrtp.sip.dialog import DialogTracker  # noqa: E402
from ipsecrtp.sip.message import parse_message  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
_TAG = re.compile(rb"(;\s*tag\s*=\s*[^;\s>,]+)")
_IDS = re.compile(rb"(?im)^(call-id|i|from|f|to|t)([ \t]*:[^\r\n]*)")


def load(paths: list[str]) -> tuple[list[tuple[float, bytes]], list[tuple[float, tuple, bytes, bool]]]:
    packets, messages = [], []
    for path in paths:
        ex = SipExtractor({5060})
        for t, data in ip_packets(path):
            packets.append((t, data))
            pkt = decode_ip(data)
            if pkt is None:
                continue
            for item, stream in ex.feed(pkt):
                if isinstance(item, bytes):
                    messages.append((t, (pkt.src, pkt.sport), item, stream))
    return packets, messages


def copies(messages, n: int) -> list[tuple[float, tuple, bytes, bool]]:
    """n copies of the message sequence, each under its own Call-IDs and tags, later in time."""
    span = (messages[-1][0] - messages[0][0]) + 1.0 if messages else 1.0
    out = []
    for k in range(n):
        suffix = b"-c%d" % k

        def rename(m: re.Match, suffix=suffix) -> bytes:
            value = m.group(2)
            if m.group(1).lower() in (b"call-id", b"i"):
                return m.group(1) + value + suffix
            return m.group(1) + _TAG.sub(lambda tm, suffix=suffix: tm.group(1) + suffix, value)

        for t, src, data, stream in messages:
            head, sep, body = data.partition(b"\r\n\r\n")
            out.append((t + k * span, src, _IDS.sub(rename, head) + sep + body, stream))
    return out


def rate(label: str, n: int, seconds: float) -> float:
    r = n / seconds
    print(f"{label:<12} {n:>8} messages in {seconds:6.3f} s = {r:>9,.0f} msg/s")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", nargs="*", default=sorted(glob.glob(os.path.join(DATA, "*.pcap*"))))
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    packets, messages = load(args.pcap)
    work = copies(messages, args.copies)
    print(f"{len(messages)} SIP messages in {len(args.pcap)} captures, x{args.copies} copies = {len(work)}")

    t0 = time.perf_counter()
    for _, _, data, stream in work:
        parse_message(data, stream=stream)
    rate("parse", len(work), time.perf_counter() - t0)

    tracker = DialogTracker(media_timeout=None)
    events = 0
    t0 = time.perf_counter()
    for t, src, data, stream in work:
        events += len(tracker.receive(data, t, src, stream=stream))
    track = rate("parse+track", len(work), time.perf_counter() - t0)
    print(f"{'':<12} {events} events, {len(tracker.dialogs)} dialogs held")

    reps = max(1, len(work) // max(1, len(messages)))
    t0 = time.perf_counter()
    n = 0
    for _ in range(reps):
        tr, ex = DialogTracker(media_timeout=None), SipExtractor({5060})
        for t, data in packets:
            pkt = decode_ip(data)
            if pkt is None:
                continue
            for item, stream in ex.feed(pkt):
                if isinstance(item, bytes):
                    n += 1
                    tr.receive(item, t, (pkt.src, pkt.sport), stream=stream)
    rate("pipeline", n, time.perf_counter() - t0)

    if args.profile:
        prof = cProfile.Profile()
        tracker = DialogTracker(media_timeout=None)
        prof.enable()
        for t, src, data, stream in work:
            tracker.receive(data, t, src, stream=stream)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    print(f"target 30,000 msg/s (parse+track): {'met' if track >= 30000 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
