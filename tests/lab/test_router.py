"""Router mode: a phone behind each gateway, the gateways forwarding, per-call CHILD_SAs whose
selectors are the phones' addresses and ports. Needs kernel ESP (charon's kernel-netlink): it runs
in the real-kernel tier (tests/test_vm_tier.py) and is skipped on a kernel without ESP."""

import os
import secrets

import pytest

from ipsecrtp.kernel.view import compare
from ipsecrtp.kernel.xfrm import probe_esp
from ipsecrtp.netns.calls import Capture, Phones, child_sas, wire_stats
from ipsecrtp.netns.lab import Lab, LabError

pytestmark = pytest.mark.lab


def test_router_mode_is_refused_without_kernel_esp():
    if probe_esp().supported:
        pytest.skip("this kernel does ESP")
    lab = Lab("r" + secrets.token_hex(4))
    try:
        with pytest.raises(LabError, match="router mode needs kernel ESP"):
            lab.up(mode="router")
    finally:
        lab.down()
    assert not os.path.exists(lab.dir)


def test_router_mode_call_keyed_between_gateways_for_the_phones(tmp_path):
    if not probe_esp().supported:
        pytest.skip("needs kernel ESP: the real-kernel tier runs this")
    lab = Lab("r" + secrets.token_hex(4))
    try:
        lab.up(mode="router")
        assert lab.state["backend"] == "kernel-netlink"
        lab.start_uas()
        caps = {r: Capture(lab, r, str(tmp_path / f"{r}.pcap")) for r in ("gwa", "gwb")}
        phones = Phones(lab)
        try:
            r = phones.call("caller-hangup", talk=2.0)
        finally:
            phones.close()
            for c in caps.values():
                c.stop()
        for role, local, remote in (("gwa", "192.0.2.10/32", "203.0.113.10/32"),
                                    ("gwb", "203.0.113.10/32", "192.0.2.10/32")):
            (child,) = r.children[role]
            assert all(t.startswith(local) for t in child["local-ts"])
            assert all(t.startswith(remote) for t in child["remote-ts"])
            assert compare(r.children[role], r.kernel[role]) == []
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        wa, wb = wire_stats(caps["gwa"].path), wire_stats(caps["gwb"].path)
        # on the WAN: ESP between the gateways both ways; no phone RTP leaving a gateway in clear while keyed
        esp = {(s, d) for t, s, d, _spi in wa.esp if keyed_from < t < keyed_to}
        assert esp == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
        leaked = [p for p in wa.rtp_clear if p[1] == "192.0.2.10" and keyed_from < p[0] < keyed_to] + \
                 [p for p in wb.rtp_clear if p[1] == "203.0.113.10" and keyed_from < p[0] < keyed_to]
        assert leaked == []
        assert {r_: child_sas(lab, r_) for r_ in ("gwa", "gwb")} == {"gwa": [], "gwb": []}
    finally:
        lab.down()
    assert not os.path.exists(lab.dir)
