"""What the gateways' charons and kernels do and hold in a load run (``load``): the raw charon
figure a run is compared with, what each gateway holds before and after (leaks), and waiting for
the gateways to let go of every SA."""

from __future__ import annotations

import json
import os
import time

import vici

from ..keying.strongswan import Charon, KeyingError, PeerConfig
from . import loadreport as lr
from . import proc
from .labstate import LabState
from .loadprocs import LoadError

RAW_CHILDREN = 32


def raw_charon(lab: LabState, seconds: float = 3.0, children: int = RAW_CHILDREN) -> dict:
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

def inventory(lab: LabState, role: str) -> dict:
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


def udp_drops(lab: LabState, role: str) -> dict[str, int]:
    """Datagrams the kernel dropped because a receive buffer was full, counted since the socket (the
    namespace) began: on charon's IKE sockets (500 and 4500/udp; with kernel-libipsec the 4500 one also
    carries every call's ESP, so a burst of media can push an IKE message out) and in the whole
    gateway namespace (RcvbufErrors). Read through charon's /proc entry: its namespace's view."""
    pid = next(p["pid"] for p in lab.state["procs"] if p["role"] == role and p["kind"] == "charon")
    out = {"ike_socket_drops": 0, "udp_rcvbuf_errors": 0}
    with open(f"/proc/{pid}/net/udp") as f:
        for ln in f.readlines()[1:]:
            cols = ln.split()
            if int(cols[1].rsplit(":", 1)[1], 16) in (500, 4500):
                out["ike_socket_drops"] += int(cols[-1])  # the last column: drops
    with open(f"/proc/{pid}/net/snmp") as f:
        udp = [ln.split() for ln in f if ln.startswith("Udp:")]
    if len(udp) == 2:
        out["udp_rcvbuf_errors"] = int(dict(zip(udp[0], udp[1], strict=False)).get("RcvbufErrors", 0))
    return out


def _child_sas(lab: LabState, role: str) -> int | None:
    c = Charon(lab.vici(role))
    try:
        return len(c.child_sas())
    except Exception:  # noqa: BLE001 - counted again on the next poll
        return None
    finally:
        c.close()


def settle(lab: LabState, timeout: float, quiet: float = 2.0) -> tuple[float, bool]:
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
