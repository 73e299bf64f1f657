"""Faults during live calls, in the lab (``ipsecrtp bench faults``, issue 15 item 8).

Each scenario runs in a lab of its own (unique name, removed at the end whatever happens), with the
README's recommended charon timers and ``protect = "required"``:

1. both controllers, the peer's IKE_SA, a tcpdump of gwa's WAN (the independent view), an RTP
   sender per gateway (``rtpsend``: real UDP from each call's SDP endpoint), then ``calls`` sipp calls
   (``sipp/uac-load.xml`` in gwa, ``uas-load.xml`` in gwb: gwb initiates each CHILD_SA), held ``hold`` s;
2. once the calls are protected (below), the fault; then, every 0.2 s, how many calls are protected,
   until all that were live are again (or the calls end);
3. after the calls: RTP/RTCP seen in clear on the WAN, the media the controllers kept from the WAN
   (their timelines' drop counts), what each gateway holds compared with before the calls (leaks).

A call counts as **protected** when gwb holds a CHILD_SA for its flows whose SPIs are the reverse of one
gwa holds: both ends agree on it (a dead peer's SA left on one side does not count).
"""

from __future__ import annotations

import datetime
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..keying.strongswan import Charon, KeyingError, connect
from ..log import read_log
from . import faultflood, proc
from . import loadprocs as lp
from .lab import Lab
from .labstate import LabError
from .loadcharon import inventory
from .wanem import LinkSettings

GATEWAYS = ("gwa", "gwb")
# the README's recommended timers (a lost IKE packet costs 0.5 s, not 4 s; an unanswered liveness
# check gives up after ~12 s, not 165 s): dead-peer detection needs them to tell within a call
TUNED = ("retransmit_timeout = 0.5", "retransmit_base = 1.4", "retransmit_tries = 6")
SCENARIOS = ("controller-restart", "charon-kill-gwb", "charon-kill-gwa", "peer-restart", "charon-hung",
             "sip-flood", "wrong-psk", "ike-loss")
DESCRIPTIONS = {
    "controller-restart": "gwb's controller stopped (SIGTERM) and started again after 2 s",
    "charon-kill-gwb": "kill -9 of the initiating gateway's charon, a new one 1 s later",
    "charon-kill-gwa": "kill -9 of the responding gateway's charon, a new one 1 s later",
    "peer-restart": "the peer gateway (gwa) restarts: charon kill -9, a new charon, its controller restarted",
    "charon-hung": "gwb's charon stopped (SIGSTOP) for 10 s, then SIGCONT",
    "sip-flood": "junk and never-answered INVITEs from one source during the calls",
    "wrong-psk": "gwa's charon holds a wrong PSK (keying refused by the peer), set before the calls",
    "ike-loss": "5 % of IKE packets dropped at random both ways (the emulated WAN, 20 ms RTT) while the calls "
                "are placed and held",
}
# the ike-loss scenario's WAN: IKE only is dropped (UDP 500, and 4500 with the non-ESP marker), so what
# is measured is the keying's retransmissions, not media loss; a fixed seed makes runs comparable
IKE_LOSS = LinkSettings(delay_ms=10.0, ike_loss=0.05, seed=15)
POLL_S = 0.2


class FaultError(RuntimeError):
    pass


@dataclass(frozen=True)
class Params:
    calls: int = 20
    rate: float = 10.0  # calls placed a second
    hold: float = 40.0  # seconds each call lasts: the fault and its recovery happen inside it
    ptime: float = 20.0  # ms between RTP packets of a stream
    flood_rate: int = 10000  # SIP messages a second (sip-flood)
    flood_seconds: float = 60.0
    hang_s: float = 10.0
    protect: str = "required"  # or "opportunistic": the same recovery, the media in clear counted

    def check(self) -> None:
        if self.calls < 1 or self.rate <= 0 or self.hold < 5 or self.ptime <= 0 or self.flood_rate < 1:
            raise FaultError("need calls >= 1, rate > 0, hold >= 5, ptime > 0, flood_rate >= 1")
        if self.protect not in ("required", "opportunistic"):
            raise FaultError("protect is required or opportunistic")
        if self.calls > 45:
            raise FaultError("at most 45 calls (the lab's RTP range 10000-10199, sipp's ports 4 apart)")


def run(scenarios: list[str] | None = None, progress: Callable[[str], None] = lambda m: None, **params) -> dict:
    p = Params(**params)
    p.check()
    names = scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise FaultError(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})")
    started = datetime.datetime.now(datetime.UTC)
    rows = []
    for name in names:
        progress(f"{name}: {DESCRIPTIONS[name]}")
        rows.append(run_one(name, p, progress))
        progress(f"{name}: {rows[-1]}")  # a row as soon as it is known: a long run's partial results
    return {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": lp_machine(), "params": asdict(p),
            "scenarios": rows}


