"""The overhead calculator against sizes worked out by hand from the RFCs' field sizes."""

import json

import pytest
from click.testing import CliRunner

from ipsecrtp.cli.main import main
from ipsecrtp.overhead import (
    CODECS,
    ESP_CIPHERS,
    Profile,
    esp_pad,
    gateway_mbps,
    ip_bytes,
    l1_bytes,
    l2_bytes,
    layout,
    profile,
    profiles,
    row,
    table,
)

G711_20 = 160  # 64 kbit/s x 20 ms / 8

# G.711 at 20 ms in every profile, by hand. Plain RTP is IP + UDP 8 + RTP 12 + 160: 200 B over IPv4,
# 220 over IPv6. ESP carries the inner packet (tunnel: 200 / 220 with its IP header; transport: the
# 180 B of UDP + RTP), pads data + 2-byte trailer to 4 bytes (16 for AES-CBC), adds IV and ICV 16.
#   GCM/GMAC tunnel v4:   20 [+8 UDP] + 8 ESP + 8 IV + 200 + (2 pad + 2) + 16 = 264 / 256
#   GCM/GMAC transport v4: 20 [+8] + 8 + 8 + 180 + (2 + 2) + 16                = 244 / 236
#   CBC tunnel v4:        20 [+8] + 8 + 16 IV + 200 + (6 + 2, 202 -> 208) + 16  = 276 / 268
#   CBC transport v4:     20 [+8] + 8 + 16 + 180 + (10 + 2, 182 -> 192) + 16    = 260 / 252
#   NULL tunnel v4:       20 [+8] + 8 + 200 + (2 + 2) + 16                      = 256 / 248
#   NULL transport v4:    20 [+8] + 8 + 180 + (2 + 2) + 16                      = 236 / 228
#   GCM/GMAC tunnel v6:   40 [+8] + 8 + 8 + 220 + (2 + 2) + 16                  = 304 / 296
#   GCM/GMAC transport v6: 40 [+8] + 8 + 8 + 180 + 4 + 16                       = 264 / 256
#   CBC tunnel v6:        40 [+8] + 8 + 16 + 220 + (2 + 2, 222 -> 224) + 16     = 312 / 304
#   CBC transport v6:     40 [+8] + 8 + 16 + 180 + 12 + 16                      = 280 / 272
#   NULL tunnel v6:       40 [+8] + 8 + 220 + 4 + 16                            = 296 / 288
#   NULL transport v6:    40 [+8] + 8 + 180 + 4 + 16                            = 256 / 248
# SRTP adds its tag to plain RTP: 10 (HMAC-SHA1-80), 4 (-32), 16 (AEAD-AES-128-GCM); payload-only 0.
BY_HAND = {  # (cipher, mode, ip): (in UDP, without)
    ("gcm", "tunnel", 4): (264, 256), ("gcm", "transport", 4): (244, 236),
    ("cbc", "tunnel", 4): (276, 268), ("cbc", "transport", 4): (260, 252),
    ("null", "tunnel", 4): (256, 248), ("null", "transport", 4): (236, 228),
    ("gcm", "tunnel", 6): (304, 296), ("gcm", "transport", 6): (264, 256),
    ("cbc", "tunnel", 6): (312, 304), ("cbc", "transport", 6): (280, 272),
    ("null", "tunnel", 6): (296, 288), ("null", "transport", 6): (256, 248),
}
FAMILY = {"aes128gcm16": "gcm", "aes256gcm16": "gcm", "aes128gmac": "gcm", "aes128-sha256": "cbc",
          "null-sha256": "null"}
RTP_LEVEL_BY_HAND = {"srtp-aescm-sha1-80": 10, "srtp-aescm-sha1-32": 4, "srtp-aead-aes128gcm": 16,
                     "payload-only": 0, "plain": 0}


