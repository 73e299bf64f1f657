"""Router mode: a phone behind each gateway, the gateways forwarding, per-call CHILD_SAs whose
selectors are the phones' addresses and ports. Needs kernel ESP (charon's kernel-netlink): it runs
in the real-kernel tier (tests/test_vm_tier.py) and is skipped on a kernel without ESP."""

import pytest

from ipsecrtp.kernel.view import compare
from ipsecrtp.netns.calls import child_sas

from .kernel_esp import assert_refused_without_esp, one_call

pytestmark = pytest.mark.lab


def test_router_mode_is_refused_without_kernel_esp():
    assert_refused_without_esp("router mode needs kernel ESP", mode="router")


def test_router_mode_call_keyed_between_gateways_for_the_phones(tmp_path):
    with one_call(tmp_path, mode="router") as kc:
        lab, r = kc.lab, kc.result
        for role, local, remote in (("gwa", "192.0.2.10/32", "203.0.113.10/32"),
                                    ("gwb", "203.0.113.10/32", "192.0.2.10/32")):
            (child,) = r.children[role]
            assert all(t.startswith(local) for t in child["local-ts"])
            assert all(t.startswith(remote) for t in child["remote-ts"])
            assert compare(r.children[role], r.kernel[role]) == []
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        wa, wb = kc.wire["gwa"], kc.wire["gwb"]
        # on the WAN: ESP between the gateways both ways; no phone RTP leaving a gateway in clear while keyed
        esp = {(s, d) for t, s, d, _spi in wa.esp if keyed_from < t < keyed_to}
        assert esp == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
        leaked = [p for p in wa.rtp_clear if p[1] == "192.0.2.10" and keyed_from < p[0] < keyed_to] + \
                 [p for p in wb.rtp_clear if p[1] == "203.0.113.10" and keyed_from < p[0] < keyed_to]
        assert leaked == []
        assert {r_: child_sas(lab, r_) for r_ in ("gwa", "gwb")} == {"gwa": [], "gwb": []}
