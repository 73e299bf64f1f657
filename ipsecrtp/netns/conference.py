"""A conference through the gateway lab, keyed per leg (issue 17 item 3): what N legs cost and what
the others see when one leaves.

The bridge is gwb's user-agent address (host mode: the gateway anchors the media), the N
participants dial in from gwa's: N INVITEs from plain sockets, then the bridge's N answers back
to back, each leg one rtcp-mux flow on its own ports (``craft.py``). Measured per N, from
independent sources:

- CHILD_SAs: charon's ``list-sas`` on each gateway, the legs' selectors counted;
- IKE exchanges: requests on gwa's WAN (tcpdump, IKE headers parsed), while joining and at the leave;
- join time: from the last answer (its capture time in the answering gateway's ``keying`` line) to
  the last ``sa-up`` of the legs on either gateway (both ends keyed);
- the leave: leg 0 hangs up while every leg sends RTP (50 packets/s); the other legs' CHILD_SAs
  (charon's unique ids before and after) and the packets they delivered after the leave; and
  whether leg 0's SA went on both gateways.

``legs = "shared"`` (one CHILD_SA for all legs, re-keyed at each join and leave) is not built; the
README says what it would change, against these figures.
"""

from __future__ import annotations

import os
import secrets
import statistics
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from ..offline import ip_packets
from ..packet import decode_ip, ike_port
from ..timing import parse_ike
from .calls import Capture, log_events
from .craft import sdp, sip, udp_socket
from .lab import Lab
from .labstate import SIP_PORT
from .overlap import CharonSas
from .sharedsa import SharedSaRun, measure_shared

ROLES = ("gwa", "gwb")
PORT_A, PORT_B = 10000, 10100  # leg i: gwa's PORT_A + 2i to gwb's PORT_B + 2i (rtcp-mux: one flow)
PTIME = 0.02


@dataclass
class ConferenceRun:
    n: int
    child_sas: dict[str, int] = field(default_factory=dict)  # gateway -> CHILD_SAs covering the legs
    join_exchanges: dict[str, int] = field(default_factory=dict)  # IKE request type -> count, joining
    join_ms: float | None = None  # last answer -> every leg's SA up on both gateways
    leave_exchanges: dict[str, int] = field(default_factory=dict)
    departed_sa_gone: bool = False  # leg 0's SA down on both gateways after its BYE
    departed_still_covered: bool = True  # leg 0's ports in some CHILD_SA's selectors after the leave
    others_unchanged: bool = False  # the other legs' CHILD_SAs the same (unique ids) before and after
    others_sent: int = 0  # RTP the other legs sent after the leave
    others_received: int = 0
    others_lost_at_ms: list[int] = field(default_factory=list)  # when the lost ones were sent, ms after the BYE
    seconds: float = 0.0


def _exchanges(pcap: str, t0: float, t1: float) -> dict[str, int]:
    """IKE requests (not responses, retransmissions counted once) seen between t0 and t1."""
    seen, out = set(), Counter()
    for t, data in ip_packets(pcap):
        pkt = decode_ip(data)
        if pkt is None or pkt.proto != 17 or not t0 <= t <= t1 or not {500, 4500} & {pkt.sport, pkt.dport}:
            continue
        ike = parse_ike(pkt.payload, ike_port(pkt), t, pkt.src)
        if ike is not None and not ike.response and ike.key not in seen:
            seen.add(ike.key)
            out[ike.exchange] += 1
    return dict(out)


def leg_sas(lab: Lab, role: str, ports: set[int]) -> dict[str, tuple[str, ...]]:
    """uniqueid -> local selectors of the CHILD_SAs on ``role`` whose local side is one of ``ports``."""
    snap = CharonSas(lab, role)
    try:
        return {s.uniqueid: s.local for s in snap() if any(f"[udp/{p}]" in ts for ts in s.local for p in ports)}
    finally:
        snap.close()


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _events(lab: Lab, cids: list[str], event: str) -> dict[str, dict[str, list[dict]]]:
    return {r: {c: log_events(lab, r, c, event) for c in cids} for r in ROLES}


