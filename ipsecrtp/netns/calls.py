"""Driving real calls through the lab and reading what the wire and charon show of them.

Shared by ``ipsecrtp lab demo`` and the integration tests. What it reads comes from
independent sources: tcpdump's capture of the WAN, charon's list-sas, the kernel's rules.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import dataclass, field

from ..keying.strongswan import Charon
from ..log import read_log
from ..offline import ip_packets
from ..packet import UDP, decode_ip
from ..timescale import scaled
from . import proc
from .baresip import BaresipControl, hostport
from .lab import Lab
from .labstate import RTP_PORTS, SIP_PORT


@dataclass
class CallResult:
    call_id: str
    scenario: str
    answered: bool
    sa_up: dict[str, float] = field(default_factory=dict)  # gateway -> wall-clock time of sa-up
    sa_down: dict[str, float] = field(default_factory=dict)
    children: dict[str, list[dict]] = field(default_factory=dict)  # gateway -> child SAs while up
    kernel: dict[str, dict] = field(default_factory=dict)  # gateway -> xfrm SAs/policies while up (kernel-netlink)
    sas: dict[str, dict] = field(default_factory=dict)  # gateway -> `ipsecrtp sas` report while up
    keying: list[dict] = field(default_factory=list)
    established_at: float | None = None
    answered_at: float | None = None  # the 200 OK as the answering gateway's controller saw it
    ports: set[int] = field(default_factory=set)  # the call's RTP/RTCP ports, both sides
    closed_at: float | None = None


def log_events(lab: Lab, role: str, call_id: str | None = None, event: str | None = None) -> list[dict]:
    return [e for e in read_log(lab.controller_log(role))
            if (call_id is None or e.get("call") == call_id) and (event is None or e.get("event") == event)]


def wait_log(lab: Lab, role: str, call_id: str, event: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = log_events(lab, role, call_id, event)
        if found:
            return found[0]
        time.sleep(0.05)
    raise TimeoutError(f"{role}: no {event!r} for call {call_id} within {timeout}s")


class Capture:
    """tcpdump on a gateway's WAN interface: the independent view of what crossed the WAN (or, with
    ``phone``, on the LAN interface of that gateway's phone: what the phone really sent and got)."""

    def __init__(self, lab: Lab, role: str, path: str, phone: bool = False) -> None:
        self.path = path
        ns = lab.ua_ns(role) if phone else lab.ns(role)
        argv = ["tcpdump", "--immediate-mode", "-U", "-n", "-i", "lan0" if phone else "wan0", "-w", path,
                "udp or tcp or esp"]
        self.pid, self.start = proc.spawn(ns, argv, path + ".log")
        lab.track(role, "tcpdump", self.pid, self.start, ns)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.path.exists(path) and "listening" in open(path + ".log").read():
                return
            time.sleep(0.05)

    def stop(self) -> None:
        time.sleep(0.5)
        proc.kill(self.pid, self.start, grace=3.0)


@dataclass
class WireStats:
    sip: list[tuple[float, str, str]] = field(default_factory=list)  # time, src, dst
    esp: list[tuple[float, str, str, int]] = field(default_factory=list)  # time, src, dst, spi
    rtp_clear: list[tuple[float, str, int, str, int]] = field(default_factory=list)


def _plain_esp(data: bytes) -> tuple[str, str, int] | None:
    """(src, dst, SPI) of an IPv4/IPv6 packet carrying ESP directly (IP protocol 50)."""
    import ipaddress

    if len(data) >= 28 and data[0] >> 4 == 4 and data[9] == 50:
        ihl = (data[0] & 0x0F) * 4
        return (str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20])),
                struct.unpack_from("!I", data, ihl)[0])
    if len(data) >= 48 and data[0] >> 4 == 6 and data[6] == 50:
        return (str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40])),
                struct.unpack_from("!I", data, 40)[0])
    return None


def wire_stats(pcap: str, rtp_ports: tuple[int, int] = RTP_PORTS) -> WireStats:
    """What a WAN capture holds; ``rtp_ports``: the lab's media range (``Lab.rtp_ports``)."""
    out = WireStats()
    lo, hi = rtp_ports
    for t, data in ip_packets(pcap):
        esp = _plain_esp(data)
        if esp is not None:  # kernel ESP without NAT is not UDP-encapsulated (kernel-netlink)
            out.esp.append((t, *esp))
            continue
        p = decode_ip(data)
        if p is None or p.proto != UDP:
            if p is not None and SIP_PORT in (p.sport, p.dport):
                out.sip.append((t, p.src, p.dst))
            continue
        if SIP_PORT in (p.sport, p.dport):
            out.sip.append((t, p.src, p.dst))
        elif 4500 in (p.sport, p.dport) and len(p.payload) >= 8:
            spi = struct.unpack_from("!I", p.payload)[0]
            if spi:
                out.esp.append((t, p.src, p.dst, spi))
        elif lo <= p.sport <= hi + 1 or lo <= p.dport <= hi + 1:
            # one side is enough: a NAT may have given the other any port
            out.rtp_clear.append((t, p.src, p.sport, p.dst, p.dport))
    return out


