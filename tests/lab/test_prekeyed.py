"""Pre-keyed (0 RTT) calls: both gateways derive the same SAs from the peer secret and the dialog and
install them with xfrm; media is ESP on the WAN; the SAs go with the dialog. Needs kernel ESP: the
real-kernel tier runs it; here, without ESP, the controller refuses the strategy in one line."""

import pytest

from ipsecrtp.keying.xfrmguard import GUARD_PRIORITY
from ipsecrtp.netns import proc
from ipsecrtp.netns.calls import log_events, wait_log

from .kernel_esp import assert_refused_without_esp, one_call

pytestmark = pytest.mark.lab


def test_prekeyed_refused_in_one_line_without_kernel_esp():
    assert_refused_without_esp("pre-keyed installs ESP SAs in the kernel", strategy="pre-keyed")


def test_prekeyed_call_is_protected_without_ike(tmp_path):
    with one_call(tmp_path, strategy="pre-keyed") as kc:
        lab, r = kc.lab, kc.result
        # both gateways computed the same SAs: the kernels hold the same two SPIs
        spis = {role: {sa["spi"] for sa in r.kernel[role]["sas"]} for role in ("gwa", "gwb")}
        assert len(spis["gwa"]) == 2 and spis["gwa"] == spis["gwb"]
        for role in ("gwa", "gwb"):
            up = log_events(lab, role, r.call_id, "sa-up")
            assert {int(x, 16) for x in up[0]["spis"]} == spis[role]
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        wa, wb = kc.wire["gwa"], kc.wire["gwb"]
        esp = [(s, d, spi) for t, s, d, spi in wa.esp if keyed_from < t < keyed_to]
        assert {(s, d) for s, d, _ in esp} == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
        assert {spi for *_x, spi in esp} == spis["gwa"]
        leaked = [p for p in wa.rtp_clear if p[1] == "198.51.100.1" and keyed_from < p[0] < keyed_to] + \
                 [p for p in wb.rtp_clear if p[1] == "198.51.100.2" and keyed_from < p[0] < keyed_to]
        assert leaked == []
        # protect = "required": not before the SAs were installed, nor after they went
        ever = [p for p in wa.rtp_clear if p[1] == "198.51.100.1"] + [p for p in wb.rtp_clear if p[1] == "198.51.100.2"]
        assert ever == [], ever[:3]
        # no IKE on the call's path: the timelines saw no IKE exchange (0 RTT: how many ms installing
        # the SAs takes depends on the machine, the TCG guest is slow, a figure for the bench)
        for role in ("gwa", "gwb"):
            tl = wait_log(lab, role, r.call_id, "timeline", 15)
            assert tl["metrics"]["ike_exchanges"] == []
        for role in ("gwa", "gwb"):
            assert proc.run(lab.ns(role), "ip", "xfrm", "state").stdout.strip() == ""
            # none of the call's policies; the guard's block policies stay with the controller
            policies = proc.run(lab.ns(role), "ip", "xfrm", "policy").stdout.replace("\n\t", " ").splitlines()
            outs = [p for p in policies if "dir out" in p]
            assert all(f"action block priority {GUARD_PRIORITY}" in p for p in outs), outs
