"""Media this gateway sends in clear after its call had been protected (an SA lost mid-call with protect
= "opportunistic": nothing keeps it back) is counted in the call's timeline, never silent; what
arrives in clear is not (with kernel ESP the capture also shows each decrypted packet that arrived),
nor the post-answer gap before the first ESP, which has its own count."""

from __future__ import annotations

from ipsecrtp.packet import UDP

from ..test_packet import ipv4, udp
from .scenario import PHONE_A, PHONE_B, Call, gateway, rtp


def test_clear_media_sent_after_protection_is_counted_and_arrivals_are_not():
    gw = gateway("gwb", "child-per-call")  # the answerer's gateway: it keys the call
    gw.yes(0.0)
    c = Call("c1")
    gw.on_packet(1.0, c.invite())
    gw.on_packet(1.2, c.ok())
    gw.on_packet(1.21, c.ack())
    gw.on_packet(1.22, rtp(PHONE_B, 10100, PHONE_A, 10000))  # the gap before the SA: its own count
    gw.yes(1.3)
    sa = next(iter(gw.up.values()))
    esp = int(sa["spi-out"], 16).to_bytes(4, "big") + bytes(8)
    gw.on_packet(1.4, ipv4(UDP, udp(4500, 4500, esp), "198.51.100.2", "198.51.100.1"))  # protected
    for t in (2.0, 2.02, 2.04):  # the SA lost, opportunistic: gwb's media leaves in clear
        gw.on_packet(t, rtp(PHONE_B, 10100, PHONE_A, 10000))
    gw.on_packet(2.05, rtp(PHONE_A, 10000, PHONE_B, 10100))  # an arrival (a decrypted copy): not counted
    gw.on_packet(3.0, c.bye())
    gw.run_until(30.0)
    (tl,) = [e for e in gw.logs("timeline") if e["call"] == "c1"]
    assert tl["metrics"]["clear_rtp_after_answer"] == 1
    assert tl["metrics"]["clear_rtp_after_protection"] == 3