def child_sas(lab: Lab, role: str) -> list[dict]:
    c = Charon(lab.vici(role))
    try:
        return c.child_sas()
    finally:
        c.close()


def flow_rules(lab: Lab, role: str) -> list[str]:
    """Every keyed flow the gateway routes into charon's TUN: per-flow policy-routing rules (none
    expected) and the data plane's keyed set elements (kernel-libipsec)."""
    r = proc.run(lab.ns(role), "ip", "rule", "show", check=False)
    rules = [ln.strip() for ln in r.stdout.splitlines() if "ipproto udp" in ln]
    for s in ("keyed4", "keyed6", "ranges4", "ranges6"):
        listing = proc.run(lab.ns(role), "nft", "list", "set", "inet", "ipsecrtp_dp", s, check=False).stdout
        if "elements = {" in listing:
            body = listing.split("elements = {", 1)[1].split("}", 1)[0]
            rules += [f"{s} {e.strip()}" for e in body.replace("\n", " ").split(",") if e.strip()]
    return rules


class Phones:
    """The two gateways' baresip instances."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ctl = {gw.role: BaresipControl(lab.ua_ns(gw.role), timeout=scaled(15)) for gw in lab.topology}

    def close(self) -> None:
        for c in self.ctl.values():
            c.close()

    def call(self, scenario: str, talk: float = 2.0, timeout: float = scaled(15.0), ring: float | None = None,
             keyed: bool = True, reverse: bool = False) -> CallResult:
        """scenario: 'caller-hangup', 'callee-hangup' or 'cancel' (callee rings, caller gives up).
        ``ring``: the callee answers by hand after ringing this long (else at once, auto-answer).
        ``keyed=False``: a call that cannot be keyed (no SA is waited for, none looked at).
        ``reverse``: gwb's phone calls gwa's (so gwa, the answerer's gateway, keys it)."""
        a, b = self.lab.topology[0], self.lab.topology[1]
        if reverse:
            a, b = b, a
        ca, cb = self.ctl[a.role], self.ctl[b.role]
        user = "ring-" + b.user if scenario == "cancel" or ring is not None else b.user
        ca.events.clear()
        cb.events.clear()
        ca.command("dial", f"sip:{user}@{hostport(self.lab.ua_addr(b.role))}")
        if ring is not None and scenario != "cancel":
            cb.wait_event({"CALL_INCOMING"}, timeout)
            time.sleep(ring)
            cb.command("accept")
        if scenario == "cancel":
            ev = ca.wait_event({"CALL_RINGING"}, timeout)
            res = CallResult(ev.get("id", ""), scenario, answered=False)
            time.sleep(0.5)
            ca.command("hangup")
            ca.wait_event({"CALL_CLOSED"}, timeout)
            cb.wait_event({"CALL_CLOSED"}, timeout)
            res.closed_at = time.time()
            return res
        ev = ca.wait_event({"CALL_ESTABLISHED"}, timeout)
        cb.wait_event({"CALL_ESTABLISHED"}, timeout)
        res = CallResult(ev.get("id", ""), scenario, answered=True, established_at=time.time())
        for gw in (a, b) if keyed else ():
            res.sa_up[gw.role] = wait_log(self.lab, gw.role, res.call_id, "sa-up", timeout)["ts"]
        res.answered_at = wait_log(self.lab, b.role, res.call_id, "dialog-confirmed", timeout)["t"]
        for f in wait_log(self.lab, b.role, res.call_id, "keying", timeout)["flows"]:
            res.ports |= {int(f["offerer"].rsplit(":", 1)[1]), int(f["answerer"].rsplit(":", 1)[1])}
        time.sleep(talk)
        for gw in (a, b) if keyed else ():
            res.children[gw.role] = child_sas(self.lab, gw.role)
            if self.lab.state.get("backend") == "kernel-netlink":
                from ..kernel.view import kernel_view

                res.kernel[gw.role] = proc.in_netns(self.lab.ns(gw.role), kernel_view)
            from ..views import gateway_sas  # what `ipsecrtp sas` shows while the call is up

            res.sas[gw.role] = gateway_sas(gw.role, self.lab.vici(gw.role), self.lab.controller_log(gw.role),
                                           self.lab.ns(gw.role))
        (ca if scenario == "caller-hangup" else cb).command("hangup")
        ca.wait_event({"CALL_CLOSED"}, timeout)
        cb.wait_event({"CALL_CLOSED"}, timeout)
        res.closed_at = time.time()
        for gw in (a, b):
            if keyed:
                res.sa_down[gw.role] = wait_log(self.lab, gw.role, res.call_id, "sa-down", timeout)["ts"]
            res.keying.extend(dict(e, gw=gw.role) for e in log_events(self.lab, gw.role, res.call_id))
        res.keying.sort(key=lambda e: e["ts"])
        return res


def tshark_available() -> bool:
    return shutil.which("tshark") is not None
