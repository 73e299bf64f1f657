"""xfrm messages built on pyroute2's marshalling, against a kernel that does ESP: add an SA, dump it,
compare, delete it. Runs in the real-kernel tier (qemu guest); skipped on a kernel without ESP."""

import os

import pytest

from ipsecrtp.kernel.xfrm import (
    IPPROTO_ESP,
    XFRM_MODE_TRANSPORT,
    XFRM_MODE_TUNNEL,
    XfrmSocket,
    add_esp_sa,
    del_sa,
    dump_sas,
    probe_esp,
)
from ipsecrtp.netns import proc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def netns():
    """A namespace of its own, so that the test touches no SA but its own."""
    name = "irtp-x" + os.urandom(4).hex()
    proc.run(None, "ip", "netns", "add", name)
    try:
        yield name
    finally:
        proc.run(None, "ip", "netns", "del", name, check=False)


def test_sa_round_trip(netns):
    def body():
        if not probe_esp().supported:
            pytest.skip("this kernel has no ESP (the host tier); the qemu tier runs this")
        sock = XfrmSocket()
        try:
            cases = [("198.51.100.1", "198.51.100.2", 0xC0FFEE01, XFRM_MODE_TUNNEL, 7),
                     ("2001:db8::1", "2001:db8::2", 0xC0FFEE02, XFRM_MODE_TRANSPORT, 9)]
            for src, dst, spi, mode, reqid in cases:
                add_esp_sa(sock, src, dst, spi, os.urandom(16), os.urandom(32), mode=mode, reqid=reqid)
            got = {sa.spi: sa for sa in dump_sas(sock)}
            assert set(got) == {c[2] for c in cases}
            for src, dst, spi, mode, reqid in cases:
                sa = got[spi]
                assert (sa.src, sa.dst, sa.proto, sa.mode, sa.reqid) == (src, dst, IPPROTO_ESP, mode, reqid)
                assert sa.bytes == 0 and sa.packets == 0
            # what the kernel holds, read by iproute2 independently of our parser
            out = proc.run(None, "ip", "xfrm", "state").stdout
            assert "spi 0xc0ffee01" in out and "mode tunnel" in out and "reqid 7" in out
            for src, dst, spi, _m, _r in cases:
                del_sa(sock, src, dst, spi)
            assert dump_sas(sock) == []
        finally:
            sock.close()
    proc.in_netns(netns, body)


def test_policy_round_trip(netns):
    from ipsecrtp.kernel.xfrm import XFRM_POLICY_IN, XFRM_POLICY_OUT, Selector, add_policy, del_policy, dump_policies

    def body():
        if not probe_esp().supported:
            pytest.skip("this kernel has no ESP (the host tier); the qemu tier runs this")
        sock = XfrmSocket()
        try:
            out = Selector("198.51.100.1/32", "198.51.100.2/32", 17, 10000, 20000)
            back = Selector("198.51.100.2/32", "198.51.100.1/32", 17, 20000, 10000)
            add_policy(sock, out, XFRM_POLICY_OUT, "198.51.100.1", "198.51.100.2", reqid=7)
            add_policy(sock, back, XFRM_POLICY_IN, "198.51.100.2", "198.51.100.1", reqid=7)
            got = {(p.selector, p.dir): p for p in dump_policies(sock)}
            assert set(got) == {(out, XFRM_POLICY_OUT), (back, XFRM_POLICY_IN)}
            p = got[(out, XFRM_POLICY_OUT)]
            assert (p.tmpl_src, p.tmpl_dst, p.reqid, p.mode, p.priority) == (
                "198.51.100.1", "198.51.100.2", 7, XFRM_MODE_TUNNEL, 1000)
            text = proc.run(None, "ip", "xfrm", "policy").stdout
            assert "src 198.51.100.1/32 dst 198.51.100.2/32 proto udp sport 10000 dport 20000" in text
            assert "tmpl src 198.51.100.1 dst 198.51.100.2" in text and "reqid 7 mode tunnel" in text
            del_policy(sock, out, XFRM_POLICY_OUT)
            del_policy(sock, back, XFRM_POLICY_IN)
            assert dump_policies(sock) == []
        finally:
            sock.close()
    proc.in_netns(netns, body)
