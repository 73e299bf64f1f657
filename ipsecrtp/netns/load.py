"""A gateway's busy hour in the lab (``ipsecrtp bench load``, issue 14).

One run, in a lab of its own (unique name, removed at the end whatever happens):

1. the lab with charons only, then the **raw charon figure**: a benchmark connection of fixed
   children on an IKE_SA of its own between the same two charons, CHILD_SAs created and deleted one
   after the other over VICI for a few seconds, no controller; every result is also a ratio to it;
2. the controllers, their peer IKE_SA (strategies that pre-establish it), a snapshot of what the
   kernel and charon hold, a tcpdump of gwa's WAN, an RTP sender per gateway (``rtpsend``), the
   processes' CPU counters;
3. a sipp callee in gwb and a sipp caller in gwa: ``calls`` calls at ``rate`` a second, each
   answered at once and held ``hold`` s (scenarios ``sipp/uac-load.xml``, ``sipp/uas-load.xml``);
4. once every SA is gone again (or nothing moves any more), CPU and peak RSS, and what is left
   compared with the snapshot (SAs, xfrm policies and states, rules and routes in table 220, child
   configs): leaks.

The charons' side comes from ``loadcharon``, the run's processes from ``loadprocs``, the figures
themselves from ``loadreport``.
"""

from __future__ import annotations

import datetime
import os
import platform
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass

from ..keying.strongswan import KeyingError
from ..log import read_log
from . import loadprocs as lp
from . import loadreport as lr
from .lab import Lab
from .labstate import LabError
from .loadcharon import inventory, raw_charon, settle, udp_drops
from .loadprocs import SIPP_PORT_STEP, SIPP_PORT_WRAP, LoadError
from .sockbuf import grow_rcvbuf
from .wanem import LinkSettings

GATEWAYS = ("gwa", "gwb")


