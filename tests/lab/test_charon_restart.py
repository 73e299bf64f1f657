"""charon crashes (kill -9) and comes back during a real baresip call: the initiating gateway's
controller notices (its event session breaks), reconnects when charon answers again, loads its
peers again and keys the live call anew (a new generation); with protect = required not one RTP
packet of the call crosses the WAN in clear meanwhile (an independent tcpdump), and nothing is
left after the call. How long the re-keying took is reported by `bench faults`, not asserted."""

import os
import secrets
import time

from ipsecrtp.log import read_log
from ipsecrtp.netns.calls import child_sas, flow_rules, wire_stats
from ipsecrtp.netns.lab import Lab

from .live_call import live_call


def events(lab: Lab, role: str, call: str | None = None) -> list[dict]:
    return [e for e in read_log(lab.controller_log(role)) if call is None or e.get("call") == call]


def test_a_live_call_is_keyed_again_after_charon_restarts():
    lab = Lab("r" + secrets.token_hex(4))
    try:
        with live_call(lab) as live:
            lab.kill_charon("gwb")  # the answerer's gateway initiates the call's CHILD_SA
            time.sleep(1.0)
            restarted = time.time()
            lab.start_charon("gwb")
        r = live.call
        time.sleep(2.5)  # the SA outlives the BYE by the teardown delay
        gwb = events(lab, "gwb", r.call_id)
        initiated = [e for e in gwb if e.get("event") == "sa-initiated"]
        assert [e["child"][-2:] for e in initiated] == ["-0", "-1"]  # keyed, then keyed again as generation 1
        assert initiated[1]["ts"] > restarted
        assert [e for e in gwb if e.get("event") == "sa-lost"]
        assert [e for e in events(lab, "gwb") if e.get("event") == "vici-reconnected"]
        assert not [e for e in gwb if e.get("event") == "keying-failed" and e["ts"] > initiated[1]["ts"]]
        clear = wire_stats(live.capture, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        for role in ("gwa", "gwb"):
            assert flow_rules(lab, role) == []
        assert child_sas(lab, "gwb") == []
        print(f"re-keyed {initiated[1]['ts'] - restarted:.3f} s after charon was started again")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
