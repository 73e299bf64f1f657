"""What a shared conference CHILD_SA would cost charon, measured with the lab's two charons alone
(issue 17 item 3; ``legs = "shared"`` is not built in the controller).

For N legs between the same two gateways (host mode: gwa's port 62000 + 2i to gwb's 62100 + 2i):
per leg, N children of one selector pair each, created one after another on one IKE_SA (what the
controller does today); shared, one child whose selectors list the N ports on each side (IKEv2
combines them, so it also covers the N*(N-1) crossed pairs no leg uses), and its re-key when a leg
leaves done make-before-break: the child of N-1 legs created, then the one of N deleted. Timed
around charon's ``initiate``/``terminate`` answers (each one IKE exchange on a live IKE_SA); the
selectors charon installed are read back from ``list-sas``. Ports outside the lab's RTP range, so
that no controller would take these SAs for a call's; run with the controllers stopped.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from ..keying.strongswan import Charon, PeerConfig
from .labstate import LabState

BASE_A, BASE_B = 62000, 62100
CONN = "sharedbench"


@dataclass
class SharedSaRun:
    n: int
    per_leg_ms: float  # N CREATE_CHILD_SAs, one after another
    shared_ms: float  # one CREATE_CHILD_SA carrying 2N selectors
    shared_local_ts: int  # selectors charon installed (local side) for the shared child
    leave_rekey_ms: float  # shared: create the N-1 child, then delete the N one


def _legs(n: int, me: str, other: str, mine: int, theirs: int) -> tuple[list[str], list[str]]:
    return [f"{me}/32[udp/{mine + 2 * i}]" for i in range(n)], [f"{other}/32[udp/{theirs + 2 * i}]" for i in range(n)]


def _children(n: int, me: str, other: str, gwa: bool) -> dict[str, tuple[list[str], list[str]]]:
    mine, theirs = (BASE_A, BASE_B) if gwa else (BASE_B, BASE_A)
    out = {}
    for i in range(n):
        out[f"leg{i}"] = ([f"{me}/32[udp/{mine + 2 * i}]"], [f"{other}/32[udp/{theirs + 2 * i}]"])
    for k in (n, n - 1):
        out[f"shared{k}"] = _legs(k, me, other, mine, theirs)
    return out


def _timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return (time.monotonic() - t0) * 1000


def _terminate(c: Charon, child: str) -> None:
    for _log in c.session.terminate({"child": child, "ike": CONN, "timeout": 10000}):
        pass


def _round(gwb: Charon, n: int) -> SharedSaRun:
    """One round on the live IKE_SA: N per-leg children up and down, then the shared child, its
    re-key without the last leg, and that one down."""
    per_leg = 0.0
    for i in range(n):
        per_leg += _timed(lambda i=i: gwb.initiate_child(CONN, f"leg{i}", timeout_s=10))
    for i in range(n):
        _terminate(gwb, f"leg{i}")
    shared = _timed(lambda: gwb.initiate_child(CONN, f"shared{n}", timeout_s=10))
    sas = [c for c in gwb.child_sas() if c.get("name") == f"shared{n}"]
    installed = len(sas[0].get("local-ts", [])) if sas else 0
    rekey = _timed(lambda: gwb.initiate_child(CONN, f"shared{n - 1}", timeout_s=10))
    rekey += _timed(lambda: _terminate(gwb, f"shared{n}"))
    _terminate(gwb, f"shared{n - 1}")
    return SharedSaRun(n, round(per_leg, 1), round(shared, 1), installed, round(rekey, 1))


def measure_shared(lab: LabState, ns: list[int], repeat: int = 3) -> list[SharedSaRun]:
    with open(lab.psk_path, "rb") as f:
        psk = f.read().strip()
    addr = {r: lab.state["gateways"][r]["wan"].split("/")[0] for r in ("gwa", "gwb")}
    ua = {r: lab.ua_addr(r) for r in ("gwa", "gwb")}
    ch = {r: Charon(lab.vici(r)) for r in addr}
    runs = []
    try:
        for n in ns:
            for me, other in (("gwa", "gwb"), ("gwb", "gwa")):
                p = PeerConfig(name=CONN, ike_local=addr[me], ike_remote=addr[other],
                               local_media=(f"{ua[me]}/32",), remote_media=(f"{ua[other]}/32",), psk=psk)
                ch[me].load_secret(p)
                ch[me].load_bench_conn(p, CONN, _children(n, ua[me], ua[other], me == "gwa"))
            gwb = ch["gwb"]
            for _log in gwb.session.initiate({"ike": CONN, "timeout": 20000, "init-limits": "no"}):
                pass
            runs += [_round(ch["gwb"], n) for _ in range(repeat)]
            for _log in gwb.session.terminate({"ike": CONN, "timeout": 10000}):
                pass
            for c in ch.values():
                c.unload_conn(CONN)
    finally:
        for c in ch.values():
            try:
                c.session.unload_shared({"id": f"psk-{CONN}"})
            except Exception:  # noqa: BLE001 - never loaded (an early failure): nothing to remove
                pass
            c.close()
    return runs


def shared_report(runs: list[SharedSaRun]) -> list[str]:
    lines = [f"{'N':>3} {'per leg: N creates ms':>22} {'shared: 1 create ms':>20} {'selectors installed':>20} "
             f"{'shared re-key at a leave ms':>28}"]
    for n in sorted({r.n for r in runs}):
        rs = [r for r in runs if r.n == n]
        med = {a: statistics.median(getattr(r, a) for r in rs) for a in ("per_leg_ms", "shared_ms", "leave_rekey_ms")}
        lines.append(f"{n:>3} {med['per_leg_ms']:>22} {med['shared_ms']:>20} "
                     f"{'/'.join(sorted({str(r.shared_local_ts) for r in rs})) + ' a side':>20} "
                     f"{med['leave_rekey_ms']:>28}")
    return lines
