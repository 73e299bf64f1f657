"""The processes of a load run (``load``) in its lab: a capture of gwa's WAN, an RTP sender per
gateway, sipp's caller and callee, py-spy on the controllers; their CPU and memory, and what they
wrote. Each is recorded in the lab's state as it starts, so that ``lab.down()`` stops it whatever
happens to the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable

from . import proc
from .labstate import LabState
from .loadprofile import profile_summary
from .siplab import sipp_scenario

SIPP_PORT_STEP = 4  # sipp's [auto_media_port]: -mp + 4 (n - 1), modulo 10000
SIPP_PORT_WRAP = 10000
Proc = tuple[int, int]  # pid and start time: how proc and the lab's state name a process


class LoadError(RuntimeError):
    pass


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


def lab_pids(lab: LabState) -> dict[str, dict[str, int]]:
    return {role: {p["kind"]: p["pid"] for p in lab.state["procs"] if p["role"] == role
                   and p["kind"] in ("controller", "charon") and proc.alive(p["pid"], p["start"])}
            for role in ("gwa", "gwb")}


def spawn_in(lab: LabState, role: str, kind: str, argv: list[str], log: str) -> Proc:
    ns = lab.ns(role)
    pid, st = proc.spawn(ns, argv, log)
    lab.track(role, kind, pid, st, ns)  # recorded: lab.down() stops it whatever happens here
    return pid, st


def wait_for(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise LoadError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def gw_addr(lab: LabState, role: str) -> str:
    return lab.state["gateways"][role]["wan"].split("/")[0]


# -- the capture and the RTP senders ----------------------------------------------------------

def observers(lab: LabState, ptime: float, hold: float) -> tuple[Proc, dict[str, tuple[Proc, str]]]:
    """tcpdump on gwa's WAN (headers only: UDP, enough for ports and the ESP marker) and an RTP sender
    per gateway; (capture pid and start, {gateway: (sender pid and start, its stats file)})."""
    pcap = os.path.join(lab.dir, "wan.pcap")
    cap = spawn_in(lab, "gwa", "tcpdump", ["tcpdump", "-n", "-i", "wan0", "-s", "64", "-B", "8192", "-w", pcap, "udp"],
                   pcap + ".log")
    wait_for("tcpdump", lambda: os.path.exists(pcap), 10)
    senders = {}
    for r in ("gwa", "gwb"):
        stats = os.path.join(lab.dir, f"rtpsend-{r}.json")
        senders[r] = (spawn_in(lab, r, "rtpsend", [sys.executable, "-m", "ipsecrtp.netns.rtpsend",
                                                   "--local", gw_addr(lab, r), "--ptime", str(ptime),
                                                   "--max-stream", str(hold + 120), "--stats", stats],
                               stats + ".log"), stats)
        wait_for(f"RTP sender in {r}", lambda s=stats: os.path.exists(s + ".ready"), 20)
    return cap, senders


def stop_observers(cap: Proc, senders: dict[str, tuple[Proc, str]]) -> dict:
    """Stop the senders, then the capture; what the senders sent and received, summed."""
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
    return media


def tcpdump_dropped(log: str) -> int | None:
    try:
        for ln in open(log):
            if "dropped by kernel" in ln:
                return int(ln.split()[0])
    except (OSError, ValueError):
        pass
    return None


# -- sipp -------------------------------------------------------------------------------------

def sipp(lab: LabState, calls: int, rate: float, hold: float, rtp_lo: int) -> tuple[bool, float]:
    """The sipp callee in gwb, then the caller in gwa; (caller finished in time, seconds it ran)."""
    d, a, b = lab.dir, gw_addr(lab, "gwa"), gw_addr(lab, "gwb")
    limit = int(calls / rate + hold + 120)  # sipp's own deadline: everything sent, held, and slack
    mp = str(rtp_lo - SIPP_PORT_STEP)
    common = ["-p", "5060", "-mp", mp, "-m", str(calls), "-nostdin", "-timeout", f"{limit}s", "-trace_err"]
    uas = spawn_in(lab, "gwb", "sipp", ["sipp", "-sf", sipp_scenario("uas-load"), "-i", b, "-mi", b, *common,
                                        "-error_file", os.path.join(d, "sipp-uas.err")],
                   os.path.join(d, "sipp-uas.out"))
    wait_for("sipp callee", lambda: f"{b}:5060 " in proc.run(lab.ns("gwb"), "ss", "-lnu").stdout, 15)
    t0 = time.monotonic()
    # -l calls: no cap on concurrent calls, so that the offered rate is the rate asked for
    uac = spawn_in(lab, "gwa", "sipp", ["sipp", f"{b}:5060", "-sf", sipp_scenario("uac-load"), "-i", a, "-mi", a,
                                        *common, "-r", f"{rate:g}", "-l", str(calls), "-d", str(int(hold * 1000)),
                                        "-trace_stat", "-stf", os.path.join(d, "sipp-uac.csv"), "-fd", "1",
                                        "-error_file", os.path.join(d, "sipp-uac.err")],
                   os.path.join(d, "sipp-uac.out"))
    done = proc.wait_exit(*uac, timeout=limit + 10)
    proc.wait_exit(*uas, timeout=10)
    return done, round(time.monotonic() - t0, 1)


def sipp_stats(path: str) -> dict:
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


# -- py-spy -----------------------------------------------------------------------------------

def py_spy() -> str | None:
    """py-spy next to this interpreter (a venv's bin), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def profile(lab: LabState, profile_dir: str | None, pids: dict[str, dict[str, int]]) -> list[tuple[int, int, str]]:
    """py-spy sampling each controller (all threads, idle ones left out) until stopped."""
    out = []
    for r in pids if profile_dir else ():
        path = os.path.join(lab.dir, f"py-spy-{r}.txt")
        # --idle: a thread waiting for charon's reply is where the keying time goes; --native: tells a
        # thread blocked in select or on a lock (idle) from one running
        pid, st = spawn_in(lab, r, "py-spy", [py_spy() or "py-spy", "record", "--pid", str(pids[r]["controller"]),
                                              "--format", "raw", "--idle", "--threads", "--native", "--rate", "50",
                                              "--output", path],
                           path + ".log")
        out.append((pid, st, path))
    return out


def stop_profile(profilers: list[tuple[int, int, str]], dest: str | None) -> dict[str, dict]:
    """Stop the samplers, keep their files in ``dest``, and summarise them per gateway."""
    out = {}
    for pid, st, path in profilers:
        if proc.alive(pid, st):
            os.kill(pid, signal.SIGINT)  # py-spy writes its samples on SIGINT
            proc.wait_exit(pid, st, 20)
        if dest and os.path.exists(path):
            os.makedirs(dest, exist_ok=True)
            shutil.copy(path, dest)
        out[os.path.basename(path).removeprefix("py-spy-").removesuffix(".txt")] = profile_summary(path)
    return out
