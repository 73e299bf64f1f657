"""IPv6 (issue 16): `lab up --ipv6` puts the WAN, IKE, SIP, SDP and media on 2001:db8::/32; a real
baresip call is keyed with selectors that are exactly its IPv6 RTP and RTCP flows (/128 and the
ports from the SDP, as tshark reads the capture), ESP (UDP-encapsulated by kernel-libipsec) carries
its media over the IPv6 WAN, nothing leaves in clear, and nothing is left after the BYE."""

from __future__ import annotations

import os
import secrets

import pytest

from ipsecrtp.netns.calls import Capture, Phones, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike

from .live_call import assert_nothing_left
from .test_calls import sdp_ports

pytestmark = pytest.mark.lab
A, B = "2001:db8::1", "2001:db8::2"


def test_ipv6_call_is_keyed_with_exact_selectors_and_only_esp_crosses_the_wan():
    lab = Lab("six" + secrets.token_hex(3))
    try:
        lab.up(ipv6=True)
        assert lab.state["gateways"]["gwa"]["media"] == [f"{A}/128"]
        lab.start_uas()
        wait_ike(lab)
        cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
        phones = Phones(lab)
        try:
            r = phones.call("caller-hangup", talk=2.0)
        finally:
            phones.close()
            cap.stop()
        assert r.answered and set(r.sa_up) == {"gwa", "gwb"}, r
        sdps = sdp_ports(cap.path)[r.call_id]
        offer = next((a, p) for m, a, p in sdps if m == "INVITE")
        answer = next((a, p) for m, a, p in sdps if m == "200")
        assert (offer[0], answer[0]) == (A, B)  # the SDP itself is IPv6 (c=IN IP6)
        for role, local, remote in (("gwa", offer, answer), ("gwb", answer, offer)):
            [c] = r.children[role]
            assert sorted(c["local-ts"]) == [f"{local[0]}/128[udp/{local[1]}]", f"{local[0]}/128[udp/{local[1] + 1}]"]
            assert sorted(c["remote-ts"]) == [f"{remote[0]}/128[udp/{remote[1]}]",
                                              f"{remote[0]}/128[udp/{remote[1] + 1}]"]
            assert c["state"] == "INSTALLED"
        ws = wire_stats(cap.path, lab.rtp_ports)
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        esp = [p for p in ws.esp if keyed_from < p[0] < keyed_to]
        assert {(p[1], p[2]) for p in esp} == {(A, B), (B, A)}
        assert len(esp) > 80  # 50 packets/s each way for ~2 s of talk
        # protect = required: no RTP or RTCP in clear at any time, before the SA included
        assert ws.rtp_clear == [], ws.rtp_clear[:3]
        assert {s for _, s, _ in ws.sip} == {A, B}
        assert_nothing_left(lab)
    finally:
        lab.down()
        assert not os.path.exists(lab.dir)
