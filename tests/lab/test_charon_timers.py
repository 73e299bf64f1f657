"""charon's IKE retransmission timers against the post-dial budget (issue 15 item 7), on a lab's
real charon: with the recommended timers (what the lab runs) the controller's start line and
`doctor --config` are content; after gwb's charon is started again with charon's defaults, both
warn in one line (a warning, not a failure). What the reader says is checked against what charon
does: an IKE_SA_INIT that nobody answers is sent again within 2.5 s with the recommended timers and
not at all with the defaults (first retransmission after 4 s)."""

import dataclasses
import os
import secrets

import pytest
import vici

from ipsecrtp import doctor
from ipsecrtp.keying.charontimers import CHARON_DEFAULTS
from ipsecrtp.keying.strongswan import Charon
from ipsecrtp.log import read_log
from ipsecrtp.netns import proc
from ipsecrtp.netns.ikeloss import _peer as bench_peer
from ipsecrtp.netns.lab import Lab

pytestmark = pytest.mark.lab

NOBODY = "198.51.100.99"  # on the lab's WAN, held by no namespace


def timers_lines(lab: Lab, role: str) -> list[dict]:
    return [e for e in read_log(lab.controller_log(role)) if str(e.get("event", "")).startswith("charon-timers")]


def doctor_timers(lab: Lab, role: str) -> doctor.Check:
    cfg = os.path.join(lab.gw_dir(role), "controller.toml")
    checks = proc.in_netns(lab.ns(role), lambda: doctor.config_checks(cfg, None))
    assert not doctor.failed(checks), [doctor.format_line(c) for c in doctor.failed(checks)]
    return next(c for c in checks if c.name == "charon:timers")


def retransmissions_within(lab: Lab, wait_s: float) -> int:
    """gwb's charon initiates an IKE_SA to an address on the WAN that nobody holds: how many times
    does it send the IKE_SA_INIT again within ``wait_s``? (charon's own log of the initiate,
    streamed back over VICI)"""
    peer = dataclasses.replace(bench_peer(lab, "gwb", "gwa"), ike_remote=NOBODY)
    c = Charon(lab.vici("gwb"))
    msgs: list[str] = []
    try:
        # a connection marked with its own name: a new IKE_SA, never the lab's (charon reuses equal ones)
        c.load_call_conn(peer, "timers", [f"{peer.ike_local}/32[udp/30000]"], [f"{NOBODY}/32[udp/30000]"])
        try:
            for log in c.session.initiate({"ike": "timers", "timeout": int(wait_s * 1000), "init-limits": "no"}):
                msgs.append(log.get("msg", b"").decode())
            raise AssertionError(f"{NOBODY} answered? {msgs}")
        except vici.exception.CommandException:
            pass  # nobody answers: charon's own time-out
        c.unload_conn("timers")
    finally:
        c.close()
    assert any("initiating IKE_SA timers" in m for m in msgs), msgs
    return sum(m.startswith("retransmit ") and "of request" in m for m in msgs)


def test_the_timers_check_is_content_with_the_recommended_ones_and_warns_with_charons_defaults():
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up()
        assert [e["event"] for e in timers_lines(lab, "gwb")] == ["charon-timers"]
        tuned = doctor_timers(lab, "gwb")
        assert tuned.ok and "retransmit_timeout 0.5 s" in tuned.detail, tuned
        tuned_sent = retransmissions_within(lab, 2.5)
        assert tuned_sent >= 2  # 0.5 s, then 1.2 s: charon uses what was read

        lab.state["charon_extra"] = "\n".join("  " + t for t in CHARON_DEFAULTS.conf_lines())
        lab.kill_charon("gwb")
        lab.start_charon("gwb")
        lab.restart_controller("gwb")
        lines = timers_lines(lab, "gwb")
        assert [e["event"] for e in lines] == ["charon-timers", "charon-timers-warning"]
        assert "retransmit_timeout = 0.5" in lines[-1]["detail"] and "\n" not in lines[-1]["detail"]
        default = doctor_timers(lab, "gwb")  # a warning: the doctor has not failed (asserted inside)
        assert not default.ok and not default.required and "retransmit_timeout 4 s" in default.detail, default
        assert doctor.format_line(default).startswith("warn")
        assert retransmissions_within(lab, 2.5) == 0  # the first retransmission would come at 4 s
        print(f"IKE_SA_INIT sent again within 2.5 s: {tuned_sent} times with the recommended timers, 0 with "
              f"charon's defaults; warning: {lines[-1]['detail']}")
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
