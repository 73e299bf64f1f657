"""The capture's kernel filter, run by the kernel: in a namespace of its own, UDP and TCP to and
from the SIP ports reach only the SIP socket, media and everything else only the other one, over
IPv4 and IPv6; a flood of media leaves the SIP socket's buffer untouched."""

import os
import secrets
import socket
import subprocess
import time

import pytest

from ipsecrtp.capture import Capture
from ipsecrtp.netns.proc import in_netns
from ipsecrtp.packet import decode_ip

if os.geteuid() != 0:
    pytest.skip("needs root (a network namespace and AF_PACKET)", allow_module_level=True)


def _exercise() -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    cap = Capture(["lo"], [5060, 5080])
    sip_sock = next(iter(cap.sip_socks))
    other = next(s for s in cap.socks if s is not sip_sock)
    sent = []
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.bind((host, 0))
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, 5060))  # from the SIP port
        u.sendto(b"sip-from", (host, rx.getsockname()[1]))
        v = socket.socket(fam, socket.SOCK_DGRAM)
        v.bind((host, 10000))
        v.sendto(b"sip-to", (host, 5080))
        for _ in range(200):  # media flood
            v.sendto(b"rtp" + bytes(160), (host, 10002))
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.bind((host, 5060))
        srv.listen()
        c = socket.create_connection((host, 5060))
        c.sendall(b"sip-tcp")
        c.close()
        srv.close()
        sent += [rx, u, v]
    time.sleep(0.2)
    got = {"sip": [], "other": []}
    for name, s in (("sip", sip_sock), ("other", other)):
        while True:
            batch = cap.read(s)
            if not batch:
                break
            for _t, data in batch:
                p = decode_ip(data)
                got[name].append((p.proto, p.sport, p.dport, bytes(p.payload[:8])) if p else None)
    cap.close()
    for s in sent:
        s.close()
    return got


def test_sip_and_media_are_split_by_the_kernel():
    ns = "irtp-cap" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        got = in_netns(ns, _exercise)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    sip, other = got["sip"], got["other"]
    # a capture on loopback sees each packet twice (out and in): 2 families x 2 copies of each
    assert all(5060 in (sp, dp) or 5080 in (sp, dp) for _proto, sp, dp, _pl in sip)
    assert sum(pl.startswith(b"sip-from") for _p, _s, _d, pl in sip) == 4
    assert sum(pl.startswith(b"sip-to") for _p, _s, _d, pl in sip) == 4
    assert sum(pl.startswith(b"sip-tcp") for _p, _s, _d, pl in sip) == 4
    assert {proto for proto, *_ in sip} == {6, 17}
    assert not [x for x in other if x and (5060 in x[1:3] or 5080 in x[1:3])]
    assert sum(1 for x in other if x and x[2] == 10002) == 800  # the media went to the other socket only