class Legs:
    """The N legs' SIP and media sockets: gwa's side (participants) and gwb's (the bridge)."""

    def __init__(self, lab: Lab, n: int, tag: str) -> None:
        self.lab, self.n = lab, n
        self.a, self.b = lab.ua_addr("gwa"), lab.ua_addr("gwb")
        self.cids = [f"conf{n}-{i}-{tag}" for i in range(n)]
        self.sip_a, self.sip_b = udp_socket(lab, "gwa"), udp_socket(lab, "gwb")
        self.rtp_a = [udp_socket(lab, "gwa", PORT_A + 2 * i) for i in range(n)]
        self.rtp_b = [udp_socket(lab, "gwb", PORT_B + 2 * i) for i in range(n)]
        for s in self.rtp_b:
            s.setblocking(False)

    def _send(self, by_a: bool, data: bytes) -> None:
        (self.sip_a if by_a else self.sip_b).sendto(data, ((self.b if by_a else self.a), SIP_PORT))

    def join(self) -> None:
        a, b = self.a, self.b
        for i, cid in enumerate(self.cids):
            self._send(True, sip(f"INVITE sip:bob@{b} SIP/2.0", cid, "1 INVITE", a, b, "", sdp(a, PORT_A + 2 * i)))
        time.sleep(0.2)  # every INVITE seen before the bridge answers: the answers come back to back
        for i, cid in enumerate(self.cids):
            self._send(False, sip("SIP/2.0 200 OK", cid, "1 INVITE", a, b, ";tag=b1", sdp(b, PORT_B + 2 * i)))
        for cid in self.cids:
            self._send(True, sip(f"ACK sip:bob@{b} SIP/2.0", cid, "1 ACK", a, b, ";tag=b1"))

    def leave(self, i: int) -> None:
        a, b, cid = self.a, self.b, self.cids[i]
        self._send(True, sip(f"BYE sip:bob@{b} SIP/2.0", cid, "2 BYE", a, b, ";tag=b1"))
        self._send(False, sip("SIP/2.0 200 OK", cid, "2 BYE", a, b, ";tag=b1"))

    def talk(self, seconds: float, seq0: int) -> int:
        """Every leg sends one RTP packet each PTIME for ``seconds``; returns the next sequence number."""
        seq, end = seq0, time.monotonic() + seconds
        while time.monotonic() < end:
            for i, s in enumerate(self.rtp_a):
                s.sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, i) + bytes(160),
                         (self.b, PORT_B + 2 * i))
            seq += 1
            time.sleep(PTIME)
        return seq

    def received(self) -> dict[int, set[int]]:
        """leg -> RTP sequence numbers its bridge socket got (drained)."""
        out: dict[int, set[int]] = {}
        for i, s in enumerate(self.rtp_b):
            got = out.setdefault(i, set())
            while True:
                try:
                    got.add(struct.unpack_from("!H", s.recv(2048), 2)[0])
                except BlockingIOError:
                    break
        return out

    def close(self) -> None:
        for s in [self.sip_a, self.sip_b, *self.rtp_a, *self.rtp_b]:
            s.close()


def run_conference(lab: Lab, n: int, timeout: float = 30.0) -> ConferenceRun:
    """One conference of ``n`` legs in a running lab: join, talk, leg 0 leaves, the rest hang up."""
    r, t0 = ConferenceRun(n), time.monotonic()
    pcap = os.path.join(lab.dir, f"conference-{n}.pcap")
    cap = Capture(lab, "gwa", pcap)
    if not _wait(lambda: "listening" in open(pcap + ".log").read(), 20.0):  # a loaded machine starts it late
        cap.stop()
        raise TimeoutError("tcpdump on gwa's WAN did not start listening within 20 s")
    legs = Legs(lab, n, secrets.token_hex(3))
    try:
        w0 = time.time()
        legs.join()
        ups = lambda: _events(lab, legs.cids, "sa-up")  # noqa: E731
        if not _wait(lambda: all(all(v.values()) for v in ups().values()), timeout):
            raise TimeoutError(f"not every leg of {n} keyed on both gateways within {timeout:.0f} s")
        sa_ups = ups()
        answers = [e["t"] for c in legs.cids for e in log_events(lab, "gwb", c, "keying")[:1]]
        last_up = max(e["ts"] for per in sa_ups.values() for lines in per.values() for e in lines[:1])
        r.join_ms = round((last_up - max(answers)) * 1000, 1)
        w1 = time.time()
        ports = {PORT_A + 2 * i for i in range(n)} | {PORT_B + 2 * i for i in range(n)}
        before = {role: leg_sas(lab, role, ports) for role in ROLES}
        r.child_sas = {role: len(v) for role, v in before.items()}
        seq = legs.talk(1.0, 0)
        legs.received()
        w2 = time.time()
        legs.leave(0)
        cut = seq
        seq = legs.talk(2.5, seq)  # past the teardown delay (1 s): leg 0's SA is gone by the end
        got = legs.received()
        r.others_sent = (seq - cut) * (n - 1)
        r.others_received = sum(len({s for s in got[i] if s >= cut}) for i in range(1, n))
        lost = sorted({s for i in range(1, n) for s in range(cut, seq) if s & 0xFFFF not in got[i]})
        r.others_lost_at_ms = [round((s - cut) * PTIME * 1000) for s in lost][:50]
        gone = lambda: all(log_events(lab, role, legs.cids[0], "sa-down") for role in ROLES)  # noqa: E731
        r.departed_sa_gone = _wait(gone, 5.0)
        after = {role: leg_sas(lab, role, ports) for role in ROLES}
        leg0 = f"[udp/{PORT_A}]", f"[udp/{PORT_B}]"
        r.departed_still_covered = any(p in ts for role in ROLES for loc in after[role].values() for ts in loc
                                       for p in leg0)
        r.others_unchanged = all(
            {u for u, loc in before[role].items() if not any(p in ts for ts in loc for p in leg0)} == set(after[role])
            for role in ROLES)
        w3 = time.time()
        for i in range(1, n):
            legs.leave(i)
        _wait(lambda: all(log_events(lab, "gwa", c, "sa-down") for c in legs.cids), timeout)
    finally:
        legs.close()
        cap.stop()
    r.join_exchanges = _exchanges(pcap, w0, w1)
    r.leave_exchanges = _exchanges(pcap, w2, w3)
    r.seconds = round(time.monotonic() - t0, 1)
    return r


