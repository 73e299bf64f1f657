"""Post-dial delay against keying strategies: real baresip calls through the lab's emulated WAN.

For each strategy (and a baseline lab without charon or controllers) one lab is built; for each
RTT the emulated link is changed in place and ``calls`` calls are placed (the callee rings
``ring`` seconds, answers, talks ``talk`` seconds, the caller hangs up). The figures come from
the controllers' per-call timelines (kernel capture timestamps) on both gateways:

- SRD at the caller's gateway (INVITE out, first 18x back), and its difference to the baseline;
- the post-answer gap: on each gateway, from the 2xx it saw to its CHILD_SA being installed;
  the worse gateway counts; and the call's RTP/RTCP seen in clear on the WAN after the answer;
- keying time and IKE exchanges at the initiating gateway, in RTTs of the measured link.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable

from ..log import read_log
from ..timing import BUDGETS, Budget, what_if
from .baresip import BaresipControl
from .lab import Lab
from .wancheck import ping
from .wanem import LinkSettings

STRATEGY_LETTERS = {"a": "ike-per-call", "b": "child-per-call", "c": "speculative"}


def place_call(ca: BaresipControl, cb: BaresipControl, callee: str, ring: float, talk: float,
               timeout: float = 20.0) -> str:
    """caller dials, callee rings ``ring`` s and answers, talk, caller hangs up; the call's Call-ID."""
    ca.events.clear()
    cb.events.clear()
    ca.command("dial", callee)
    cb.wait_event({"CALL_INCOMING"}, timeout)
    time.sleep(ring)
    cb.command("accept")
    ev = ca.wait_event({"CALL_ESTABLISHED"}, timeout)
    cb.wait_event({"CALL_ESTABLISHED"}, timeout)
    time.sleep(talk)
    ca.command("hangup")
    ca.wait_event({"CALL_CLOSED"}, timeout)
    cb.wait_event({"CALL_CLOSED"}, timeout)
    return ev.get("id", "")


def wait_timelines(lab: Lab, call_ids: list[str], timeout: float = 20.0) -> dict[str, dict[str, dict]]:
    """{call: {gateway: timeline}} once both controllers logged every call's timeline."""
    deadline = time.monotonic() + timeout
    while True:
        out: dict[str, dict[str, dict]] = {c: {} for c in call_ids}
        for role in ("gwa", "gwb"):
            for e in read_log(lab.controller_log(role)):
                if e.get("event") == "timeline" and e.get("call") in out:
                    out[e["call"]][role] = e
        if all(len(v) == 2 for v in out.values()) or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 1) if xs else None


def summarise(strategy: str, rtt: float, measured_rtt: float, calls: dict[str, dict[str, dict]],
              baseline_srd: float | None, budget: Budget) -> dict:
    srd, gap, clear, keying, exch, rtts_used, ok = [], [], [], [], [], [], []
    for tls in calls.values():
        a = tls.get("gwa", {}).get("metrics", {})
        srd.append(a.get("srd_ms"))
        if strategy == "none":
            continue
        gaps = [t["metrics"].get("post_answer_gap_ms") for t in tls.values()]
        g = max((x for x in gaps if x is not None), default=None)
        gap.append(g)
        clear.append(max(t["metrics"].get("clear_rtp_after_answer", 0) for t in tls.values()))
        init = next((t for t in tls.values() if t.get("role") == "initiator"), None)
        if init is not None:
            k = init["metrics"].get("keying_ms")
            keying.append(k)
            exch.append(len(init["metrics"].get("ike_exchanges", [])))
            if k is not None and measured_rtt > 0.5:
                rtts_used.append(k / measured_rtt)
        ok.append(g is not None and g <= budget.gap_ms)
    srd_m = _median(srd)
    row = {
        "strategy": strategy, "rtt_set_ms": rtt, "rtt_measured_ms": round(measured_rtt, 2), "calls": len(calls),
        "srd_ms": srd_m,
        "srd_added_ms": None if srd_m is None or baseline_srd is None else round(srd_m - baseline_srd, 1),
        "post_answer_gap_ms": _median(gap), "post_answer_gap_max_ms": max((g for g in gap if g is not None),
                                                                          default=None),
        "gap_in_rtt": None if not gap or measured_rtt <= 0.5 or _median(gap) is None
        else round(_median(gap) / measured_rtt, 2),
        "clear_rtp_after_answer": _median(clear), "keying_ms": _median(keying),
        "keying_rtts": _median(rtts_used), "ike_exchanges": _median(exch),
        "fits_budget": None if strategy == "none" else all(ok) if ok else False,
    }
    return row


def run(rtts: list[float], strategies: list[str], calls: int = 3, ring: float = 1.0, talk: float = 1.0,
        budget: str = "e721-toll", baseline: bool = True, progress: Callable[[str], None] = print,
        pause: float = 2.0) -> dict:
    b = BUDGETS[budget]
    rows: list[dict] = []
    baseline_srd: dict[float, float | None] = {}
    order = (["none"] if baseline else []) + [STRATEGY_LETTERS.get(s, s) for s in strategies]
    for strategy in order:
        lab = Lab("p" + secrets.token_hex(3))
        try:
            lab.up(wan=LinkSettings(), strategy=strategy if strategy != "none" else "child-per-call",
                   keying=strategy != "none")
            lab.start_uas()
            ctl = {r: BaresipControl(lab.ns(r), timeout=15) for r in ("gwa", "gwb")}
            try:
                if strategy in ("child-per-call", "speculative"):
                    wait_ike(lab)
                callee = f"sip:ring-bob@{lab.state['gateways']['gwb']['wan'].split('/')[0]}"
                for rtt in rtts:
                    lab.set_wan(LinkSettings(delay_ms=rtt / 2))
                    measured = ping(lab, count=5)[0]
                    ids = []
                    for _ in range(calls):
                        # a pause lets the last call's DELETE finish: on one IKE_SA charon runs one
                        # exchange at a time, and a DELETE in flight delays the next CREATE_CHILD_SA
                        time.sleep(pause)
                        ids.append(place_call(ctl["gwa"], ctl["gwb"], callee, ring, talk))
                    tls = wait_timelines(lab, ids)
                    row = summarise(strategy, rtt, measured, tls, baseline_srd.get(rtt), b)
                    if strategy == "none":
                        baseline_srd[rtt] = row["srd_ms"]
                    rows.append(row)
                    progress(f"{strategy:<15} rtt {rtt:>5.0f} ms (measured {measured:.1f}): gap "
                             f"{row['post_answer_gap_ms']} ms, srd {row['srd_ms']} ms")
            finally:
                for c in ctl.values():
                    c.close()
        finally:
            lab.down()
    measured_at = {r["rtt_set_ms"]: r["rtt_measured_ms"] for r in rows}
    what = {rtt: what_if(measured_at[rtt], b, ring_ms=ring * 1000) for rtt in rtts}
    return {"budget": b.__dict__, "ring_s": ring, "pause_s": pause, "rows": rows,
            "what_if": {str(k): v for k, v in what.items()}}


def wait_ike(lab: Lab, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == "ike-preestablished" for r in ("gwa", "gwb") for e in read_log(lab.controller_log(r))):
            return
        time.sleep(0.2)
