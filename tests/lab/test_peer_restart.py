"""The peer gateway's charon crashes (kill -9) and comes back during a real baresip call (issue 15
item 5). The surviving gateway (gwb, which initiated the call's CHILD_SA) learns it from the new
IKE_SA gwa's controller sets up once its new charon answers (gwa has the lower address: member 0 is
its to set up): gwb deletes the IKE_SA gwa lost (``peer-lost-ike``, gateway/peerloss.py), charon
reports the call's CHILD_SA down and the controller keys the call again (``sa-lost`` reason
child-down, a new generation, ``sa-recovered``), without waiting for dead-peer detection. Then
both sides hold one CHILD_SA with the call's flows whose SPIs agree, not one RTP packet crossed
the WAN in clear meanwhile (protect = required, an independent tcpdump), and nothing is left after
the call. How long it took is reported by
``bench faults``, not asserted."""

import os
import secrets
import threading
import time

from ipsecrtp.gateway.peerloss import RACE_S
from ipsecrtp.netns.calls import Capture, Phones, child_sas, flow_rules, log_events, wire_stats
from ipsecrtp.netns.faults import TUNED, protected
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_a_live_call_is_keyed_again_after_the_peer_gateway_restarts():
    lab = Lab("p" + secrets.token_hex(4))
    try:
        lab.up(charon_extra="\n".join("  " + ln for ln in TUNED))
        lab.start_uas()
        wait_ike(lab)
        cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=phones.call("caller-hangup", talk=28)))
        t.start()
        try:
            assert wait_for(lambda: protected(lab) == 1, 15)
            first = child_sas(lab, "gwb")
            killed = time.time()
            lab.kill_charon("gwa")  # the peer of the initiating gateway: its IKE_SA vanishes silently
            time.sleep(1.0)
            lab.start_charon("gwa")
            # gwa's new IKE_SA (dead-peer detection would take dpd_delay 2 s + ~12 s of retransmissions)
            assert wait_for(lambda: bool(log_events(lab, "gwb", event="sa-recovered")), 25), \
                "gwb never keyed the call again"
            assert wait_for(lambda: protected(lab) == 1, 3)
            now_b, now_a = child_sas(lab, "gwb"), child_sas(lab, "gwa")
        finally:
            t.join(timeout=60)
            phones.close()
            cap.stop()
        r = result["r"]
        # gwb's new CHILD_SA carries the call's flows (the same selectors, a new generation) and is
        # the very SA gwa holds now (its SPIs reversed): protected on both sides
        assert [c["local-ts"] for c in now_b] == [c["local-ts"] for c in first]
        assert now_b[0]["name"].endswith("-1") and first[0]["name"].endswith("-0")
        assert (now_a[0]["spi-in"], now_a[0]["spi-out"]) == (now_b[0]["spi-out"], now_b[0]["spi-in"])
        lost = log_events(lab, "gwb", r.call_id, "sa-lost")
        assert [e["reason"] for e in lost] == ["child-down"] and lost[0]["ts"] > killed
        recovered = log_events(lab, "gwb", r.call_id, "sa-recovered")
        assert len(recovered) == 1 and recovered[0]["outage_s"] > 0
        assert log_events(lab, "gwa", r.call_id, "sa-lost") == []  # the responder leaves it to gwb
        # the call's SA went because gwb deleted the IKE_SA gwa had lost, not by dead-peer detection
        (cleared,) = log_events(lab, "gwb", event="peer-lost-ike")
        assert cleared["cleared"] == [first[0]["ike-id"]], (cleared, first)
        new_ike = next(e for e in log_events(lab, "gwb", event="ike-up") if e["ike"] == cleared["new_ike"])
        assert killed < new_ike["ts"] <= lost[0]["ts"]  # the peer's new IKE_SA came first, then the loss
        time.sleep(2.5)  # the SA outlives the BYE by the teardown delay
        clear = wire_stats(cap.path, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        for role in ("gwa", "gwb"):
            assert flow_rules(lab, role) == []
            assert child_sas(lab, role) == []
        print(f"re-keyed {recovered[0]['ts'] - killed:.2f} s after the peer's charon was killed "
              f"(outage {recovered[0]['outage_s']} s from the SA down)")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)


def test_the_higher_address_peer_restarting_is_told_by_its_new_ike_sa_too():
    """The other way round: gwb's phone calls gwa's, so gwa (the lower address, which set the IKE_SA
    up at start) initiates the call's CHILD_SA, and gwb's charon is the one killed. When gwb's new
    charon answers, gwb's controller sets the IKE_SA up again; gwa sees it, clears the old IKE_SA it
    had set up itself (long past the start race) and keys the call again, without dead-peer detection."""
    lab = Lab("p" + secrets.token_hex(4))
    try:
        lab.up(charon_extra="\n".join("  " + ln for ln in TUNED))
        lab.start_uas()
        wait_ike(lab)
        phones = Phones(lab)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=phones.call("caller-hangup", talk=30, reverse=True)))
        t.start()
        try:
            assert wait_for(lambda: protected(lab) == 1, 15)
            first = child_sas(lab, "gwa")
            # gwa's own IKE_SA is cleared only once it is older than the start race (peerloss.RACE_S)
            (up,) = log_events(lab, "gwa", event="ike-preestablished")
            time.sleep(max(0.0, up["ts"] + RACE_S + 1.0 - time.time()))
            killed = time.time()
            lab.kill_charon("gwb")
            time.sleep(1.0)
            lab.start_charon("gwb")
            assert wait_for(lambda: bool(log_events(lab, "gwa", event="sa-recovered")), 25), \
                "gwa never keyed the call again"
            assert wait_for(lambda: protected(lab) == 1, 3)
        finally:
            t.join(timeout=60)
            phones.close()
        r = result["r"]
        lost = log_events(lab, "gwa", r.call_id, "sa-lost")
        assert [e["reason"] for e in lost] == ["child-down"] and lost[0]["ts"] > killed
        (cleared,) = log_events(lab, "gwa", event="peer-lost-ike")
        assert cleared["cleared"] == [first[0]["ike-id"]], (cleared, first)
        recovered = log_events(lab, "gwa", r.call_id, "sa-recovered")
        print(f"re-keyed {recovered[0]['ts'] - killed:.2f} s after the peer's charon was killed")
        time.sleep(2.5)
        for role in ("gwa", "gwb"):
            assert flow_rules(lab, role) == [] and child_sas(lab, role) == []
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