def report(runs: list[ConferenceRun]) -> list[str]:
    lines = [f"{'N':>3} {'CHILD_SAs a/b':>13} {'IKE requests joining':<34} {'join ms':>8} "
             f"{'IKE requests at a leave':<26} {'others after leave':>19} {'departed SA gone':>16}"]
    for r in runs:
        fmt = lambda d: ", ".join(f"{v} {k}" for k, v in sorted(d.items())) or "none"  # noqa: E731
        lines.append(f"{r.n:>3} {r.child_sas.get('gwa', 0):>6}/{r.child_sas.get('gwb', 0):<6} "
                     f"{fmt(r.join_exchanges):<34} {r.join_ms:>8} {fmt(r.leave_exchanges):<26} "
                     f"{r.others_received:>8}/{r.others_sent:<5} SAs {'same' if r.others_unchanged else 'CHANGED':<4} "
                     f"{'yes' if r.departed_sa_gone else 'NO':>10}")
    return lines


def summary(runs: list[ConferenceRun]) -> list[str]:
    """Per N over the repeats: the join time's median and range, the counts as seen in every run."""
    out = []
    for n in sorted({r.n for r in runs}):
        rs = [r for r in runs if r.n == n]
        ms = sorted(r.join_ms for r in rs if r.join_ms is not None)
        sas = sorted({f"{r.child_sas.get('gwa', 0)}/{r.child_sas.get('gwb', 0)}" for r in rs})
        creates = sorted({r.join_exchanges.get("CREATE_CHILD_SA", 0) for r in rs})
        lost = sum(r.others_sent - r.others_received for r in rs)
        out.append(f"N={n:<3} runs {len(rs)}: CHILD_SAs {', '.join(sas)}; CREATE_CHILD_SA joining {creates}; "
                   f"last answer -> all legs keyed median {statistics.median(ms) if ms else '-'} ms "
                   f"(range {ms[0] if ms else '-'}-{ms[-1] if ms else '-'}); at a leave: others' SAs unchanged "
                   f"{sum(r.others_unchanged for r in rs)}/{len(rs)}, others' RTP lost {lost} of "
                   f"{sum(r.others_sent for r in rs)}, departed leg's SA gone "
                   f"{sum(r.departed_sa_gone for r in rs)}/{len(rs)}"
                   + (f"; the lost ones sent about {sorted({t for r in rs for t in r.others_lost_at_ms})} ms "
                      "after the BYE" if lost else ""))
    return out


def measure(ns: list[int], repeat: int = 1, name: str | None = None,
            legs: str = "per-leg") -> tuple[list[ConferenceRun], list[SharedSaRun]]:
    """One lab (child-per-call, the controllers keying per leg or with ``legs="shared"``): first
    what a shared CHILD_SA costs charon alone (``sharedsa.py``, before the controllers start),
    then a conference per N in turn, ``repeat`` rounds of each; the lab is removed after."""
    lab = Lab(name or "c" + secrets.token_hex(4))
    try:
        lab.up(controllers=False, legs=legs)
        shared = measure_shared(lab, ns, repeat)
        lab.start_controllers()
        return [run_conference(lab, n) for _ in range(repeat) for n in ns], shared
    finally:
        lab.down()
