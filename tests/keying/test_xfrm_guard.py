"""kernel-netlink's fail-closed media (XfrmGuard): xfrm block policies in this machine's kernel, in
namespaces of their own joined by a veth pair. What it must show: media to a guarded prefix on the
RTP range is dropped by the kernel (the sender sees EPERM, the peer receives nothing, the kernel's
XfrmOutPolBlock counts it), other ports and prefixes pass, a policy of charon's priority band for
one flow wins over the guard, a restart finds its policies in place, a reload replaces them
without leaving stale ones, and only ``--flush`` removes them. The kernel here has XFRM without
ESP: charon's policies with real SAs over the guard are shown in the real-kernel tier
(tests/lab/test_calls.py, protect = required)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipsecrtp.kernel.xfrm import port_blocks
from ipsecrtp.keying.xfrmguard import GUARD_PRIORITY, XfrmGuard, wanted
from ipsecrtp.netns import proc

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
RTP = (10000, 20000)
PEER_MEDIA = "198.51.100.7"


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_port_blocks_cover_exactly_the_range(a, b):
    lo, hi = min(a, b), max(a, b)
    blocks = port_blocks(lo, hi)
    covered = [p for port, mask in blocks for p in range(port, port + (~mask & 0xFFFF) + 1)]
    assert covered == list(range(lo, hi + 1))  # in order, each port once, none outside
    assert all(port & mask == port for port, mask in blocks)  # what an xfrm selector can say
    assert len(blocks) <= 32


def test_port_blocks_refuses_a_range_that_is_not_one():
    with pytest.raises(ValueError):
        port_blocks(20000, 10000)


def test_wanted_normalizes_the_prefix_as_the_kernel_reads_it_back():
    sels = wanted(["198.51.100.5/24", "2001:db8::1/64"], (10000, 10001))
    assert {(s.src, s.dst, s.dport, s.dport_mask) for s in sels} == {
        ("0.0.0.0/0", "198.51.100.0/24", 10000, 0xFFFE), ("::/0", "2001:db8::/64", 10000, 0xFFFE)}


def _pair() -> tuple[str, str]:
    """Two namespaces, a veth between them; the peer holds the peer's media address."""
    tag = secrets.token_hex(3)
    gw, peer = f"irtp-xg-{tag}", f"irtp-xgp-{tag}"
    for ns in (gw, peer):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    proc.run(gw, "ip", "link", "add", "wan", "type", "veth", "peer", "name", "wan", "netns", peer)
    for ns, addr in ((gw, "192.0.2.1/24"), (peer, "192.0.2.2/24")):
        proc.run(ns, "ip", "addr", "add", addr, "dev", "wan")
        proc.run(ns, "ip", "link", "set", "wan", "up")
    proc.run(peer, "ip", "addr", "add", f"{PEER_MEDIA}/32", "dev", "wan")
    proc.run(gw, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2")
    return gw, peer


def _send(ports: list[int]) -> dict[int, str]:
    """One datagram to the peer's media address on each port: 'sent' or the error."""
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for port in ports:
            try:
                s.sendto(b"rtp", (PEER_MEDIA, port))
                out[port] = "sent"
            except OSError as exc:
                out[port] = os.strerror(exc.errno or 0)
    return out


def _receive(ports: list[int], send) -> set[int]:
    """Bound on the peer's side before ``send()`` runs (in the gateway's namespace): the ports
    that received something."""
    socks = {}
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((PEER_MEDIA, port))
        s.settimeout(0.5)
        socks[port] = s
    send()
    got = set()
    for port, s in socks.items():
        try:
            s.recv(64)
            got.add(port)
        except TimeoutError:
            pass
        s.close()
    return got


@root
def test_block_policies_drop_guarded_media_and_stay_until_flushed():
    gw, peer = _pair()
    ports = [9999, 10000, 10002, 15000, 20000, 20001]
    try:
        guard: XfrmGuard = proc.in_netns(gw, XfrmGuard)
        proc.in_netns(gw, guard.install, ["198.51.100.0/24", "2001:db8:1::/64"], RTP, True)
        n = len(wanted(["198.51.100.0/24", "2001:db8:1::/64"], RTP))
        assert len(proc.in_netns(gw, guard.installed)) == n == 22
        results: dict = {}
        got = proc.in_netns(peer, _receive, ports, lambda: results.update(proc.in_netns(gw, _send, ports)))
        assert results == {9999: "sent", 10000: "Operation not permitted", 10002: "Operation not permitted",
                           15000: "Operation not permitted", 20000: "Operation not permitted", 20001: "sent"}
        assert got == {9999, 20001}
        assert proc.in_netns(gw, guard.blocked) == 4

        # a CHILD_SA's policy for one flow (charon's band: an exact UDP flow between two hosts
        # gets about 367,000) comes before the guard: that flow passes, its neighbour does not
        proc.run(gw, "ip", "xfrm", "policy", "add", "src", "192.0.2.1/32", "dst", f"{PEER_MEDIA}/32",
                 "proto", "udp", "dport", "10002", "dir", "out", "priority", "367391", "action", "allow")
        got = proc.in_netns(peer, _receive, [10000, 10002], lambda: proc.in_netns(gw, _send, [10000, 10002]))
        assert got == {10002}

        # the controller stops (no flush) and starts again: the same policies, none added twice
        proc.in_netns(gw, guard.close)
        again: XfrmGuard = proc.in_netns(gw, XfrmGuard)
        assert len(proc.in_netns(gw, again.installed)) == n
        proc.in_netns(gw, again.install, ["198.51.100.0/24", "2001:db8:1::/64"], RTP, True)
        assert len(proc.in_netns(gw, again.installed)) == n

        # a reload: one peer's prefix and a narrower range; the rest go, 15000 is let out
        proc.in_netns(gw, again.guard, ["198.51.100.0/24"], (10000, 10003), True, [])
        assert {(s.dst, s.dport, s.dport_mask) for s in proc.in_netns(gw, again.installed)} == {
            ("198.51.100.0/24", 10000, 0xFFFC)}
        assert proc.in_netns(gw, _send, [10000, 15000]) == {10000: "Operation not permitted", 15000: "sent"}

        # --flush: nothing of the guard's left, the other policy untouched
        proc.in_netns(gw, again.close, True)
        left = proc.run(gw, "ip", "xfrm", "policy", "show").stdout
        assert str(GUARD_PRIORITY) not in left and "dport 10002" in left
    finally:
        for ns in (gw, peer):
            subprocess.run(["ip", "netns", "del", ns], check=False)


@root
def test_opportunistic_installs_nothing_and_removes_a_previous_runs_guard():
    gw, peer = _pair()
    try:
        guard: XfrmGuard = proc.in_netns(gw, XfrmGuard)
        proc.in_netns(gw, guard.install, ["198.51.100.0/24"], RTP, True)
        proc.in_netns(gw, guard.close)
        # the peer became opportunistic while the controller was down: its start removes the guard
        later: XfrmGuard = proc.in_netns(gw, XfrmGuard)
        proc.in_netns(gw, later.install, [], RTP, False)
        assert proc.in_netns(gw, later.installed) == set()
        assert proc.in_netns(gw, _send, [10000]) == {10000: "sent"}
        proc.in_netns(gw, later.close)
    finally:
        for ns in (gw, peer):
            subprocess.run(["ip", "netns", "del", ns], check=False)
