"""Overlapping calls through a gateway lab, played by sipp, and what the gateways held meanwhile.

``run_calls`` places calls from one gateway to the other with ``sipp/uac-overlap.xml`` and
``uas-overlap.xml``: each call starts, talks and ends when its ``Call`` says, with rtcp-mux SDP on
its own media ports, so that every call is exactly one RTP flow that names it. ``SaPoller``
samples the CHILD_SAs each gateway's charon lists (or, for ``pre-keyed``, the kernel's xfrm
policies) while the calls run, so that a test can tell when each call's SA came and went. sipp
runs in the lab's namespaces and is tracked in the lab's state like every other process, so that
``Lab.down`` stops it by pid even when a test fails halfway.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass

from ..keying.strongswan import Charon
from . import proc
from .lab import Lab
from .labstate import SIP_PORT, LabError

SIPP_DIR = os.path.join(os.path.dirname(__file__), "sipp")
# uas-overlap.xml rings this long before it answers
RING = 0.5


@dataclass(frozen=True)
class Call:
    start: float  # seconds after the first call's INVITE
    hold: float  # seconds from the ACK to the caller's BYE
    caller_port: int  # the caller's media port (rtcp-mux: its only one)
    callee_port: int

    @property
    def bye_at(self) -> float:
        """When the BYE leaves, in seconds after the first call's INVITE (as scheduled)."""
        return self.start + RING + self.hold


@dataclass(frozen=True)
class Selectors:
    """One call's media as a gateway's selectors name it (local first)."""

    local: str
    remote: str


def call_flow(lab: Lab, role: str, call: Call, caller: str = "gwa") -> Selectors:
    """The selectors of ``call``'s CHILD_SA on gateway ``role`` (host mode: the gateways are the endpoints)."""
    mine, other = (call.caller_port, call.callee_port) if role == caller else (call.callee_port, call.caller_port)
    peer = next(gw.role for gw in lab.topology if gw.role != role)
    return Selectors(f"{lab.ua_addr(role)}/32[udp/{mine}]", f"{lab.ua_addr(peer)}/32[udp/{other}]")


def _sipp(lab: Lab, role: str, name: str, argv: list[str]) -> subprocess.Popen:
    """Start sipp in ``role``'s namespace, recorded in the lab's state as soon as it runs (and
    ``Lab.down`` also stops anything else it finds in the lab's namespaces)."""
    d = lab.gw_dir(role)
    os.makedirs(d, mode=0o700, exist_ok=True)
    with open(os.path.join(d, f"sipp-{name}.out"), "ab") as log:
        # cwd: sipp writes its own files (screen, errors) next to where it runs, inside the lab
        p = subprocess.Popen(["ip", "netns", "exec", lab.ns(role), "sipp", *argv], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, cwd=d, start_new_session=True)
    st = None
    for _ in range(100):
        st = proc.start_time(p.pid)
        if st is not None:
            break
        time.sleep(0.01)
    lab.track(role, "sipp", p.pid, st or 0, lab.ns(role))
    return p


