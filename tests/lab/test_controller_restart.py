"""A controller restart (SIGTERM, as a service manager stops it, then start) during real calls:
the calls' SAs stay up while it is down and are adopted, not keyed again, by the new run (its
journal and charon's list-sas); a BYE seen by the new run removes the SA; with protect =
required nothing crosses the WAN in clear at any time (an independent tcpdump); nothing is left."""

import os
import secrets
import time

from ipsecrtp.log import read_log
from ipsecrtp.netns.calls import child_sas, flow_rules, wire_stats
from ipsecrtp.netns.lab import Lab

from .live_call import live_call


def test_live_calls_survive_a_controller_restart():
    lab = Lab("c" + secrets.token_hex(4))
    try:
        with live_call(lab) as live:
            up_before = child_sas(lab, "gwb")
            lab.restart_controller("gwb", down_s=1.0)  # gwb initiated the call's CHILD_SA
            held = child_sas(lab, "gwb")
        r = live.call
        time.sleep(2.5)  # the SA outlives the BYE by the teardown delay
        log = [e for e in read_log(lab.controller_log("gwb")) if e.get("call") == r.call_id]
        assert len(up_before) == 1 and [c["uniqueid"] for c in held] == [up_before[0]["uniqueid"]]
        assert [e["event"] for e in log if e["event"] in ("sa-initiated", "call-adopted")] == \
            ["sa-initiated", "call-adopted"]  # keyed once, adopted by the new run, not keyed again
        removed = [e for e in log if e["event"] == "sa-removed"]
        assert [e["reason"] for e in removed] == ["bye-by-caller"]
        assert not [e for e in log if e["event"] == "keying-failed"]
        clear = wire_stats(live.capture, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        for role in ("gwa", "gwb"):
            assert child_sas(lab, role) == []
            assert flow_rules(lab, role) == []
        assert os.listdir(os.path.join(lab.gw_dir("gwb"), "state")) == []  # the journal is empty again
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
