"""charon hangs (SIGSTOP) on the initiating gateway for 10 s while a real baresip call is set up,
then continues (SIGCONT): gwb's controller logs the time-out (`charon-timeout`, counted in its
metrics), is not wedged (it tracks the call's SIP meanwhile), keys the call once charon answers
again and keys a later call as usual; charon hangs again while that call ends, and its removal
runs once charon continues. With protect = required not one RTP packet crosses the WAN in clear
(an independent tcpdump); nothing is left after the calls."""

import os
import secrets
import signal
import threading
import time

import pytest

from ipsecrtp.log import read_log
from ipsecrtp.netns.calls import Capture, Phones, child_sas, flow_rules, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike

from .test_metrics import scrape, total

pytestmark = pytest.mark.lab

HUNG_S = 10.0


def events(lab: Lab, role: str, call: str | None = None) -> list[dict]:
    return [e for e in read_log(lab.controller_log(role)) if call is None or e.get("call") == call]


def hang(pid: int, after: float, seconds: float, marks: list[float]) -> threading.Thread:
    """SIGSTOP charon ``after`` s from now, SIGCONT it ``seconds`` later; ``marks`` gets both times."""
    def run() -> None:
        time.sleep(after)
        marks.append(time.time())
        os.kill(pid, signal.SIGSTOP)
        time.sleep(seconds)
        marks.append(time.time())
        os.kill(pid, signal.SIGCONT)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_hung_charon_times_out_and_keying_resumes_once_it_continues():
    lab = Lab("h" + secrets.token_hex(4))
    try:
        lab.up()
        lab.start_uas()
        wait_ike(lab)
        charon = next(p for p in lab.state["procs"] if p["kind"] == "charon" and p["role"] == "gwb")
        cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        first_hang: list[float] = []
        second_hang: list[float] = []
        try:
            # 1. charon stops before a call (gwb initiates: its phone answers); the call is still up
            # when charon continues
            hang(charon["pid"], 0.0, HUNG_S, first_hang)
            first = phones.call("caller-hangup", talk=HUNG_S + 3.0, keyed=False)
            # 2. a call keyed as usual, whose BYE comes while charon is stopped again: its removal
            # cannot run until charon continues (keyed=False: the phones would ask the stopped charon)
            t = hang(charon["pid"], 1.5, HUNG_S, second_hang)  # dial, answer, keying, then stop
            second = phones.call("caller-hangup", talk=2.0, keyed=False)
            t.join()
        finally:
            os.kill(charon["pid"], signal.SIGCONT)
            phones.close()
            cap.stop()
        time.sleep(2.5)  # the SAs outlive the BYE by the teardown delay
        gwb = events(lab, "gwb")
        (stopped, resumed), (stopped2, resumed2) = first_hang, second_hang

        def during(a: float, b: float) -> list[dict]:
            return [e for e in gwb if e.get("event") == "charon-timeout" and a < e["ts"] < b]

        timeouts = [e for e in gwb if e.get("event") == "charon-timeout"]
        assert during(stopped, resumed) and during(stopped2, resumed2), timeouts
        assert len(during(stopped, resumed)) + len(during(stopped2, resumed2)) == len(timeouts)
        # not wedged: the call's signalling was tracked while charon was stopped
        confirmed = [e for e in gwb if e.get("event") == "dialog-confirmed" and e.get("call") == first.call_id]
        assert confirmed and confirmed[0]["ts"] < resumed
        assert [e for e in gwb if e.get("event") == "vici-reconnected" and e["ts"] > resumed]
        # the call whose set-up timed out is keyed once charon answers, while it is still up
        rekeyed = [e for e in gwb if e.get("event") == "sa-initiated" and e.get("call") == first.call_id]
        assert rekeyed and rekeyed[0]["ts"] > resumed, [e for e in gwb if e.get("call") == first.call_id]
        keyed = [e for e in gwb if e.get("event") == "sa-initiated" and e.get("call") == second.call_id]
        assert keyed and keyed[0]["ts"] < stopped2
        assert not [e for e in gwb if e.get("event") == "keying-failed" and e.get("call") == second.call_id]
        # the second call's removal waited for charon (parked), then ran: nothing is left
        bye = [e for e in gwb if e.get("event") == "unkeying" and e.get("call") == second.call_id]
        removed = [e for e in gwb if e.get("event") == "sa-removed" and e.get("call") == second.call_id]
        assert bye and stopped2 < bye[0]["ts"] < resumed2, bye
        assert removed and removed[-1]["ts"] > resumed2, removed
        clear = wire_stats(cap.path, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        m = scrape(lab, "gwb")
        assert total(m, "ipsecrtp_charon_timeouts_total") == len(timeouts)
        for role in ("gwa", "gwb"):
            assert flow_rules(lab, role) == []
            assert child_sas(lab, role) == []
        print(f"charon stopped twice for {HUNG_S:.0f} s: time-outs {[e['op'] for e in timeouts]}; "
              f"the call dialled into the hang keyed {rekeyed[0]['ts'] - resumed:.3f} s after SIGCONT; the "
              f"call that ended during the hang removed {removed[-1]['ts'] - resumed2:.3f} s after SIGCONT")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
