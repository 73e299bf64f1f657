"""A SIP flood from one source during a real baresip call (issue 15 item 6): junk and never-answered
INVITEs from an address of their own on the WAN, well beyond the per-source dialog cap (lowered to
100 here). The legitimate call is keyed on both gateways as without the flood (0 RTP in clear), the
flood's dialogs are evicted oldest first and counted: the controller's Prometheus counter, scraped
over HTTP, equals its ``dialog-evicted`` lines, every one of them the attacker's, and no legitimate
dialog is evicted. The flood here is one the controller reads in full (400 messages a second);
what 10,000 a second does (the kernel drops what the controller cannot read) is measured by
``bench faults`` (sip-flood), not asserted."""

import os
import secrets
import threading
import time

from ipsecrtp.netns import faultflood, proc
from ipsecrtp.netns.calls import Capture, Phones, child_sas, flow_rules, log_events, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike

CAP = 100
RATE, SECONDS = 400, 12.0


def test_a_legitimate_call_is_keyed_during_a_flood_and_the_evictions_are_counted():
    lab = Lab("s" + secrets.token_hex(4))
    try:
        lab.up(controllers=False)
        lab.state["controller_extra"] = [f"max_dialogs_per_source = {CAP}"]
        lab.save()
        lab.start_controllers()
        lab.start_uas()
        wait_ike(lab)
        cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
        stats = os.path.join(lab.dir, "flood.json")
        flood = faultflood.start(lab, RATE, SECONDS, stats)
        attacker, _target = faultflood.addresses(lab)
        time.sleep(3.0)  # the cap is reached: every new flood INVITE evicts an older one
        phones = Phones(lab)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=phones.call("caller-hangup", talk=3)))
        t.start()
        t.join(timeout=60)
        phones.close()
        assert proc.wait_exit(*flood, timeout=SECONDS + 10)
        cap.stop()
        r = result["r"]
        time.sleep(2.5)  # the SA outlives the BYE by the teardown delay
        for role in ("gwa", "gwb"):
            assert log_events(lab, role, r.call_id, "sa-up"), f"{role}: the call was not keyed"
            evicted = log_events(lab, role, event="dialog-evicted")
            assert len(evicted) > RATE / 2 * SECONDS / 2, f"{role}: {len(evicted)} evictions"
            assert {e["source"] for e in evicted} == {attacker}
            assert {e["cap"] for e in evicted} == {"dialogs-per-source"}
            assert faultflood.evictions(lab, role) == len(evicted)
            assert r.call_id not in {e["call"] for e in evicted}
            assert flow_rules(lab, role) == [] and child_sas(lab, role) == []
        initiated = log_events(lab, "gwb", r.call_id, "sa-initiated")
        assert len(initiated) == 1
        clear = wire_stats(cap.path, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        rss = faultflood.rss(lab)
        print(f"flood {open(stats).read()}; evicted gwa {faultflood.evictions(lab, 'gwa'):.0f} "
              f"gwb {faultflood.evictions(lab, 'gwb'):.0f}; keyed {initiated[0]['after_answer_ms']} ms after the "
              f"answer; controllers' RSS {rss}")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
