"""SIGHUP applies a re-read configuration's peers to a running controller, with real charons and a
real call (issue 16): a peer added, changed and removed beside a live call leaves the call's SA as it
is (same CHILD_SA, no line about the call); changing the call's own peer keys the call again under
the new settings while it goes on, with nothing in clear on the WAN (protect = required, an
independent tcpdump); charon holds exactly the configured peers' connections after each step;
nothing is left after the call."""

from __future__ import annotations

import os
import secrets
import signal
import time

from ipsecrtp.keying.strongswan import Charon
from ipsecrtp.log import read_log
from ipsecrtp.netns.calls import child_sas, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.timescale import scaled

from .live_call import assert_nothing_left, live_call

# a third gateway that is never reached: ike-per-call, so that nothing is set up to it before a call
GWC = """
[[peer]]
name = "gwc"
ike_local = "{local}"
ike_remote = "198.51.100.200"
local_media = {local_media}
remote_media = ["198.51.100.192/26"]
psk_file = "{psk}"
strategy = "ike-per-call"
esp_proposals = {esp}
"""


def conns(lab: Lab, role: str) -> set[str]:
    c = Charon(lab.vici(role))
    try:
        return set(c.conns())
    finally:
        c.close()


def sighup(lab: Lab, role: str, text: str, event: str) -> dict:
    """Write the controller's configuration, SIGHUP it, and wait for its next ``event`` line."""
    log = lab.controller_log(role)
    seen = sum(e["event"] == event for e in read_log(log))
    path = os.path.join(lab.gw_dir(role), "controller.toml")
    with open(path, "w") as f:
        f.write(text)
    [pid] = [p["pid"] for p in lab.state["procs"] if p["kind"] == "controller" and p["role"] == role]
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        now = [e for e in read_log(log) if e["event"] == event]
        if len(now) > seen:
            return now[seen]
        time.sleep(0.05)
    raise AssertionError(f"no new {event} in {log}")


def test_sighup_applies_peers_live_without_touching_calls_of_unchanged_peers():
    lab = Lab("h" + secrets.token_hex(4))
    try:
        with live_call(lab, talk=14.0) as live:
            path = os.path.join(lab.gw_dir("gwb"), "controller.toml")
            base = open(path).read()
            local = next(ln.split("=", 1)[1].strip().strip('"') for ln in base.splitlines()
                         if ln.startswith("ike_local"))
            media = next(ln.split("=", 1)[1].strip() for ln in base.splitlines() if ln.startswith("local_media"))
            gwc = GWC.format(local=local, local_media=media, psk=lab.psk_path, esp='["aes128gcm16"]')
            [sa] = child_sas(lab, "gwb")
            before = conns(lab, "gwb")

            added = sighup(lab, "gwb", base + gwc, "peer-loaded")
            assert added["peer"] == "gwc" and conns(lab, "gwb") > before
            changed = sighup(lab, "gwb", base + gwc.replace('["aes128gcm16"]', '["aes256gcm16"]'), "peer-loaded")
            assert changed["peer"] == "gwc"
            removed = sighup(lab, "gwb", base, "peer-removed")
            assert removed["peer"] == "gwc" and conns(lab, "gwb") == before
            # the call's CHILD_SA, untouched by all three
            assert [c["uniqueid"] for c in child_sas(lab, "gwb")] == [sa["uniqueid"]]
            call = live.result.get("r")
            assert call is None  # still talking

            # the call's own peer changed: keyed again under the new settings, as the call goes on
            own = base.replace('strategy = "child-per-call"',
                               'strategy = "child-per-call"\nesp_proposals = ["aes128-sha256", "aes128gcm16"]')
            assert own != base
            recovered = sighup(lab, "gwb", own, "sa-recovered")
            assert recovered["reason"] == "peer-changed"
            [now] = child_sas(lab, "gwb")
            assert now["uniqueid"] != sa["uniqueid"]
        r = live.call
        log = read_log(lab.controller_log("gwb"))
        mine = [e for e in log if e.get("call") == r.call_id]
        # nothing about the call before its own peer changed: one set-up, then one for the change
        assert [e["event"] for e in mine if e["event"] in ("sa-initiated", "sa-lost", "sa-recovered")] == \
            ["sa-initiated", "sa-lost", "sa-initiated", "sa-recovered"]
        assert not [e for e in log if e["event"] in ("keying-failed", "reload-failed", "reload-refused")]
        clear = wire_stats(live.capture, lab.rtp_ports).rtp_clear
        assert clear == [], f"cleartext RTP on the WAN: {clear[:3]}"
        assert_nothing_left(lab)
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
