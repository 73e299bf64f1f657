"""Overlapping calls, for every keying strategy (issue 18): three sipp calls from gwa to gwb,
started 0, 1.5 and 3 s apart, each talking a different time, so that they overlap (all three are
up from 3.5 to 5.5 s) and end at different times (5.5, 10.0 and 7.5 s: the first call set up ends
first, while the two others still talk). rtcp-mux SDP on distinct media ports makes each call one
flow, which names its SA on both gateways.

For each call, from the controllers' JSON logs and from polling what the gateways hold (charon's
``list-sas``; the kernel's xfrm policies for pre-keyed) every 0.2 s: keyed once, its SA present
from keying until its own BYE plus the teardown delay on both gateways, removed then (not at another
call's end) and never seen again, no ``keying-failed`` line, nothing left at the end."""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import pytest

from ipsecrtp.kernel.xfrm import probe_esp
from ipsecrtp.log import read_log
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.overlap import Call, CharonSas, SaPoller, XfrmOutPolicies, call_flow, run_calls
from ipsecrtp.netns.pdd import wait_ike

pytestmark = pytest.mark.lab

CALLS = (Call(0.0, 5.0, 10000, 10100), Call(1.5, 8.0, 10010, 10110), Call(3.0, 4.0, 10020, 10120))
TEARDOWN = 1.0  # the controller's default teardown_delay, which the lab keeps
# polls are 0.2 s apart and a removal waits for the keying worker: this much slack around the
# teardown instant; a removal at another call's end is off by 2 s or more in this schedule
SLACK = 0.4
# how late a removal may come after its BYE + teardown: on a loaded machine the keying worker, charon
# and the poll can each be late, so promptness is a figure (bench), not this test's; what the test
# holds is the overlap bug's shape: no SA goes before its own BYE, and none outlives the run
LATE_S = 5.0
# a BYE is this close to its schedule, so that the calls end in the scheduled order (2 s apart or more)
BYE_SLACK_S = 0.9
ROLES = ("gwa", "gwb")


def _events(logs: dict[str, list[dict]], event: str, call: str | None = None) -> list[tuple[str, dict]]:
    return [(r, e) for r in ROLES for e in logs[r]
            if e.get("event") == event and (call is None or e.get("call") == call)]


def overlapping_calls(strategy: str) -> tuple[Lab, SaPoller, dict[str, list[dict]], float]:
    lab = Lab("o" + secrets.token_hex(4))
    poller = None
    try:
        lab.up(strategy=strategy)
        if strategy in ("child-per-call", "speculative"):
            wait_ike(lab)  # the peer's long-lived IKE_SA, so that every call is one CREATE_CHILD_SA
        snap = XfrmOutPolicies if strategy == "pre-keyed" else CharonSas
        poller = SaPoller({r: snap(lab, r) for r in ROLES})
        poller.start()
        started = run_calls(lab, CALLS)
        # the last SA goes TEARDOWN after the last BYE; keep polling a while to see nothing come back
        last_bye = started + max(c.bye_at for c in CALLS)
        time.sleep(max(0.0, last_bye + TEARDOWN + 3.0 - time.time()))
        poller.stop()
        logs = {r: read_log(lab.controller_log(r)) for r in ROLES}
        return lab, poller, logs, started
    finally:
        if poller is not None and poller.is_alive():
            poller.stop()
        lab.down()
        assert f"irtp-{lab.name}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                          text=True).stdout
        assert not os.path.exists(lab.dir)


