"""kernel-libipsec's data plane brought in line with a reload's peers (DataPlane.guard), in a
namespace of its own with the real nftables and routing rules: the guarded prefixes and the RTP
range change in one transaction, the reach rules follow, and the keyed flows stay routed."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from ipsecrtp.keying.dataplane import TABLE, DataPlane
from ipsecrtp.netns import proc
from ipsecrtp.selectors import FlowRule

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")


def nft(ns: str, *args: str) -> str:
    return proc.run(ns, "nft", *args).stdout


def reach_rules(ns: str) -> list[str]:
    return [ln.split(":", 1)[1].strip() for ln in proc.run(ns, "ip", "rule", "show").stdout.splitlines()
            if ln.startswith("40000:")]


def test_guard_replaces_the_guarded_prefixes_and_reach_rules_and_keeps_keyed_flows():
    ns = "irtp-dpg-" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        dp: DataPlane = proc.in_netns(ns, DataPlane)
        keyed = FlowRule("198.51.100.1", "203.0.113.20", 10000, 10100)

        def start() -> None:
            dp.install(["203.0.113.0/24"], (10000, 10199), True, reach=["203.0.113.0/24"])
            dp.add_flow(keyed)

        proc.in_netns(ns, start)
        assert "203.0.113.0/24" in nft(ns, "list", "set", "inet", TABLE, "media4")
        assert reach_rules(ns) == ["from all to 203.0.113.0/24 lookup 2201"]
        # a peer added (required) and the first one changed to opportunistic, with a wider range
        proc.in_netns(ns, dp.guard, ["198.51.100.64/26"], (10000, 20000), True,
                      ["203.0.113.0/24", "198.51.100.64/26"])
        media = nft(ns, "list", "set", "inet", TABLE, "media4")
        assert "198.51.100.64/26" in media and "203.0.113.0/24" not in media
        chain = nft(ns, "list", "chain", "inet", TABLE, "out")
        assert "udp dport 10000-20000" in chain and chain.count("@media4") == 1
        assert sorted(reach_rules(ns)) == ["from all to 198.51.100.64/26 lookup 2201",
                                           "from all to 203.0.113.0/24 lookup 2201"]
        assert "203.0.113.20 . 10000 . 10100" in nft(ns, "list", "set", "inet", TABLE, "keyed4")
        # nothing required any more, the first peer gone: no guard rule, its reach rule removed
        proc.in_netns(ns, dp.guard, [], (10000, 20000), False, ["198.51.100.64/26"])
        assert "@media4" not in nft(ns, "list", "chain", "inet", TABLE, "out")
        assert reach_rules(ns) == ["from all to 198.51.100.64/26 lookup 2201"]
        proc.in_netns(ns, dp.close, True)
        assert reach_rules(ns) == []
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
