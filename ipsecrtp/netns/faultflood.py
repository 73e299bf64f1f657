"""A SIP flood in the lab (issue 15 item 6): junk and never-answered INVITEs from one source address.

The attacker is an address of its own on gwa's WAN link (so that the per-source dialog cap tells it
from the peer gateway, which places the legitimate calls), the target one of its own on gwb's, where
nothing listens on 5060: the INVITEs are never answered, yet both controllers see every message on
their WAN interface (gwa's going out, gwb's coming in). Half the messages are INVITEs, each with a
Call-ID of its own and an SDP offer; the other half junk (truncated start lines, binary, headers
without a request line). The sender paces itself in bursts every 10 ms and writes what it sent.

    python -m ipsecrtp.netns.faultflood --src 198.51.100.66 --dst 198.51.100.67 --rate 10000 --seconds 60 \\
        --stats F
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import time
import urllib.request

from ..hostile_inputs import message, sdp
from . import proc
from .labstate import LabState

ATTACKER_HOST, TARGET_HOST = 66, 67  # host numbers in the WAN prefix (the gateways are .1 and .2)
BURST_S = 0.01
JUNK = (b"INVITE sip:x SIP/2.0\r\n\r\n", b"\x00\x01\x02\x03" * 60, b"SIP/2.0 banana\r\nCall-ID:\r\n\r\n",
        b"Via: SIP/2.0/UDP 1.2.3.4\r\nCSeq: x\r\n\r\n", b"REGISTER\r\n" + b"A" * 300, b"\r\n\r\n")


def addresses(lab: LabState) -> tuple[str, str]:
    """The attacker's address (on gwa) and the target's (on gwb), in the WAN prefix."""
    net = ipaddress.ip_interface(lab.state["gateways"]["gwa"]["wan"]).network
    return str(net[ATTACKER_HOST]), str(net[TARGET_HOST])


def add_addresses(lab: LabState) -> tuple[str, str]:
    """Put the attacker and the target on the WAN link (removed with the namespaces)."""
    src, dst = addresses(lab)
    prefix = ipaddress.ip_interface(lab.state["gateways"]["gwa"]["wan"]).network.prefixlen
    proc.run(lab.ns("gwa"), "ip", "addr", "add", f"{src}/{prefix}", "dev", "wan0")
    proc.run(lab.ns("gwb"), "ip", "addr", "add", f"{dst}/{prefix}", "dev", "wan0")
    return src, dst


def start(lab: LabState, rate: int, seconds: float, stats: str) -> tuple[int, int]:
    """The sender in gwa's namespace (tracked by the lab: ``down`` stops it whatever happens)."""
    src, dst = add_addresses(lab)
    argv = [sys.executable, "-m", "ipsecrtp.netns.faultflood", "--src", src, "--dst", dst, "--rate", str(rate),
            "--seconds", str(seconds), "--stats", stats]
    pid, st = proc.spawn(lab.ns("gwa"), argv, stats + ".log")
    lab.track("gwa", "flood", pid, st, lab.ns("gwa"))
    return pid, st


def evictions(lab: LabState, role: str) -> float:
    """The controller's ``ipsecrtp_dialogs_evicted_total`` (all caps and states), scraped over HTTP
    from inside its namespace (its exporter is on the gateway's own loopback)."""
    from prometheus_client.parser import text_string_to_metric_families

    from .labdaemons import METRICS_ADDR

    def get() -> str:
        with urllib.request.urlopen(f"http://{METRICS_ADDR}/metrics", timeout=5) as r:
            return r.read().decode()

    return sum(s.value for fam in text_string_to_metric_families(proc.in_netns(lab.ns(role), get))
               for s in fam.samples if s.name == "ipsecrtp_dialogs_evicted_total")


def rss(lab: LabState) -> dict[str, dict[str, float]]:
    """Each controller's resident memory now and at its peak (VmRSS, VmHWM), MiB."""
    out = {}
    for p in lab.state["procs"]:
        if p["kind"] == "controller" and proc.alive(p["pid"], p["start"]):
            with open(f"/proc/{p['pid']}/status") as f:
                mem = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in f if ln.startswith(("VmRSS:", "VmHWM:"))}
            out[p["role"]] = {"rss_mb": round(mem.get("VmRSS", 0.0), 1), "peak_mb": round(mem.get("VmHWM", 0.0), 1)}
    return out


def invite(i: int, src: str) -> bytes:
    body = sdp(src, 20000 + (2 * i) % 20000)
    return message("INVITE sip:bob@203.0.113.20 SIP/2.0", f"flood-{i}@{src}", "1 INVITE", src=src, body=body,
                   branch=f"z9hG4bK-f{i}")


def send(src: str, dst: str, rate: int, seconds: float) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 5060))
    s.setblocking(False)
    per_burst = max(1, round(rate * BURST_S))
    sent = errors = i = 0
    t0 = time.monotonic()
    next_burst = t0
    while time.monotonic() - t0 < seconds:
        for _ in range(per_burst):
            data = invite(i // 2, src) if i % 2 == 0 else JUNK[(i // 2) % len(JUNK)]
            i += 1
            try:
                s.sendto(data, (dst, 5060))
                sent += 1
            except OSError:  # a full socket buffer: counted, the flood goes on
                errors += 1
        next_burst += BURST_S
        time.sleep(max(0.0, next_burst - time.monotonic()))
    elapsed = time.monotonic() - t0
    return {"sent": sent, "errors": errors, "invites": (i + 1) // 2, "seconds": round(elapsed, 2),
            "rate": round(sent / elapsed) if elapsed else 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    out = send(a.src, a.dst, a.rate, a.seconds)
    tmp = a.stats + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, a.stats)


if __name__ == "__main__":
    main()
