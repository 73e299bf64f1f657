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

The figures themselves come from ``loadreport``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import vici

from ..keying.strongswan import Charon, KeyingError, PeerConfig
from ..log import read_log
from . import loadreport as lr
from . import proc
from .lab import Lab, LabError
from .siplab import sipp_scenario
from .wanem import LinkSettings

SIPP_PORT_STEP = 4  # sipp's [auto_media_port]: -mp + 4 (n - 1), modulo 10000
SIPP_PORT_WRAP = 10000
RAW_CHILDREN = 32


class LoadError(RuntimeError):
    pass


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


# -- processes --------------------------------------------------------------------------------

def usage(pid: int) -> dict:
    """CPU seconds (user + system, all threads) and peak/current RSS of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    mem = {}
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(("VmHWM:", "VmRSS:")):
                mem[ln.split(":")[0]] = int(ln.split()[1]) / 1024
    return {"cpu_s": cpu, "peak_rss_mb": round(mem.get("VmHWM", 0.0), 1), "rss_mb": round(mem.get("VmRSS", 0.0), 1)}


def lab_pids(lab: Lab) -> dict[str, dict[str, int]]:
    return {role: {p["kind"]: p["pid"] for p in lab.state["procs"] if p["role"] == role
                   and p["kind"] in ("controller", "charon") and proc.alive(p["pid"], p["start"])}
            for role in ("gwa", "gwb")}


def _spawn(lab: Lab, role: str, kind: str, argv: list[str], log: str) -> tuple[int, int]:
    ns = lab.ns(role)
    pid, st = proc.spawn(ns, argv, log)
    lab.track(role, kind, pid, st, ns)  # recorded: lab.down() stops it whatever happens here
    return pid, st


def _wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise LoadError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


# -- the raw charon figure --------------------------------------------------------------------

def raw_charon(lab: Lab, seconds: float = 3.0, children: int = RAW_CHILDREN) -> dict:
    """CREATE_CHILD_SAs a second the lab's two charons do by themselves: gwb initiates (as it does
    for the calls: it holds the answerer's media) children of a benchmark connection on one IKE_SA,
    each deleted before the next is created, for ``seconds``. Run before the controllers start, so
    that nothing else talks to charon; everything it loads is removed again."""
    with open(lab.psk_path, "rb") as f:
        psk = f.read().strip()
    addr = {r: lab.state["gateways"][r]["wan"].split("/")[0] for r in ("gwa", "gwb")}
    lo, hi = lab.rtp_ports
    base = 61000 if hi < 61000 - children else 2000  # ports of no call
    ch = {r: Charon(lab.vici(r)) for r in addr}
    try:
        for me, other in (("gwa", "gwb"), ("gwb", "gwa")):
            p = PeerConfig(name="rawbench", ike_local=addr[me], ike_remote=addr[other],
                           local_media=(f"{addr[me]}/32",), remote_media=(f"{addr[other]}/32",), psk=psk)
            ch[me].load_secret(p)
            ch[me].load_bench_conn(p, "rawbench", {
                f"c{i}": ([f"{addr[me]}/32[udp/{base + i}]"], [f"{addr[other]}/32[udp/{base + i}]"])
                for i in range(children)})
        gwb = ch["gwb"]
        for _log in gwb.session.initiate({"ike": "rawbench", "timeout": 20000, "init-limits": "no"}):
            pass
        creates: list[float] = []
        t_start = time.monotonic()
        while time.monotonic() - t_start < seconds:
            name = f"c{len(creates) % children}"
            t0 = time.monotonic()
            gwb.initiate_child("rawbench", name, timeout_s=10)
            creates.append((time.monotonic() - t0) * 1000)
            for _log in gwb.session.terminate({"child": name, "ike": "rawbench", "timeout": 10000}):
                pass
        elapsed = time.monotonic() - t_start
        for _log in gwb.session.terminate({"ike": "rawbench", "timeout": 10000}):
            pass
        for c in ch.values():
            c.unload_conn("rawbench")
            c.session.unload_shared({"id": "psk-rawbench"})
    except (vici.exception.CommandException, KeyingError) as exc:
        raise LoadError(f"raw charon figure: {exc}") from None
    finally:
        for c in ch.values():
            c.close()
    return {"children": children, "seconds": round(elapsed, 2), "created": len(creates),
            "create_per_s": round(len(creates) / (sum(creates) / 1000), 1) if creates else None,
            "cycle_per_s": round(len(creates) / elapsed, 1) if creates else None, "create_ms": lr.pcts(creates)}


# -- what the gateways hold -------------------------------------------------------------------

def inventory(lab: Lab, role: str) -> dict:
    """What a gateway holds: CHILD_SAs and per-call child configs in charon, xfrm policies and
    states, policy-routing rules and routes of charon's table 220 in the kernel."""
    ns = lab.ns(role)

    def lines(*argv: str) -> list[str]:
        return [ln for ln in proc.run(ns, *argv, check=False).stdout.splitlines() if ln.strip()]

    out: dict = {}
    c = Charon(lab.vici(role))
    try:
        out["child_sas"] = len(c.child_sas())
        conns = [cfg for conn in c.session.list_conns() for cfg in conn.values()]
        # a connection per call or a child config per call, whichever way the controller keys
        out["conns"] = len(conns)
        out["child_configs"] = sum(1 for cfg in conns for name in (cfg.get("children") or {})
                                   if name not in (b"tmpl", "tmpl"))
    except Exception as exc:  # noqa: BLE001 - e.g. list-sas over VICI's 512 KiB limit: say so, go on
        out["charon_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        c.close()
    out["xfrm_policies"] = len(lines("ip", "-o", "xfrm", "policy"))
    out["xfrm_states"] = len(lines("ip", "-o", "xfrm", "state"))
    out["rules_220"] = len([ln for ln in lines("ip", "rule", "show") if "lookup 220" in ln])
    out["routes_220"] = len(lines("ip", "route", "show", "table", "220"))
    # whatever the controller keeps in nftables (keyed-flow sets, per-call translations), by count
    try:
        ruleset = json.loads(proc.run(ns, "nft", "-j", "list", "ruleset", check=False).stdout or "{}")
    except ValueError:
        ruleset = {}
    items = ruleset.get("nftables", [])
    out["nft_rules"] = sum(1 for i in items if "rule" in i)
    out["nft_set_elements"] = sum(len(i["set"].get("elem", [])) for i in items if "set" in i)
    return out


def _child_sas(lab: Lab, role: str) -> int | None:
    c = Charon(lab.vici(role))
    try:
        return len(c.child_sas())
    except Exception:  # noqa: BLE001 - counted again on the next poll
        return None
    finally:
        c.close()


def settle(lab: Lab, timeout: float, quiet: float = 2.0) -> tuple[float, bool]:
    """Wait until no CHILD_SA is left on either gateway and the controllers' logs have been quiet
    for ``quiet`` s (rules, routes and child configs go after the SA); (seconds waited, settled)."""
    t0 = time.monotonic()
    sizes, since = None, t0
    while time.monotonic() - t0 < timeout:
        cur = tuple(os.path.getsize(lab.controller_log(r)) for r in ("gwa", "gwb"))
        if cur != sizes:
            sizes, since = cur, time.monotonic()
        elif time.monotonic() - since >= quiet and all(_child_sas(lab, r) == 0 for r in ("gwa", "gwb")):
            return round(time.monotonic() - t0, 1), True
        time.sleep(0.5)
    return round(time.monotonic() - t0, 1), False


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
    raw_seconds: float = 3.0
    settle_timeout: float = 120.0
    profile_dir: str | None = None  # py-spy's samples of both controllers land here (when py-spy is installed)
    logs_dir: str | None = None  # the lab's logs and capture are copied here before it is removed

    def check(self) -> None:
        if self.rate <= 0 or self.calls < 1 or self.hold < 0 or self.rtt < 0 or self.ptime <= 0 or self.ike_pool < 1:
            raise LoadError("need rate > 0, calls >= 1, hold >= 0, rtt >= 0, ptime > 0, ike_pool >= 1")
        lo, hi = self.rtp_ports
        top = ports_needed(self.calls, lo)[1]
        if top > hi or lo - SIPP_PORT_STEP < 1024:
            raise LoadError(f"RTP ports {lo}-{hi} hold fewer than {self.calls} calls: sipp gives each call a port of "
                            f"its own, {SIPP_PORT_STEP} apart, so they need {lo}-{top}")
        for tool in ("sipp", "tcpdump"):
            if shutil.which(tool) is None:
                raise LoadError(f"{tool} not found: run scripts/setup.sh")
        if self.profile_dir and py_spy() is None:
            raise LoadError("py-spy not found (pip install py-spy, into the venv)")


def py_spy() -> str | None:
    """py-spy next to this interpreter (a venv's bin), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


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
               rtp_ports=p.rtp_ports, ike_pool=p.ike_pool, controllers=False)
        raw = raw_charon(lab, seconds=p.raw_seconds)
        progress(f"raw charon: {raw['create_per_s']} CREATE_CHILD_SA/s, {raw['cycle_per_s']} create+delete/s")
        lab.start_controllers()
        if p.strategy in ("child-per-call", "speculative"):
            # every member of the pool: a call sent to a member not up yet would pay for its IKE_SA
            _wait(f"the peer's {p.ike_pool} IKE_SA(s)", lambda: len(pool_members(lab)) >= p.ike_pool,
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
        if p.logs_dir and lab.owned:
            keep_logs(lab, p.logs_dir)
        lab.down()


def pool_members(lab: Lab) -> set:
    """The pool members either controller has logged as pre-established (only one gateway initiates each)."""
    return {e.get("member") for r in ("gwa", "gwb") for e in read_log(lab.controller_log(r))
            if e.get("event") == "ike-preestablished"}


def keep_logs(lab: Lab, dest: str) -> None:
    """Copy what the lab wrote (logs, sipp's files, the capture; not the PSK, not sockets) to dest."""
    def ignore(_d: str, names: list[str]) -> list[str]:
        return [n for n in names if n in ("psk", "strongswan.conf") or n.endswith(".vici")]

    shutil.copytree(lab.dir, dest, ignore=ignore, dirs_exist_ok=True)


def _observers(lab: Lab, p: Params) -> tuple[tuple[int, int], dict[str, tuple[tuple[int, int], str]]]:
    """tcpdump on gwa's WAN (headers only: UDP, enough for ports and the ESP marker) and an RTP sender
    per gateway; (capture pid and start, {gateway: (sender pid and start, its stats file)})."""
    pcap = os.path.join(lab.dir, "wan.pcap")
    cap = _spawn(lab, "gwa", "tcpdump", ["tcpdump", "-n", "-i", "wan0", "-s", "64", "-B", "8192", "-w", pcap, "udp"],
                 pcap + ".log")
    _wait("tcpdump", lambda: os.path.exists(pcap), 10)
    senders = {}
    for r in ("gwa", "gwb"):
        stats = os.path.join(lab.dir, f"rtpsend-{r}.json")
        senders[r] = (_spawn(lab, r, "rtpsend", [sys.executable, "-m", "ipsecrtp.netns.rtpsend",
                                                  "--local", _addr(lab, r), "--ptime", str(p.ptime),
                                                  "--max-stream", str(p.hold + 120), "--stats", stats],
                             stats + ".log"), stats)
        _wait(f"RTP sender in {r}", lambda s=stats: os.path.exists(s + ".ready"), 20)
    return cap, senders


def _addr(lab: Lab, role: str) -> str:
    return lab.state["gateways"][role]["wan"].split("/")[0]


def _sipp(lab: Lab, p: Params) -> tuple[bool, float]:
    """The sipp callee in gwb, then the caller in gwa; (caller finished in time, seconds it ran)."""
    d, a, b = lab.dir, _addr(lab, "gwa"), _addr(lab, "gwb")
    limit = int(p.calls / p.rate + p.hold + 120)  # sipp's own deadline: everything sent, held, and slack
    mp = str(p.rtp_ports[0] - SIPP_PORT_STEP)
    common = ["-p", "5060", "-mp", mp, "-m", str(p.calls), "-nostdin", "-timeout", f"{limit}s", "-trace_err"]
    uas = _spawn(lab, "gwb", "sipp", ["sipp", "-sf", sipp_scenario("uas-load"), "-i", b, "-mi", b, *common,
                                      "-error_file", os.path.join(d, "sipp-uas.err")], os.path.join(d, "sipp-uas.out"))
    _wait("sipp callee", lambda: f"{b}:5060 " in proc.run(lab.ns("gwb"), "ss", "-lnu").stdout, 15)
    t0 = time.monotonic()
    # -l calls: no cap on concurrent calls, so that the offered rate is the rate asked for
    uac = _spawn(lab, "gwa", "sipp", ["sipp", f"{b}:5060", "-sf", sipp_scenario("uac-load"), "-i", a, "-mi", a,
                                      *common, "-r", f"{p.rate:g}", "-l", str(p.calls), "-d", str(int(p.hold * 1000)),
                                      "-trace_stat", "-stf", os.path.join(d, "sipp-uac.csv"), "-fd", "1",
                                      "-error_file", os.path.join(d, "sipp-uac.err")], os.path.join(d, "sipp-uac.out"))
    done = proc.wait_exit(*uac, timeout=limit + 10)
    proc.wait_exit(*uas, timeout=10)
    return done, round(time.monotonic() - t0, 1)


def _profile(lab: Lab, p: Params, pids: dict[str, dict[str, int]]) -> list[tuple[int, int, str]]:
    """py-spy sampling each controller (all threads, idle ones left out) until stopped."""
    out = []
    for r in pids if p.profile_dir else ():
        path = os.path.join(lab.dir, f"py-spy-{r}.txt")
        # --idle: a thread waiting for charon's reply is where the keying time goes; --native: tells a
        # thread blocked in select or on a lock (idle) from one running
        pid, st = _spawn(lab, r, "py-spy", [py_spy() or "py-spy", "record", "--pid", str(pids[r]["controller"]),
                                            "--format", "raw", "--idle", "--threads", "--native", "--rate", "50",
                                            "--output", path],
                         path + ".log")
        out.append((pid, st, path))
    return out


def _stop_profile(profilers: list[tuple[int, int, str]], dest: str | None) -> dict[str, dict]:
    """Stop the samplers, keep their files in ``dest``, and summarise them per gateway."""
    out = {}
    for pid, st, path in profilers:
        if proc.alive(pid, st):
            os.kill(pid, signal.SIGINT)  # py-spy writes its samples on SIGINT
            proc.wait_exit(pid, st, 20)
        if dest and os.path.exists(path):
            os.makedirs(dest, exist_ok=True)
            shutil.copy(path, dest)
        out[os.path.basename(path).removeprefix("py-spy-").removesuffix(".txt")] = lr.profile_summary(path)
    return out


def _calls(lab: Lab, p: Params, progress: Callable[[str], None]) -> dict:
    before = {r: inventory(lab, r) for r in ("gwa", "gwb")}
    cap, senders = _observers(lab, p)
    pids = lab_pids(lab)
    cpu0 = {r: {k: usage(pid) for k, pid in pids[r].items()} for r in pids}
    profilers = _profile(lab, p, pids)
    load0 = loadavg()
    progress(f"{p.calls} calls at {p.rate}/s, {p.hold} s each, RTT {p.rtt} ms")
    sipp_done, sipp_s = _sipp(lab, p)
    progress(f"sipp done after {sipp_s} s; waiting for the controllers to remove every SA")
    load1 = loadavg()
    settle_s, settled = settle(lab, p.settle_timeout)
    cpu1 = {r: {k: usage(pid) for k, pid in pids[r].items()} for r in pids}
    profiles = _stop_profile(profilers, p.profile_dir)
    after = {r: inventory(lab, r) for r in ("gwa", "gwb")}
    for (pid, st), _stats in senders.values():
        proc.kill(pid, st, grace=5.0)
    time.sleep(0.5)  # the last packets into the capture file
    proc.kill(*cap, grace=3.0)
    media = {"streams": 0, "sent": 0, "received": 0, "send_errors": 0, "bind_errors": 0}
    for _pid, stats in senders.values():
        try:
            with open(stats) as f:
                for k, v in json.load(f).items():
                    media[k] = media.get(k, 0) + v
        except (OSError, ValueError):
            media["missing_stats"] = media.get("missing_stats", 0) + 1
    recs = lr.call_records({r: read_log(lab.controller_log(r)) for r in ("gwa", "gwb")})
    pcap = os.path.join(lab.dir, "wan.pcap")
    wire = lr.wire_counts(pcap, p.rtp_ports, lr.call_flows(recs))
    clear = lr.clear_phases(recs, wire.clear_by_call, {_addr(lab, r): r for r in ("gwa", "gwb")})
    sipp = _sipp_stats(os.path.join(lab.dir, "sipp-uac.csv"))
    initiated = [r for r in recs if r["keyed"]]
    keyed = [r for r in recs if r["keyed_live"]]
    resources = {r: {k: {"cpu_s": round(cpu1[r][k]["cpu_s"] - cpu0[r][k]["cpu_s"], 2),
                         "cpu_ms_per_call": round((cpu1[r][k]["cpu_s"] - cpu0[r][k]["cpu_s"]) * 1000 / p.calls, 1),
                         "peak_rss_mb": cpu1[r][k]["peak_rss_mb"], "rss_mb": cpu1[r][k]["rss_mb"]}
                     for k in pids[r]} for r in pids}
    leaks = {r: {k: (v - before[r].get(k, 0)) if isinstance(v, int) else v for k, v in after[r].items()}
             for r in after}
    return {
        "params": {"rate": p.rate, "calls": p.calls, "hold": p.hold, "rtt_ms": p.rtt, "strategy": p.strategy,
                   "ike_pool": p.ike_pool, "rtp_ports": list(p.rtp_ports), "ptime_ms": p.ptime},
        "calls": {"offered": p.calls, "seen": len(recs), "keyed": len(keyed), "not_keyed": p.calls - len(keyed),
                  "keyed_late": len(initiated) - len(keyed),
                  "sa_up_both": sum(1 for r in recs if len(r["sa_up"]) == 2),
                  "keying_failed": sum(1 for r in recs if r["failures"]),
                  "sipp_successful": sipp.get("SuccessfulCall(C)"), "sipp_failed": sipp.get("FailedCall(C)"),
                  "sipp_finished": sipp_done, "sipp_seconds": sipp_s,
                  "seen_per_s": lr.rate([r["answer_t"] for r in recs]),
                  "keyed_per_s": lr.rate([r["keyed_ts"] for r in keyed]),
                  "concurrent_est": round(min(p.calls, p.rate * p.hold)),
                  "loadavg_at_start": load0, "loadavg_at_end": load1},
        "after_answer_ms": lr.pcts([r["after_answer_ms"] for r in initiated]),
        "keying_ms": lr.pcts([r["keying_ms"] for r in initiated]),
        "tenths": lr.tenths(recs, clear),
        "wire": {"rtp_clear": wire.rtp_clear, "calls_with_clear": len(wire.clear_by_call),
                 "clear": {k: sum(c[k] for c in clear.values()) for k in lr.PHASES},
                 "clear_unattributed": wire.clear_unattributed, "esp": wire.esp, "ike": wire.ike, "sip": wire.sip,
                 "capture_dropped": _tcpdump_dropped(pcap + ".log"),
                 "kept_from_wan": lr.kept_from_wan(recs)},
        "media": media, "resources": resources, "settle_s": settle_s, "settled": settled, "profiles": profiles,
        "before": before, "after": after, "leaks": leaks,
        "not_keyed_reasons": sorted({f for r in recs for f in r["failures"] if f})[:10],
    }


def _sipp_stats(path: str) -> dict:
    """The last row of sipp's -trace_stat CSV (';'-separated, a header row first), numbers as ints."""
    try:
        with open(path) as f:
            rows = [ln.rstrip("\n;").split(";") for ln in f if ln.strip()]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    out = {}
    for k, v in zip(rows[0], rows[-1], strict=False):
        out[k] = int(v) if v.isdigit() else v
    return out


def _tcpdump_dropped(log: str) -> int | None:
    try:
        for ln in open(log):
            if "dropped by kernel" in ln:
                return int(ln.split()[0])
    except (OSError, ValueError):
        pass
    return None
