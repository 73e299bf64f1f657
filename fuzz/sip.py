"""Mutation fuzzer for the SIP/SDP core: real messages in, mutated, fed to every pure entry point.

    python -m fuzz.sip --iterations 100000 --seed 1 [--save DIR]

Seeds are the SIP messages of the captures in tests/data (real baresip, sipp and kamailio traffic)
and the RFC 4475 cases. Each mutant goes through ``parse_message``, ``parse_sdp`` on its body,
a long-lived ``DialogTracker`` (so that state built by earlier mutants is exercised) and a
``StreamFramer`` fed in random slices. The only exceptions allowed out are ``SipParseError`` and
``SdpError`` from the two parsers; the tracker and the framer must never raise. A failure prints
the exception and, with ``--save``, writes the input for a regression test.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field

from ipsecrtp.offline import ip_packets
from ipsecrtp.packet import SipExtractor, decode_ip
from ipsecrtp.sip.dialog import DialogTracker
from ipsecrtp.sip.errors import SipParseError
from ipsecrtp.sip.message import StreamFramer, parse_message
from ipsecrtp.sip.sdp import SdpError, parse_sdp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERESTING = [b"0", b"-1", b"4294967296", b"99999999999999999999", b"65536", b"", b" ", b"\t", b"\r\n ",
               b";", b",", b"<", b">", b'"', b"\\", b"[", b"]", b":", b"@", b"=", b"%00", b"\x00", b"\xff",
               b"0.0.0.0", b"::", b"IN IP6 ::1", b"/", b"/0", b"/65535", b"SIP/2.0", b"tag=", b"branch="]


def corpus() -> list[bytes]:
    seeds: list[bytes] = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "*.pcap*"))):
        ex = SipExtractor({5060, 5070, 5080})
        for _, data in ip_packets(path):
            pkt = decode_ip(data)
            if pkt is not None:
                seeds.extend(m for m, _ in ex.feed(pkt) if isinstance(m, bytes))
    spec = importlib.util.spec_from_file_location("torture", os.path.join(ROOT, "tests", "sip", "torture.py"))
    if spec and spec.loader:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        seeds.extend(m for m, _ in mod.VALID.values())
    if not seeds:
        raise SystemExit("fuzz: no seed messages found under tests/data")
    return seeds


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert an interesting token
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and buf:  # delete a span
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 3 and buf:  # duplicate a span
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end]
        elif op == 4:  # replace a number with an extreme one
            digits = [i for i, c in enumerate(buf) if 48 <= c <= 57]
            if digits:
                i = rng.choice(digits)
                j = i
                while j < len(buf) and 48 <= buf[j] <= 57:
                    j += 1
                buf[i:j] = rng.choice(INTERESTING[:5])
        elif op == 5:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 6:  # shuffle header lines
            head, sep, body = bytes(buf).partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if len(lines) > 2:
                rest = lines[1:]
                rng.shuffle(rest)
                buf = bytearray(b"\r\n".join([lines[0], *rest]) + sep + body)
        elif op == 7:  # drop or double a line end
            i = bytes(buf).find(b"\r\n", pos)
            if i >= 0:
                buf[i:i + 2] = rng.choice([b"", b"\n", b"\r\n\r\n", b"\r\n \r\n"])
        else:  # mutate an SDP line
            i = bytes(buf).find(b"\nm=", pos) if rng.random() < 0.5 else bytes(buf).find(b"\nc=", pos)
            if i >= 0:
                buf[i + 3:i + 3] = rng.choice(INTERESTING)
    return bytes(buf)


@dataclass
class Result:
    iterations: int = 0
    parsed: int = 0
    rejected: int = 0
    events: int = 0
    seconds: float = 0.0
    failures: list[tuple[bytes, str]] = field(default_factory=list)


def one(data: bytes, tracker: DialogTracker, now: float, rng: random.Random, res: Result) -> None:
    try:
        msg = parse_message(data)
        res.parsed += 1
        body = msg.sdp_body()
        if body:
            try:
                parse_sdp(body)
            except SdpError:
                pass
    except SipParseError:
        res.rejected += 1
    res.events += len(tracker.receive(data, now, ("192.0.2.1", 5060)))
    if rng.random() < 0.05:
        tracker.handle_timer(now + rng.choice([0.0, 31.0, 200.0]))
    framer = StreamFramer()
    i = 0
    while i < len(data):
        step = rng.randint(1, 512)
        for item in framer.feed(data[i:i + step]):
            if isinstance(item, bytes):
                tracker.receive(item, now, ("192.0.2.1", 5060), stream=True)
        i += step


def run(iterations: int, seed: int = 1, save: str | None = None) -> Result:
    rng = random.Random(seed)
    seeds = corpus()
    tracker = DialogTracker(media_timeout=30.0)
    res = Result()
    t0 = time.perf_counter()
    for n in range(iterations):
        data = mutate(rng, rng.choice(seeds), seeds)
        try:
            one(data, tracker, float(n) * 0.01, rng, res)
        except Exception:  # noqa: BLE001 - anything escaping is the finding
            res.failures.append((data, traceback.format_exc(limit=3)))
            if save:
                os.makedirs(save, exist_ok=True)
                with open(os.path.join(save, f"crash-{seed}-{n}.sip"), "wb") as f:
                    f.write(data)
            tracker = DialogTracker(media_timeout=30.0)
        res.iterations += 1
    res.seconds = time.perf_counter() - t0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", help="directory for failing inputs")
    args = ap.parse_args()
    res = run(args.iterations, args.seed, args.save)
    print(f"{res.iterations} mutants in {res.seconds:.1f} s ({res.iterations / res.seconds:.0f}/s): "
          f"{res.parsed} parsed, {res.rejected} rejected, {res.events} events, {len(res.failures)} failures")
    for data, tb in res.failures[:5]:
        print(f"--- input {data[:120]!r}\n{tb}")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
