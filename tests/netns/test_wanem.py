"""The WAN emulator's pure parts: which frames are IKE, and settings validation."""

import json
import struct

import pytest

from ipsecrtp.netns.wanem import LinkSettings, is_ike


def frame(sport: int, dport: int, payload: bytes, v6: bool = False) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + bytes(32)
        return bytes(12) + b"\x86\xdd" + ip + udp
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + bytes(8)
    return bytes(12) + b"\x08\x00" + ip + udp


def test_ike_is_udp_500_or_4500_with_the_zero_marker():
    assert is_ike(frame(500, 500, b"x" * 28))
    assert is_ike(frame(4500, 4500, b"\0\0\0\0" + b"x" * 28))
    assert is_ike(frame(4500, 4500, b"\0\0\0\0" + b"x" * 28, v6=True))
    assert not is_ike(frame(4500, 4500, b"\x12\x34\x56\x78" + b"x" * 28))  # ESP-in-UDP (non-zero SPI)
    assert not is_ike(frame(10000, 10002, b"\0\0\0\0" + b"x" * 28))  # RTP
    assert not is_ike(frame(5060, 5060, b"INVITE"))
    assert not is_ike(b"\0" * 10)


def test_settings_are_validated(tmp_path):
    p = tmp_path / "wan.json"
    LinkSettings(delay_ms=50, jitter_ms=5, loss=0.01).save(str(p))
    assert LinkSettings.load(str(p)).delay_ms == 50
    for bad in ({"delay_ms": 5, "jitter_ms": 10}, {"loss": 2}, {"bogus": 1}, {"delay_ms": -1}):
        p.write_text(json.dumps(bad))
        with pytest.raises((ValueError, TypeError)):
            LinkSettings.load(str(p))


def test_completed_checksums_match_a_reference_computation():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from ipsecrtp.netns.wanem import complete_checksum

    for pkt in (Ether() / IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=5060, dport=5060) / (b"INVITE" * 33),
                Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=10000, dport=10002) / b"rtp!x"):
        good = bytes(pkt)
        l4 = 14 + (20 if IP in pkt else 40)
        broken = bytearray(good)
        broken[l4 + 6:l4 + 8] = b"\x12\x34"  # what offload leaves: a partial sum
        assert complete_checksum(bytes(broken)) == good
