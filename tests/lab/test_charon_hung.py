"""charon hangs (SIGSTOP) on the initiating gateway for ~10 s while a real baresip call is set up,
then continues (SIGCONT): gwb's controller logs the time-out (`charon-timeout`, counted in its
metrics), is not wedged (it tracks the call's SIP meanwhile), keys the call once charon answers
again, keys a later call as usual, and with protect = required not one RTP packet crosses the WAN
in clear (an independent tcpdump); nothing is left after the calls."""

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


def test_a_hung_charon_times_out_and_keying_resumes_once_it_continues():
    lab = Lab("h" + secrets.token_hex(4))
    try:
        lab.up()
        lab.start_uas()
        wait_ike(lab)
        charon = next(p for p in lab.state["procs"] if p["kind"] == "charon" and p["role"] == "gwb")
        cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        try:
            os.kill(charon["pid"], signal.SIGSTOP)  # gwb initiates: its phone answers
            stopped = time.time()
            resumed: list[float] = []

            def resume() -> None:
                time.sleep(HUNG_S)
                resumed.append(time.time())
                os.kill(charon["pid"], signal.SIGCONT)

            t = threading.Thread(target=resume)
            t.start()
            try:
                # dialled into the hang; still talking when charon continues
                first = phones.call("caller-hangup", talk=HUNG_S + 3.0, keyed=False)
            finally:
                t.join()
            second = phones.call("caller-hangup", talk=2.0)  # after: keyed as usual (waits for sa-up)
        finally:
            os.kill(charon["pid"], signal.SIGCONT)
            phones.close()
            cap.stop()
        time.sleep(2.5)  # the SAs outlive the BYE by the teardown delay
        gwb = events(lab, "gwb")
        timeouts = [e for e in gwb if e.get("event") == "charon-timeout"]
        assert timeouts and all(stopped < e["ts"] < resumed[0] for e in timeouts), timeouts
        assert {e["op"] for e in timeouts} <= {"load-conn", "initiate", "list-sas", "terminate", "unload-conn"}
        # not wedged: the call's signalling was tracked while charon was stopped
        confirmed = [e for e in gwb if e.get("event") == "dialog-confirmed" and e.get("call") == first.call_id]
        assert confirmed and confirmed[0]["ts"] < resumed[0]
        assert [e for e in gwb if e.get("event") == "vici-reconnected" and e["ts"] > resumed[0]]
        # the call whose set-up timed out is keyed once charon answers, while it is still up
        rekeyed = [e for e in gwb if e.get("event") == "sa-initiated" and e.get("call") == first.call_id]
        assert rekeyed and rekeyed[0]["ts"] > resumed[0], [e for e in gwb if e.get("call") == first.call_id]
        assert [e for e in gwb if e.get("event") == "sa-initiated" and e.get("call") == second.call_id]
        assert not [e for e in gwb if e.get("event") == "keying-failed" and e.get("call") == second.call_id]
        clear = wire_stats(cap.path, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        m = scrape(lab, "gwb")
        assert total(m, "ipsecrtp_charon_timeouts_total") == len(timeouts)
        for role in ("gwa", "gwb"):
            assert flow_rules(lab, role) == []
            assert child_sas(lab, role) == []
        print(f"charon stopped {HUNG_S:.0f} s: {len(timeouts)} time-out(s) ({[e['op'] for e in timeouts]}); "
              f"the first call keyed {rekeyed[0]['ts'] - resumed[0]:.3f} s after SIGCONT; its events at gwb: "
              f"{[(e['event'], round(e['ts'] - stopped, 2)) for e in gwb if e.get('call') == first.call_id]}")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
