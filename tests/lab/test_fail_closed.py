"""protect = "required" (the default) versus "opportunistic", on real baresip calls whose keying
cannot happen (the initiating gateway's charon was killed, -9; or, with required, the peer refuses
the keying: gwa's charon holds a wrong PSK): with required, not one RTP/RTCP packet of the call
crosses the WAN in clear and the packets kept back are counted in the call's timeline; with
opportunistic the same call's media crosses in clear, and that is counted too.
The WAN is judged by an independent tcpdump capture. Also: the data plane's rules and sink stay
when a controller stops (fail-closed across restarts)."""

import os
import secrets
import signal
import time

import pytest

from ipsecrtp.log import read_log
from ipsecrtp.netns import proc
from ipsecrtp.netns.calls import Capture, Phones, wire_stats
from ipsecrtp.netns.faults import wrong_psk
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike


def call_without_charon(protect: str, cause: str = "charon-killed") -> tuple[list, dict]:
    lab = Lab("f" + secrets.token_hex(4))
    try:
        lab.up(protect=protect)
        lab.start_uas()
        if cause == "wrong-psk":
            wait_ike(lab)
            wrong_psk(lab)  # every IKE_SA gwb sets up for the call fails authentication at gwa
        else:
            charon = next(p for p in lab.state["procs"] if p["kind"] == "charon" and p["role"] == "gwb")
            assert proc.alive(charon["pid"], charon["start"])
            os.kill(charon["pid"], signal.SIGKILL)  # gwb initiates (its phone answers): nothing can key
        cap = Capture(lab, "gwa", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        try:
            # the refused keying's answer takes a few seconds (charon's initiate, then its failure): a
            # call that outlives it (the controller reports a set-up only while its call is live)
            r = phones.call("caller-hangup", talk=8.0 if cause == "wrong-psk" else 2.0, keyed=False)
        finally:
            phones.close()
            cap.stop()
        timelines: dict = {}
        deadline = time.monotonic() + 10  # the timelines are logged once the calls are over
        while len(timelines) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            timelines = {}
            for role in ("gwa", "gwb"):
                for e in read_log(lab.controller_log(role)):
                    if e.get("event") == "timeline" and e.get("call") == r.call_id:
                        timelines[role] = e
        rules = proc.run(lab.ns("gwa"), "ip", "rule", "show").stdout
        failed = [e for e in read_log(lab.controller_log("gwb"))
                  if e.get("event") == "keying-failed" and e.get("call") == r.call_id]
        return wire_stats(cap.path, lab.rtp_ports).rtp_clear, {"timelines": timelines, "rules": rules,
                                                                "failed": failed}
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)


@pytest.mark.parametrize("protect", ["required", "opportunistic"])
def test_media_that_cannot_be_keyed(protect):
    clear, seen = call_without_charon(protect)
    tls = seen["timelines"]
    assert set(tls) == {"gwa", "gwb"}  # both controllers saw the whole call
    dropped = sum(t["metrics"]["rtp_dropped_before_protection"] for t in tls.values())
    if protect == "required":
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        assert dropped > 50  # 2 s of 50 packets/s each way, kept back and counted
        assert all(t["metrics"]["clear_rtp_after_answer"] == 0 for t in tls.values())
    else:
        assert len(clear) > 50  # opportunistic: the media crossed in clear ...
        assert dropped == 0
        assert sum(t["metrics"]["clear_rtp_after_answer"] for t in tls.values()) > 50  # ... and is counted
    guard = "fwmark 0x20000/0x20000 lookup 2201" in seen["rules"]
    assert guard  # the sink's rule is there in both modes; only required marks packets for it


def test_keying_refused_by_the_peer_keeps_the_media_from_the_wan():
    """The peer refuses the keying (gwa's charon holds a wrong PSK: AUTHENTICATION_FAILED): the call
    goes on, its keying fails and says why, and not one RTP packet crosses the WAN in clear."""
    clear, seen = call_without_charon("required", "wrong-psk")
    assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
    assert seen["failed"], "gwb logged no keying-failed for the call"
    assert any("AUTHENTICATION_FAILED" in str(e.get("reason")) or "auth" in str(e.get("reason")).lower()
               for e in seen["failed"]), seen["failed"]
    tls = seen["timelines"]
    assert set(tls) == {"gwa", "gwb"}
    assert sum(t["metrics"]["rtp_dropped_before_protection"] for t in tls.values()) > 50