@pytest.mark.parametrize("strategy", ["ike-per-call", "child-per-call", "speculative", "pre-keyed"])
def test_overlapping_calls_keep_their_own_sas(strategy):
    if strategy == "pre-keyed" and not probe_esp().supported:
        # not in the real-kernel tier's list: a lab there takes minutes under TCG; run it by hand with
        # ipsecrtp lab vm -- .venv/bin/python -m pytest 'tests/lab/test_overlap.py::...[pre-keyed]'
        pytest.skip("pre-keyed needs kernel ESP (ipsecrtp lab vm)")
    lab, poller, logs, started = overlapping_calls(strategy)

    problems = [f"keying-failed on {r}: {e.get('call')} {e.get('child')}: {e.get('reason')}"
                for r, e in _events(logs, "keying-failed")]
    # sipp numbers its calls in the order they start, and its Call-IDs begin with that number
    keyed = {e["call"] for _, e in _events(logs, "keying")}
    assert len(keyed) == len(CALLS), keyed
    call_ids = sorted(keyed, key=lambda c: int(c.split("-", 1)[0]))
    ike_ids: dict[str, set[str]] = {r: set() for r in ROLES}
    for i, (call, cid) in enumerate(zip(CALLS, call_ids, strict=True)):
        name = f"call {i + 1} ({cid})"
        # keyed once: one exact set-up in all (a speculative SA before it is fitted, not re-keyed)
        initiated = [e for _, e in _events(logs, "sa-initiated", cid) if not str(e.get("child")).startswith("spec-")]
        if strategy != "pre-keyed" and len(initiated) != 1:
            problems.append(f"{name}: {len(initiated)} sa-initiated lines, expected 1")
        byes = [e["t"] for _, e in _events(logs, "unkeying", cid) if str(e.get("reason")).startswith("bye")]
        if not byes:
            problems.append(f"{name}: no gateway logged its BYE")
            continue
        bye = min(byes)
        # the BYE the controllers saw is this call's own, as scheduled (one RTT here is under 1 ms)
        if abs((bye - started) - call.bye_at) > BYE_SLACK_S:
            problems.append(f"{name}: BYE at {bye - started:.2f} s, scheduled at {call.bye_at:.2f} s")
        for role in ROLES:
            seen = poller.presence(role, call_flow(lab, role, call))  # the exact SA, not a speculative one
            up = [t for t, sas in seen if sas]
            if not up:
                problems.append(f"{name}: never seen on {role}")
                continue
            first = up[0]
            gone_early = [t for t, sas in seen if first <= t < bye + TEARDOWN - SLACK and not sas]
            if gone_early:
                problems.append(f"{name}: gone on {role} at {gone_early[0] - started:.2f} s, before its BYE "
                                f"at {bye - started:.2f} s + {TEARDOWN} s")
            late = [t for t, sas in seen if t > bye + TEARDOWN + LATE_S and sas]
            if late:
                problems.append(f"{name}: still on {role} at {late[0] - started:.2f} s, its BYE was at "
                                f"{bye - started:.2f} s")
            sas = {s for _, present in seen for s in present}
            if strategy != "pre-keyed" and len({s.uniqueid for s in sas}) != 1:
                problems.append(f"{name}: {len({s.uniqueid for s in sas})} different SAs on {role}")
            ike_ids[role] |= {s.ike_id for s in sas}
            # charon agrees: the call's SA went down once, after its own BYE
            flow = call_flow(lab, role, call)
            exact = ([flow.local], [flow.remote])
            downs = [e["ts"] for r, e in _events(logs, "sa-down", cid) if r == role and
                     (strategy == "pre-keyed" or (e.get("local_ts"), e.get("remote_ts")) == exact)]
            if len(downs) != 1 or downs[0] < bye + TEARDOWN - SLACK:
                problems.append(f"{name}: sa-down on {role} at "
                                f"{[round(t - started, 2) for t in downs]} s, BYE at {bye - started:.2f} s")
    if strategy == "ike-per-call":
        # each call its own IKE_SA, on both gateways
        for role in ROLES:
            if len(ike_ids[role]) != len(CALLS):
                problems.append(f"{role}: the calls' CHILD_SAs were on IKE_SAs {sorted(ike_ids[role])}, "
                                f"expected one per call")
    # nothing left: the last poll of each gateway holds no per-call SA
    for role in ROLES:
        last = [sas for _, r, sas in poller.samples if r == role and sas is not None][-1]
        if last:
            problems.append(f"{role}: left at the end: {last}")
    assert problems == [], "\n".join(problems)