def ports_needed(calls: int, lo: int) -> tuple[int, int]:
    """The media ports the sipp scenarios use for ``calls`` calls: lo, lo + 4, ... (wrapping after 2,500)."""
    n = min(calls, SIPP_PORT_WRAP // SIPP_PORT_STEP)
    return lo, lo + SIPP_PORT_STEP * (n - 1)


def loadavg() -> float:
    """The machine's 1-minute load average: other work on a shared machine moves every figure."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu, "host": platform.node()}


# -- the run ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Params:
    rate: float = 20.0  # calls offered a second
    calls: int = 300
    hold: float = 10.0  # seconds from the answer to the caller's BYE
    rtt: float = 0.0  # ms; 0: a plain veth between the gateways, else the WAN emulator
    strategy: str = "child-per-call"
    ike_pool: int = 1  # IKE_SAs per peer (``ike_pool`` in [[peer]]), calls spread over them round robin
    rtp_ports: tuple[int, int] = (10000, 19999)
    ptime: float = 100.0  # ms between RTP packets of a stream
    charon: tuple[str, ...] = ()  # extra lines for both charons' strongswan.conf (tuning, e.g. retransmit_timeout)
    charon_rcvbuf: int = 0  # bytes: a bigger receive buffer on charon's IKE/NAT-T sockets (sockbuf); 0: as is
    raw_seconds: float = 3.0
    settle_timeout: float = 120.0
    profile_dir: str | None = None  # py-spy's samples of both controllers land here (when py-spy is installed)
    logs_dir: str | None = None  # the lab's logs and capture are copied here before it is removed

    def check(self) -> None:
        if (self.rate <= 0 or self.calls < 1 or self.hold < 0 or self.rtt < 0 or self.ptime <= 0 or self.ike_pool < 1
                or self.charon_rcvbuf < 0):
            raise LoadError("need rate > 0, calls >= 1, hold >= 0, rtt >= 0, ptime > 0, ike_pool >= 1, "
                            "charon_rcvbuf >= 0")
        lo, hi = self.rtp_ports
        top = ports_needed(self.calls, lo)[1]
        if top > hi or lo - SIPP_PORT_STEP < 1024:
            raise LoadError(f"RTP ports {lo}-{hi} hold fewer than {self.calls} calls: sipp gives each call a port of "
                            f"its own, {SIPP_PORT_STEP} apart, so they need {lo}-{top}")
        for tool in ("sipp", "tcpdump"):
            if shutil.which(tool) is None:
                raise LoadError(f"{tool} not found: run scripts/setup.sh")
        if self.profile_dir and lp.py_spy() is None:
            raise LoadError("py-spy not found (pip install py-spy, into the venv)")


def run(name: str | None = None, progress: Callable[[str], None] = lambda m: None, **params) -> dict:
    """Everything in the module docstring, with ``Params(**params)``; returns the report
    (``loadreport.format_text`` prints it). The lab is removed whatever happens."""
    p = Params(**params)
    p.check()
    lab = Lab(name or "load" + secrets.token_hex(3))
    started = datetime.datetime.now(datetime.UTC)
    try:
        progress(f"lab {lab.name}: charons")
        lab.up(wan=LinkSettings(delay_ms=p.rtt / 2) if p.rtt > 0 else None, strategy=p.strategy,
               rtp_ports=p.rtp_ports, ike_pool=p.ike_pool, controllers=False,
               charon_extra="\n".join("  " + ln.strip() for ln in p.charon if ln.strip()))
        if p.charon_rcvbuf:
            for r in GATEWAYS:
                grow_rcvbuf(next(x["pid"] for x in lab.state["procs"] if x["role"] == r and x["kind"] == "charon"),
                            p.charon_rcvbuf)
        raw = raw_charon(lab, seconds=p.raw_seconds)
        progress(f"raw charon: {raw['create_per_s']} CREATE_CHILD_SA/s, {raw['cycle_per_s']} create+delete/s")
        lab.start_controllers()
        if p.strategy in ("child-per-call", "speculative"):
            # every member of the pool: a call sent to a member not up yet would pay for its IKE_SA
            lp.wait_for(f"the peer's {p.ike_pool} IKE_SA(s)", lambda: len(pool_members(lab)) >= p.ike_pool,
                        30 + 5 * p.ike_pool)
        rep = _calls(lab, p, progress)
        rep.update(date=started.strftime("%Y-%m-%d %H:%M UTC"), machine=machine(), backend=lab.state.get("backend"),
                   lab=lab.name, raw_charon=raw)
        keyed_per_s = rep["calls"]["keyed_per_s"]
        rep["calls"]["keyed_vs_raw"] = (round(keyed_per_s / raw["create_per_s"], 3)
                                        if keyed_per_s and raw["create_per_s"] else None)
        return rep
    except (LabError, KeyingError, OSError) as exc:
        raise LoadError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    finally:
        try:
            if p.logs_dir and lab.owned:
                keep_logs(lab, p.logs_dir)
        finally:
            lab.down()  # whatever copying the logs did


def pool_members(lab: Lab) -> set:
    """The pool members with an IKE_SA up, from either controller's log: ike-up names the member's
    connection (peer-X for member 0, peer-X-K for member K). Not ike-preestablished alone: a member
    the other gateway brought up first is found up and not logged as pre-established."""
    out = set()
    for r in GATEWAYS:
        for e in read_log(lab.controller_log(r)):
            if e.get("event") == "ike-preestablished":
                out.add(e.get("member"))
            elif e.get("event") == "ike-up" and str(e.get("conn", "")).startswith("peer-"):
                _peer, _, k = e["conn"].removeprefix("peer-").partition("-")
                out.add(int(k) if k.isdigit() else 0)
    return out


def keep_logs(lab: Lab, dest: str) -> None:
    """Copy what the lab wrote (logs, sipp's files, the capture; not the PSK, not sockets) to dest."""
    def ignore(d: str, names: list[str]) -> list[str]:
        # sockets (charon's VICI, the controller's control socket) cannot be copied
        return [n for n in names if n in ("psk", "strongswan.conf") or n.endswith((".vici", ".sock"))
                or stat.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode)]

    shutil.copytree(lab.dir, dest, ignore=ignore, dirs_exist_ok=True)


# -- the calls --------------------------------------------------------------------------------

@dataclass
class _Measured:
    """What ``_calls`` saw around the calls, before the report is made of it."""
    before: dict
    after: dict
    pids: dict
    cpu0: dict
    cpu1: dict
    sipp_done: bool
    sipp_s: float
    load0: float
    load1: float
    settle_s: float
    settled: bool
    profiles: dict
    media: dict
    drops: dict


def _cpu(pids: dict[str, dict[str, int]]) -> dict:
    return {r: {k: lp.usage(pid) for k, pid in pids[r].items()} for r in pids}


def _calls(lab: Lab, p: Params, progress: Callable[[str], None]) -> dict:
    """Observe, place the calls, wait for the gateways to let go of them; the report of what was seen."""
    before = {r: inventory(lab, r) for r in GATEWAYS}
    cap, senders = lp.observers(lab, p.ptime, p.hold)
    pids = lp.lab_pids(lab)
    cpu0 = _cpu(pids)
    profilers = lp.profile(lab, p.profile_dir, pids)
    load0 = loadavg()
    drops0 = {r: udp_drops(lab, r) for r in GATEWAYS}
    progress(f"{p.calls} calls at {p.rate}/s, {p.hold} s each, RTT {p.rtt} ms")
    sipp_done, sipp_s = lp.sipp(lab, p.calls, p.rate, p.hold, p.rtp_ports[0])
    progress(f"sipp done after {sipp_s} s; waiting for the controllers to remove every SA")
    load1 = loadavg()
    settle_s, settled = settle(lab, p.settle_timeout)
    cpu1 = _cpu(pids)
    drops = {r: {k: v - drops0[r][k] for k, v in udp_drops(lab, r).items()} for r in GATEWAYS}
    profiles = lp.stop_profile(profilers, p.profile_dir)
    after = {r: inventory(lab, r) for r in GATEWAYS}
    media = lp.stop_observers(cap, senders)
    return _report(lab, p, _Measured(before=before, after=after, pids=pids, cpu0=cpu0, cpu1=cpu1,
                                     sipp_done=sipp_done, sipp_s=sipp_s, load0=load0, load1=load1,
                                     settle_s=settle_s, settled=settled, profiles=profiles, media=media,
                                     drops=drops))


def _resources(p: Params, m: _Measured) -> dict:
    """CPU used during the calls and memory at the end, per gateway and process."""
    return {r: {k: {"cpu_s": round(m.cpu1[r][k]["cpu_s"] - m.cpu0[r][k]["cpu_s"], 2),
                    "cpu_ms_per_call": round((m.cpu1[r][k]["cpu_s"] - m.cpu0[r][k]["cpu_s"]) * 1000 / p.calls, 1),
                    "peak_rss_mb": m.cpu1[r][k]["peak_rss_mb"], "rss_mb": m.cpu1[r][k]["rss_mb"]}
                for k in m.pids[r]} for r in m.pids}


def _report(lab: Lab, p: Params, m: _Measured) -> dict:
    """The report: the controllers' logs, the capture and sipp's statistics, with what ``_calls`` measured."""
    recs = lr.call_records({r: read_log(lab.controller_log(r)) for r in GATEWAYS})
    pcap = os.path.join(lab.dir, "wan.pcap")
    wire = lr.wire_counts(pcap, p.rtp_ports, lr.call_flows(recs))
    clear = lr.clear_phases(recs, wire.clear_by_call, {lp.gw_addr(lab, r): r for r in GATEWAYS})
    sipp = lp.sipp_stats(os.path.join(lab.dir, "sipp-uac.csv"))
    initiated = [r for r in recs if r["keyed"]]
    keyed = [r for r in recs if r["keyed_live"]]
    leaks = {r: {k: (v - m.before[r].get(k, 0)) if isinstance(v, int) else v for k, v in m.after[r].items()}
             for r in m.after}
    return {
        "params": {"rate": p.rate, "calls": p.calls, "hold": p.hold, "rtt_ms": p.rtt, "strategy": p.strategy,
                   "ike_pool": p.ike_pool, "rtp_ports": list(p.rtp_ports), "ptime_ms": p.ptime,
                   "charon": list(p.charon) + ([f"IKE socket rcvbuf {p.charon_rcvbuf}"] if p.charon_rcvbuf else [])},
        "calls": {"offered": p.calls, "seen": len(recs), "keyed": len(keyed), "not_keyed": p.calls - len(keyed),
                  "keyed_late": len(initiated) - len(keyed),
                  "sa_up_both": sum(1 for r in recs if len(r["sa_up"]) == 2),
                  "keying_failed": sum(1 for r in recs if r["failures"]),
                  "sipp_successful": sipp.get("SuccessfulCall(C)"), "sipp_failed": sipp.get("FailedCall(C)"),
                  "sipp_finished": m.sipp_done, "sipp_seconds": m.sipp_s,
                  "seen_per_s": lr.rate([r["answer_t"] for r in recs]),
                  "keyed_per_s": lr.rate([r["keyed_ts"] for r in keyed]),
                  "concurrent_est": round(min(p.calls, p.rate * p.hold)),
                  "loadavg_at_start": m.load0, "loadavg_at_end": m.load1},
        "after_answer_ms": lr.pcts([r["after_answer_ms"] for r in initiated]),
        "keying_ms": lr.pcts([r["keying_ms"] for r in initiated]),
        "tenths": lr.tenths(recs, clear),
        "wire": {"rtp_clear": wire.rtp_clear, "calls_with_clear": len(wire.clear_by_call),
                 "clear": {k: sum(c[k] for c in clear.values()) for k in lr.PHASES},
                 "clear_unattributed": wire.clear_unattributed, "esp": wire.esp, "ike": wire.ike, "sip": wire.sip,
                 "capture_dropped": lp.tcpdump_dropped(pcap + ".log"),
                 "kept_from_wan": lr.kept_from_wan(recs)},
        "media": m.media, "udp_drops": m.drops, "resources": _resources(p, m), "settle_s": m.settle_s,
        "settled": m.settled,
        "profiles": m.profiles, "before": m.before, "after": m.after, "leaks": leaks,
        "not_keyed_reasons": sorted({f for r in recs for f in r["failures"] if f})[:10],
    }