def lp_machine() -> dict:
    from .load import machine
    return machine()


def run_one(name: str, p: Params, progress: Callable[[str], None]) -> dict:
    lab = Lab("f" + secrets.token_hex(4))
    try:
        lab.up(charon_extra="\n".join("  " + ln for ln in TUNED), protect=p.protect,
               wan=IKE_LOSS if name == "ike-loss" else None)
        wait(lambda: bool(logged(lab, "ike-preestablished")), 20, "the peer's IKE_SA")
        if name == "wrong-psk":
            wrong_psk(lab)
        before = {r: inventory(lab, r) for r in GATEWAYS}
        cap, senders = observers(lab, p)
        flood = faultflood.start(lab, p.flood_rate, p.flood_seconds, os.path.join(lab.dir, "flood.json")) \
            if name == "sip-flood" else None
        sipp: dict = {}
        t = threading.Thread(target=lambda: sipp.update(r=lp.sipp(lab, p.calls, p.rate, p.hold, 10000)))
        t.start()
        row = fault(lab, name, p, progress)
        t.join(timeout=p.hold + p.calls / p.rate + 150)
        settle(lab, before)
        media = lp.stop_observers(cap, senders)
        if flood is not None:
            row.update(flood_report(lab, flood))
        row.update(after_calls(lab, before, media))
        row["sipp_done"] = bool(sipp.get("r", (False,))[0])
        return row
    except (LabError, KeyingError, OSError, lp.LoadError) as exc:
        return {"scenario": name, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    finally:
        lab.down()


def flood_calls(lab: Lab, p: Params, t0: float) -> dict:
    """The calls placed during the flood: how many are ever protected, and when all of them were."""
    most, all_at = 0, None
    while time.time() < t0 + p.hold - 2 and all_at is None:
        most = max(most, protected(lab))
        if most >= p.calls:
            all_at = time.time()
        time.sleep(POLL_S)
    keyed = {e.get("call") for e in logged(lab, "sa-initiated", "gwb")}
    return {"scenario": "sip-flood", "description": DESCRIPTIONS["sip-flood"], "calls_live": p.calls,
            "calls_keyed": len(keyed), "calls_protected_most": most,
            "protected_again_s": round(all_at - t0, 2) if all_at else None, "after_restart_s": None}


def observers(lab: Lab, p: Params) -> tuple[tuple[int, int], dict]:
    """tcpdump on gwa's WAN (UDP but SIP: the media in clear and ESP-in-UDP; a flood's 600,000 SIP
    messages would only slow the reading) and an RTP sender per gateway."""
    pcap = os.path.join(lab.dir, "wan.pcap")
    cap = lp.spawn_in(lab, "gwa", "tcpdump", ["tcpdump", "-n", "-i", "wan0", "-s", "96", "-B", "8192", "-w", pcap,
                                             "udp and not port 5060"], pcap + ".log")
    wait(lambda: os.path.exists(pcap), 10, "tcpdump")
    senders = {}
    for r in GATEWAYS:
        stats = os.path.join(lab.dir, f"rtpsend-{r}.json")
        senders[r] = (lp.spawn_in(lab, r, "rtpsend", [sys.executable, "-m", "ipsecrtp.netns.rtpsend", "--local",
                                                      lp.gw_addr(lab, r), "--ptime", str(p.ptime), "--max-stream",
                                                      str(p.hold + 120), "--stats", stats], stats + ".log"), stats)
        wait(lambda s=stats: os.path.exists(s + ".ready"), 20, f"the RTP sender in {r}")
    return cap, senders


def fault(lab: Lab, name: str, p: Params, progress: Callable[[str], None]) -> dict:
    """Wait for the calls, cause the fault, time the recovery."""
    if name == "sip-flood":
        return flood_calls(lab, p, time.time())
    expect = 0 if name == "wrong-psk" else p.calls
    deadline = time.monotonic() + p.calls / p.rate + 15
    live = 0
    while time.monotonic() < deadline and live < expect:
        live = protected(lab)
        time.sleep(POLL_S)
    if name == "wrong-psk":
        time.sleep(p.calls / p.rate + 3)  # every call placed and answered, none keyed
        live = answered_calls(lab)
    progress(f"{name}: {live} calls live")
    if name == "ike-loss":  # no fault to recover from: how long after its answer each call was keyed
        waits = [float(e["after_answer_ms"]) / 1000 for e in logged(lab, "sa-initiated")
                 if e.get("after_answer_ms") is not None]
        return {"scenario": name, "description": DESCRIPTIONS[name], "calls_live": live,
                "protected_again_s": None, "after_restart_s": None, "keyed_after_answer": spread(waits)}
    t0 = time.time()
    back = t0
    if name == "controller-restart":
        lab.restart_controller("gwb", down_s=2.0)
        back = time.time()
    elif name in ("charon-kill-gwb", "charon-kill-gwa", "peer-restart"):
        role = "gwb" if name == "charon-kill-gwb" else "gwa"
        lab.kill_charon(role)
        time.sleep(1.0)
        back = time.time()
        lab.start_charon(role)
        if name == "peer-restart":
            lab.restart_controller(role)
    elif name == "charon-hung":
        pid = charon_pid(lab, "gwb")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(p.hang_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        back = time.time()
    recovered = None
    end = t0 + p.hold - 2
    if name != "wrong-psk":
        while time.time() < end:
            if protected(lab) >= live:
                recovered = time.time()
                break
            time.sleep(POLL_S)
    return {"scenario": name, "description": DESCRIPTIONS[name], "calls_live": live,
            "protected_again_s": round(recovered - t0, 2) if recovered else None,
            "after_restart_s": round(recovered - back, 2) if recovered else None}


def protected(lab: Lab) -> int:
    """Calls whose CHILD_SA both gateways hold (gwb's inbound SPI is gwa's outbound one and back)."""
    a, b = children(lab, "gwa"), children(lab, "gwb")
    a_pairs = {(c.get("spi-out"), c.get("spi-in")) for c in a}
    keys = {tuple(c.get("local-ts", [])) for c in b if (c.get("spi-in"), c.get("spi-out")) in a_pairs}
    return len(keys)


def children(lab: Lab, role: str) -> list[dict]:
    """charon's installed CHILD_SAs, [] when it does not answer within 1 s (stopped, hung, restarting)."""
    try:
        session = connect(lab.vici(role), timeout=1.0)
    except KeyingError:
        return []
    out = []
    try:
        for ike in session.list_sas():
            for ike_sa in ike.values():
                out += [text(c) for c in ike_sa.get("child-sas", {}).values() if text(c.get("state")) == "INSTALLED"]
    except Exception:  # noqa: BLE001 - a broken or hung session: nothing known, nothing protected
        return []
    finally:
        session.transport.socket.close()
    return out


def text(v):
    """VICI's bytes as str, through dicts and lists."""
    if isinstance(v, dict):
        return {text(k): text(x) for k, x in v.items()}
    if isinstance(v, list):
        return [text(x) for x in v]
    return v.decode() if isinstance(v, bytes) else v


def charon_pid(lab: Lab, role: str) -> int:
    return next(p["pid"] for p in lab.state["procs"] if p["kind"] == "charon" and p["role"] == role)


def wrong_psk(lab: Lab) -> None:
    """gwa's charon gets another key under the same id and drops its IKE_SAs: every new one fails
    authentication (charon's AUTHENTICATION_FAILED), so no call is keyed."""
    c = Charon(lab.vici("gwa"))
    try:
        a, b = (lab.state["gateways"][r]["wan"].split("/")[0] for r in GATEWAYS)
        c.session.load_shared({"id": "psk-gwb", "type": "IKE", "data": secrets.token_hex(32), "owners": [a, b]})
        for ike in c.ike_sas():
            c.terminate_ike_id(ike["uniqueid"])
    finally:
        c.close()


def answered_calls(lab: Lab) -> int:
    return len({e.get("call") for e in read_log(lab.controller_log("gwb")) if e.get("event") == "keying"})


def logged(lab: Lab, event: str, role: str | None = None) -> list[dict]:
    return [e for r in ((role,) if role else GATEWAYS) for e in read_log(lab.controller_log(r))
            if e.get("event") == event]


def wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise FaultError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def settle(lab: Lab, before: dict, timeout: float = 50.0) -> None:
    """After the calls: until both gateways hold no more CHILD_SAs than before them, or ``timeout``
    (beyond the lab's media_timeout of 30 s: a call whose BYE the controller never read, under a flood,
    goes when its media has stopped that long; what is left after that counts as leaked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(children(lab, r)) <= before[r].get("child_sas", 0) for r in GATEWAYS):
            time.sleep(1.0)  # the removals' last rules and routes
            return
        time.sleep(0.5)


def after_calls(lab: Lab, before: dict, media: dict) -> dict:
    from .calls import wire_stats

    clear = wire_stats(os.path.join(lab.dir, "wan.pcap"), lab.rtp_ports).rtp_clear
    events = [e for r in GATEWAYS for e in read_log(lab.controller_log(r))]  # once: a flood makes them long

    def of(event: str) -> list[dict]:
        return [e for e in events if e.get("event") == event]

    timelines = of("timeline")
    dropped = sum(int((t.get("metrics") or {}).get("rtp_dropped_before_protection") or 0) for t in timelines)
    # what the controllers themselves counted in clear (opportunistic: never silent)
    counted = sum(int((t.get("metrics") or {}).get(k) or 0) for t in timelines
                  for k in ("clear_rtp_after_answer", "clear_rtp_after_protection"))
    leaks = {}
    for r in GATEWAYS:
        now = inventory(lab, r)
        diff = {k: now[k] - before[r].get(k, 0) for k in now if isinstance(now[k], int) and now[k] != before[r].get(k)}
        if diff:
            leaks[r] = diff
    return {"rtp_clear": len(clear), "clear_counted": counted, "dropped": dropped, "media_sent": media.get("sent", 0),
            "media_received": media.get("received", 0), "leaks": leaks,
            "keying_failed": len(of("keying-failed")), "sa_lost": len(of("sa-lost")),
            "sa_recovered": spread([float(e.get("outage_s") or 0) for e in of("sa-recovered")])}


def spread(xs: list[float]) -> dict:
    """How many, and their median and largest (seconds)."""
    xs = sorted(xs)
    return {"n": len(xs), "median_s": xs[len(xs) // 2] if xs else None, "max_s": xs[-1] if xs else None}


def flood_report(lab: Lab, flood: tuple[int, int]) -> dict:
    """What the flood sent, the evictions both controllers counted (their metric) and their memory."""
    proc.wait_exit(*flood, timeout=5)
    stats = os.path.join(lab.dir, "flood.json")
    sent = {}
    if os.path.exists(stats):
        import json
        with open(stats) as f:
            sent = json.load(f)
    return {"flood": sent, "evicted": {r: faultflood.evictions(lab, r) for r in GATEWAYS}, "rss": faultflood.rss(lab)}


def format_text(report: dict) -> str:
    """One line per scenario; the flood's own figures below the table."""
    m, pa = report["machine"], report["params"]
    lines = [f"ipsecrtp bench faults, {report['date']}, {m['host']}: {m['cpu']} ({m['nproc']} CPUs), kernel "
             f"{m['kernel']}; {pa['calls']} sipp calls at {pa['rate']:g}/s held {pa['hold']:g} s, RTP every "
             f"{pa['ptime']:g} ms each way, protect = {pa.get('protect', 'required')}, charon: {', '.join(TUNED)}",
             "scenario            live  clear/ctl  dropped  media lost  protected-again s (after restart)  SAs lost  "
             "keying-failed  leaks"]
    for r in report["scenarios"]:
        if "error" in r:
            lines.append(f"{r['scenario']:<19} error: {r['error']}")
            continue
        again = "never" if r["protected_again_s"] is None else f"{r['protected_again_s']:.2f}"
        if r.get("keyed_after_answer"):  # ike-loss: no fault; the calls' keying after their answer
            k = r["keyed_after_answer"]
            again = (f"n/a: keyed {k['n']}, after answer median {k['median_s'] * 1000:.0f} ms, "
                     f"max {k['max_s'] * 1000:.0f} ms") if k["n"] else "never: none keyed"
        if r.get("after_restart_s") is not None:
            again += f" ({r['after_restart_s']:.2f})"
        leaks = ", ".join(f"{g}: {k} {v:+d}" for g, d in r["leaks"].items() for k, v in d.items()) or "none"
        lost = r["media_sent"] - r["media_received"]
        clear = f"{r['rtp_clear']}/{r.get('clear_counted', '-')}"
        lines.append(f"{r['scenario']:<19} {r['calls_live']:>4} {clear:>9} {r['dropped']:>8} {lost:>11}  "
                     f"{again:<34} {r['sa_lost']:>8} {r['keying_failed']:>14}  {leaks}")
    for r in report["scenarios"]:
        if r.get("flood"):
            f = r["flood"]
            lines.append(f"sip-flood: {f.get('sent')} messages in {f.get('seconds')} s ({f.get('rate')}/s, half "
                         f"INVITEs); evicted gwa {r['evicted']['gwa']:.0f}, gwb {r['evicted']['gwb']:.0f}; calls "
                         f"keyed {r['calls_keyed']}/{r['calls_live']}, most protected at once "
                         f"{r['calls_protected_most']}; controllers' peak RSS "
                         + ", ".join(f"{g} {v['peak_mb']} MiB" for g, v in r["rss"].items()))
    lines.append("clear: RTP/RTCP in clear on gwa's WAN (tcpdump) / ctl: as both controllers counted it (their "
                 "timelines: after the answer, and after the call had been protected); dropped: media the "
                 "controllers kept from the WAN (timelines); media lost: RTP packets sent and never received "
                 "(dropped, or ESP on an SA the other side no longer holds); protected again: from the fault "
                 "until every live call has one SA both gateways agree on")
    return "\n".join(lines)
