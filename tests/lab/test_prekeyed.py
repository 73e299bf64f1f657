"""Pre-keyed (0 RTT) calls: both gateways derive the same SAs from the peer secret and the dialog and
install them with xfrm; media is ESP on the WAN; the SAs go with the dialog. Needs kernel ESP: the
real-kernel tier runs it; here, without ESP, the controller refuses the strategy in one line."""

import os
import secrets

import pytest

from ipsecrtp.kernel.xfrm import probe_esp
from ipsecrtp.netns import proc
from ipsecrtp.netns.calls import Capture, Phones, log_events, wait_log, wire_stats
from ipsecrtp.netns.lab import Lab, LabError

pytestmark = pytest.mark.lab


def test_prekeyed_refused_in_one_line_without_kernel_esp():
    if probe_esp().supported:
        pytest.skip("this kernel does ESP")
    lab = Lab("k" + secrets.token_hex(4))
    try:
        with pytest.raises(LabError, match="pre-keyed installs ESP SAs in the kernel"):
            lab.up(strategy="pre-keyed")
    finally:
        lab.down()
    assert not os.path.exists(lab.dir)


def test_prekeyed_call_is_protected_without_ike(tmp_path):
    if not probe_esp().supported:
        pytest.skip("needs kernel ESP: the real-kernel tier runs this")
    lab = Lab("k" + secrets.token_hex(4))
    try:
        lab.up(strategy="pre-keyed")
        lab.start_uas()
        caps = {r: Capture(lab, r, str(tmp_path / f"{r}.pcap")) for r in ("gwa", "gwb")}
        phones = Phones(lab)
        try:
            r = phones.call("caller-hangup", talk=2.0)
        finally:
            phones.close()
            for c in caps.values():
                c.stop()
        # both gateways computed the same SAs: the kernels hold the same two SPIs
        spis = {role: {sa["spi"] for sa in r.kernel[role]["sas"]} for role in ("gwa", "gwb")}
        assert len(spis["gwa"]) == 2 and spis["gwa"] == spis["gwb"]
        for role in ("gwa", "gwb"):
            up = log_events(lab, role, r.call_id, "sa-up")
            assert {int(x, 16) for x in up[0]["spis"]} == spis[role]
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        wa, wb = wire_stats(caps["gwa"].path), wire_stats(caps["gwb"].path)
        esp = [(s, d, spi) for t, s, d, spi in wa.esp if keyed_from < t < keyed_to]
        assert {(s, d) for s, d, _ in esp} == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
        assert {spi for *_x, spi in esp} == spis["gwa"]
        leaked = [p for p in wa.rtp_clear if p[1] == "198.51.100.1" and keyed_from < p[0] < keyed_to] + \
                 [p for p in wb.rtp_clear if p[1] == "198.51.100.2" and keyed_from < p[0] < keyed_to]
        assert leaked == []
        # no IKE on the call's path: the timelines saw no IKE exchange, and the SAs were up at once
        for role in ("gwa", "gwb"):
            tl = wait_log(lab, role, r.call_id, "timeline", 15)
            assert tl["metrics"]["ike_exchanges"] == [] and tl["metrics"]["keying_ms"] < 1000  # TCG guest: slow
        for role in ("gwa", "gwb"):
            assert proc.run(lab.ns(role), "ip", "xfrm", "state").stdout.strip() == ""
            assert "dir out" not in proc.run(lab.ns(role), "ip", "xfrm", "policy").stdout
    finally:
        lab.down()
    assert not os.path.exists(lab.dir)