def _wait_listening(ns: str, addr: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"{addr}:{port} " in proc.run(ns, "ss", "-lnu", check=False).stdout:
            return
        time.sleep(0.05)
    raise LabError(f"sipp is not listening on {addr}:{port} in {ns}")


def run_calls(lab: Lab, calls: tuple[Call, ...], caller: str = "gwa", callee: str = "gwb",
              timeout: float = 60.0) -> float:
    """Place ``calls`` from caller's gateway to callee's (host mode, SIP on 5060 on both) and wait
    until all of them ended. Returns the wall-clock time the calls were started at."""
    if [c.start for c in calls] != sorted(c.start for c in calls):
        raise LabError("calls must be listed in the order they start (the callee answers them in that order)")
    uac_inf = os.path.join(lab.dir, "overlap-uac.csv")
    uas_inf = os.path.join(lab.dir, "overlap-uas.csv")
    with open(uac_inf, "w") as f:
        f.write("SEQUENTIAL\n" + "".join(f"{round(c.start * 1000)};{round(c.hold * 1000)};{c.caller_port}\n"
                                         for c in calls))
    with open(uas_inf, "w") as f:
        f.write("SEQUENTIAL\n" + "".join(f"{c.callee_port}\n" for c in calls))
    a, b = lab.ua_addr(caller), lab.ua_addr(callee)
    common = ["-m", str(len(calls)), "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error", "-p", str(SIP_PORT)]
    uas = _sipp(lab, callee, "uas", ["-sf", os.path.join(SIPP_DIR, "uas-overlap.xml"), "-inf", uas_inf, "-i", b,
                                     *common])
    _wait_listening(lab.ns(callee), b, SIP_PORT)
    started = time.time()
    # all calls are created at once (-r 100) and each waits for its own start (field0): sipp's
    # rate pacing alone staggers them too coarsely (1.5 s apart came out as 0, 1.5, 4.5 s)
    uac = _sipp(lab, caller, "uac", [f"{b}:{SIP_PORT}", "-sf", os.path.join(SIPP_DIR, "uac-overlap.xml"),
                                     "-inf", uac_inf, "-i", a, "-r", "100", *common])
    for name, p in (("caller", uac), ("callee", uas)):
        try:
            rc = p.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            raise LabError(f"sipp ({name}) did not finish within {timeout + 10:.0f} s") from None
        if rc != 0:
            raise LabError(f"sipp ({name}) exited with {rc}: not every call completed "
                           f"(see {lab.gw_dir(caller if name == 'caller' else callee)}/sipp-*.out)")
    return started


@dataclass(frozen=True)
class Sa:
    """A CHILD_SA (or, pre-keyed, an outbound xfrm policy) as one poll saw it."""

    local: tuple[str, ...]
    remote: tuple[str, ...]
    name: str = ""
    uniqueid: str = ""
    ike_id: str = ""


class CharonSas:
    """Snapshots of ``role``'s installed CHILD_SAs, over one VICI session kept for the polls."""

    def __init__(self, lab: Lab, role: str) -> None:
        self.charon = Charon(lab.vici(role))

    def __call__(self) -> list[Sa]:
        return [Sa(tuple(c.get("local-ts", [])), tuple(c.get("remote-ts", [])), c.get("name", ""),
                   c.get("uniqueid", ""), c.get("ike-id", ""))
                for c in self.charon.child_sas() if c.get("state") == "INSTALLED"]

    def close(self) -> None:
        self.charon.close()


_POLICY = re.compile(r"^src (\S+) dst (\S+)(?: proto udp)?(?: sport (\d+))?(?: dport (\d+))?")


class XfrmOutPolicies:
    """Snapshots of ``role``'s outbound xfrm policies (pre-keyed has no charon SAs), each named by
    the selectors charon would list for the same flow."""

    def __init__(self, lab: Lab, role: str) -> None:
        self.ns = lab.ns(role)

    def __call__(self) -> list[Sa]:
        out: list[Sa] = []
        sel = None
        for line in proc.run(self.ns, "ip", "xfrm", "policy", "list", check=False).stdout.splitlines():
            m = _POLICY.match(line)
            if m:
                src, dst, sport, dport = m.groups()
                sel = (f"{src}[udp/{sport}]" if sport else src, f"{dst}[udp/{dport}]" if dport else dst)
            elif sel is not None and line.strip().startswith("dir out"):
                out.append(Sa((sel[0],), (sel[1],), "pre-keyed"))
                sel = None
            elif line.strip().startswith("dir "):
                sel = None
        return out

    def close(self) -> None:
        pass


Snapshot = CharonSas | XfrmOutPolicies


class SaPoller(threading.Thread):
    """Samples each gateway every ``period`` seconds: ``samples`` is a list of (wall-clock time,
    role, SAs). A failed sample (charon busy or gone) is recorded as None, never as "no SA"."""

    def __init__(self, snapshots: dict[str, Snapshot], period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.snapshots = snapshots
        self.period = period
        self.samples: list[tuple[float, str, list[Sa] | None]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for role, snap in self.snapshots.items():
                t = time.time()
                try:
                    sas: list[Sa] | None = snap()
                except Exception:  # noqa: BLE001 - a failed poll is "unknown", and the next one may work
                    sas = None
                self.samples.append((t, role, sas))
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
        for snap in self.snapshots.values():
            snap.close()

    def presence(self, role: str, flow: Selectors) -> list[tuple[float, list[Sa]]]:
        """Per sample of ``role``: its time and the SAs whose selectors are exactly ``flow``."""
        return [(t, [s for s in sas if s.local == (flow.local,) and s.remote == (flow.remote,)])
                for t, r, sas in self.samples if r == role and sas is not None]