def esp_cases():
    for p in profiles():
        if p.cipher is not None and not p.inner:  # SRTP inside ESP: test_srtp_inside_esp_by_hand
            udp, bare = BY_HAND[(FAMILY[p.cipher.name], p.mode, p.ip)]
            yield pytest.param(p, udp if p.udp_encap else bare, id=p.name)


@pytest.mark.parametrize("p,expected", list(esp_cases()))
def test_every_esp_profile_g711_20ms_by_hand(p, expected):
    assert ip_bytes(p, G711_20) == expected


@pytest.mark.parametrize("kind,tag", RTP_LEVEL_BY_HAND.items())
@pytest.mark.parametrize("ip,plain", [(4, 200), (6, 220)])
def test_rtp_level_alternatives_by_hand(kind, tag, ip, plain):
    assert ip_bytes(Profile(kind, ip), G711_20) == plain + tag


def test_every_profile_is_covered_once():
    names = [p.name for p in profiles()]
    # 2 IP versions x (ESP 5x2x2 + 5 others + SRTP inside AES-GCM-128 in 4 ways)
    assert len(names) == len(set(names)) == 2 * (5 * 2 * 2 + 5 + 4)


@pytest.mark.parametrize(("mode", "encap", "want"), [
    # IP 20 + UDP 8 + ESP 8 + IV 8 + inner (IP 20 + UDP 8 + RTP 12 + 160 + SRTP tag 10 = 210) + trailer 2 + ICV 16
    ("tunnel", True, 272),
    # IP 20 + ESP 8 + IV 8 + (UDP 8 + RTP 12 + 160 + tag 10 = 190) + trailer 2 + ICV 16
    ("transport", False, 244),
])
def test_srtp_inside_esp_by_hand(mode, encap, want):
    """srtp = "protect" on a call already SRTP: both layers, G.711 at 20 ms, IPv4."""
    p = Profile("esp", 4, ESP_CIPHERS["aes128gcm16"], mode, encap, inner="srtp-aescm-sha1-80")
    assert ip_bytes(p, G711_20) == want
    assert p.label.startswith("SRTP AES-CM + HMAC-SHA1-80 inside ESP AES-GCM-128")


def test_the_issue_example_g711_gcm128_tunnel_udp():
    r = row(profile("esp-aes128gcm16-tunnel-udp-ipv4"), CODECS["g711"], 20)
    assert r.payload == 160
    assert r.layout == (("IP", 20), ("UDP (NAT-T)", 8), ("ESP", 8), ("IV", 8), ("inner IP/UDP/RTP", 200),
                        ("pad/trailer", 4), ("ICV", 16))
    assert r.ip_bytes == 264 and r.overhead_bytes == 64
    assert r.pps == 50
    assert r.kbps_ip == pytest.approx(105.6)  # 264 B x 8 x 50/s
    assert r.overhead_kbps == pytest.approx(25.6)  # 64 B x 8 x 50/s
    assert r.overhead_pct == 32.0
    assert r.l2_bytes == 282 and r.l1_bytes == 302  # + 14 header + 4 FCS, + 8 preamble/SFD + 12 gap
    assert r.kbps_l2 == pytest.approx(112.8)
    assert gateway_mbps(r) == pytest.approx(211.2)  # 1,000 calls, both directions
    plain = row(profile("plain-ipv4"), CODECS["g711"], 20)
    assert gateway_mbps(plain) == pytest.approx(160.0)


def test_cbc_padding_steps_every_16_bytes():
    # tunnel, in UDP: data = 200 + k inner bytes + 2 trailer, padded to 16: 208 for k <= 6, else 224
    # (the lab measured the same 276 / 292 for payloads 160..175 through charon's libipsec)
    p = profile("esp-aes128-sha256-tunnel-udp-ipv4")
    got = [ip_bytes(p, 160 + k) for k in range(16)]
    assert got == [276] * 7 + [292] * 9


@pytest.mark.parametrize("data,block,pad", [(200, 4, 2), (201, 4, 1), (202, 4, 0), (203, 4, 3),
                                            (200, 16, 6), (206, 16, 0), (207, 16, 15), (50, 4, 0)])
