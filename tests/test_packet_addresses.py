"""decode_ip formats addresses without the socket module (the gateway core imports packet.py and
must not reach socket): IPv4 exactly as inet_ntop did, IPv6 as ipaddress (and the SDP parser) do."""

import ipaddress
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ipsecrtp.packet import UDP, decode_ip

from .test_packet import udp


def ipv6(src: bytes, dst: bytes) -> bytes:
    payload = udp(5004, 5006, b"x")
    return struct.pack("!IHBB", 6 << 28, len(payload), UDP, 64) + src + dst + payload


@settings(max_examples=100)
@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
def test_ipv4_addresses_as_inet_ntop_writes_them(src, dst):
    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + 9, 1, 0, 64, UDP, 0)
    p = decode_ip(head + src + dst + udp(5004, 5006, b"x"))
    assert (p.src, p.dst) == (socket.inet_ntop(socket.AF_INET, src), socket.inet_ntop(socket.AF_INET, dst))


@settings(max_examples=100)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_ipv6_addresses_in_the_form_the_sdp_parser_gives_them(src, dst):
    p = decode_ip(ipv6(src, dst))
    assert (p.src, p.dst) == (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)))


def test_ipv6_addresses_as_before_where_inet_ntop_and_ipaddress_agree():
    for a in ("2001:db8::1", "fe80::1:2", "::1", "2001:db8:0:1:1:1:1:1"):
        raw = socket.inet_pton(socket.AF_INET6, a)
        assert decode_ip(ipv6(raw, raw)).src == socket.inet_ntop(socket.AF_INET6, raw) == a
