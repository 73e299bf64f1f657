"""IKE loss during a real call's keying (issue 15 item 7's scenario in the suite): the emulated WAN drops
IKE packets only (UDP 500, and 4500 with the non-ESP marker), at random both ways, 30 % of them,
from just before the call until after it. The seed is chosen so that the first IKE packet after the
loss is switched on is dropped (the emulator draws only for IKE packets, from a generator seeded
at each change), so the loss is certain to be met, not left to chance. With the lab's recommended retransmission
timers the call is still keyed on both gateways, not one RTP packet crosses the WAN in clear
(protect = required: until the SA is up its media is kept back, and counted), the emulator really
dropped IKE packets, and nothing is left after the call. How long the keying took under loss is a
benchmark's figure (``bench faults --scenario ike-loss``, ``bench ike-loss``), not asserted here."""

import json
import os
import secrets
import signal
import time

from ipsecrtp.netns.calls import Capture, Phones, child_sas, flow_rules, log_events, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike
from ipsecrtp.netns.wanem import LinkSettings
from ipsecrtp.timescale import scaled


def emulator_stats(lab: Lab) -> dict:
    """The emulator's counters, written on SIGUSR1."""
    p = next(p for p in lab.state["procs"] if p["kind"] == "wanem")
    path = lab.wan_config + ".stats"
    before = os.path.getmtime(path) if os.path.exists(path) else 0.0
    os.kill(p["pid"], signal.SIGUSR1)
    deadline = time.monotonic() + scaled(5.0)
    while time.monotonic() < deadline and (not os.path.exists(path) or os.path.getmtime(path) == before):
        time.sleep(0.05)
    with open(path) as f:
        return json.load(f)


def test_a_call_is_keyed_through_ike_loss_and_nothing_leaves_in_clear():
    lab = Lab("k" + secrets.token_hex(4))
    try:
        lab.up(wan=LinkSettings(delay_ms=10.0))
        lab.start_uas()
        wait_ike(lab)  # the peer's IKE_SA before the loss: the call's CREATE_CHILD_SA meets it
        cap = Capture(lab, "gwa", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        # seed 67: the first draw (0.07) drops, the next five (0.77 0.97 0.42 0.94 0.43) pass
        lab.set_wan(LinkSettings(delay_ms=10.0, ike_loss=0.3, seed=67))
        try:
            r = phones.call("caller-hangup", talk=3.0)  # waits for the call's SA on both gateways
        finally:
            phones.close()
            cap.stop()
        lost = sum(d.get("ike_lost", 0) for d in emulator_stats(lab).values() if isinstance(d, dict))
        for role in ("gwa", "gwb"):
            assert log_events(lab, role, r.call_id, "sa-up"), f"{role}: the call was never keyed"
        assert lost >= 1, "the emulator dropped no IKE packet"
        clear = wire_stats(cap.path, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        time.sleep(2.5)  # the SA outlives the BYE by the teardown delay
        for role in ("gwa", "gwb"):
            assert child_sas(lab, role) == [] and flow_rules(lab, role) == []
        print(f"IKE packets the emulator dropped: {lost}")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