def test_esp_pad(data, block, pad):
    assert esp_pad(data, block) == pad
    assert (data + pad + 2) % block == 0


def test_small_packets_g729_10ms():
    # 10 B payload: plain 20 + 8 + 12 + 10 = 50; GCM tunnel in UDP: 20+8+8+8+50+(0+2)+16 = 112 at 100/s
    r = row(profile("esp-aes128gcm16-tunnel-udp-ipv4"), CODECS["g729"], 10)
    assert (r.payload, r.ip_bytes, r.pps) == (10, 112, 100)
    assert r.kbps_ip == pytest.approx(89.6) and r.overhead_pct == 124.0  # 62 B over 50
    assert row(profile("plain-ipv4"), CODECS["g729"], 10).l2_bytes == 68


def test_ethernet_minimum_frame():
    assert l2_bytes(40) == 64 and l2_bytes(46) == 64 and l2_bytes(47) == 65
    assert l1_bytes(40) == 84 and l1_bytes(200) == 238


@pytest.mark.parametrize("codec,ptime,payload", [
    ("g711", 10, 80), ("g711", 60, 480), ("g722", 20, 160), ("g729", 20, 20), ("g729", 30, 30),
    ("opus20", 20, 50), ("opus32", 20, 80), ("opus64", 60, 480), ("opus20", 30, 75),
    # AMR-WB 23.85 (RFC 4867 bandwidth-efficient): 4-bit CMR + per 20 ms frame 6-bit ToC + 477 bits
    ("amrwb", 20, 61), ("amrwb", 60, 182),  # ceil(487 / 8), ceil((4 + 3 x 483) / 8)
])
def test_codec_payloads(codec, ptime, payload):
    assert CODECS[codec].payload(ptime) == payload


def test_packetisations_a_codec_cannot_do_are_left_out():
    assert CODECS["amrwb"].payload(10) is None and CODECS["amrwb"].payload(30) is None
    assert CODECS["g729"].payload(25) is None
    rows = table(["amrwb"])
    assert {r.ptime for r in rows} == {20, 60}


def test_overhead_is_against_plain_rtp_of_the_same_ip_version():
    r = row(profile("srtp-aescm-sha1-80-ipv6"), CODECS["opus32"], 20)
    assert (r.ip_bytes, r.overhead_bytes) == (40 + 8 + 12 + 80 + 10, 10)
    assert not row(profile("payload-only-ipv4"), CODECS["g711"], 20).integrity
    assert not profile("esp-null-sha256-transport-ipv4").confidentiality
    assert not profile("esp-aes128gmac-tunnel-ipv4").confidentiality


def test_layout_adds_up_and_cipher_table_matches_the_rfcs():
    for p in profiles():
        assert sum(n for _, n in layout(p, 123)) == ip_bytes(p, 123)
    assert {(c.iv, c.icv, c.block) for c in ESP_CIPHERS.values()} == {(8, 16, 4), (16, 16, 16), (0, 16, 4)}


def test_cli_text_and_json():
    runner = CliRunner()
    r = runner.invoke(main, ["overhead", "--codec", "g711", "--ptime", "20", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    gcm = next(x for x in rows if x["profile"] == "esp-aes128gcm16-tunnel-udp-ipv4")
    assert gcm["ip_bytes"] == 264 and gcm["overhead_bytes"] == 64 and gcm["layout"]["ICV"] == 16
    assert len(rows) == len(profiles())
    r = runner.invoke(main, ["overhead", "--codec", "opus32", "--ptime", "20", "--ip", "4"])
    assert r.exit_code == 0 and "ESP AES-GCM-128, tunnel in UDP, IPv4" in r.output
    assert "IPv6" not in r.output
    r = runner.invoke(main, ["overhead", "--codec", "amrwb", "--ptime", "10"])
    assert r.exit_code != 0 and "no such packetisation" in r.output
    assert runner.invoke(main, ["overhead", "--codec", "speex"]).exit_code == 2
