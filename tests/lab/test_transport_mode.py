"""ESP transport mode and the integrity-only AES-GMAC profile (issue 17 item 1) on real calls.

Both need kernel ESP (charon's kernel-netlink): the real-kernel tier runs them, keying a call with
``esp_mode = "transport"`` and each proposal, and the ESP packets' sizes in a WAN capture must be
the calculator's transport rows within 1 byte (20 bytes a packet less than tunnel mode for IPv4).
Without kernel ESP the controller refuses transport mode at start, in one line, and the lab is
removed whole."""

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from ipsecrtp.kernel.xfrm import probe_esp
from ipsecrtp.netns.calls import tshark_available
from ipsecrtp.netns.espsize import computed, measure, report
from ipsecrtp.overhead import ESP_CIPHERS, Profile, ip_bytes

from .kernel_esp import assert_refused_without_esp

pytestmark = pytest.mark.lab

# integrity only (AES-GMAC: NULL_AES_GMAC) and confidentiality + integrity (AES-GCM)
PROPOSALS = {"aes128gmac": ("NULL_AES_GMAC", "128"), "aes128gcm16": ("AES_GCM_16", "128")}
PAYLOADS = [20, 80, 160, 161, 162, 163, 164, 240, 320]  # G.729 .. G.711 at 40 ms, and every padding case of 4


def test_transport_mode_keys_real_calls_with_sizes_as_calculated():
    if not probe_esp().supported:
        pytest.skip("needs kernel ESP: the real-kernel tier runs this")
    if not tshark_available():
        pytest.skip("tshark not installed (apt-get install tshark)")
    prefix = "tm" + secrets.token_hex(3)
    with ThreadPoolExecutor(len(PROPOSALS)) as ex:
        ms = list(ex.map(lambda ip: measure(f"{prefix}{ip[0]}", ip[1], PAYLOADS, timeout=120.0, esp_mode="transport"),
                         enumerate(PROPOSALS)))
    print("\n" + "\n".join(report(ms, detail=True)))
    for m in ms:
        assert m.keyed, f"{m.proposal}: {m.refused}"
        assert m.mode == "TRANSPORT" and not m.encap, (m.proposal, m.mode, m.encap)  # no NAT: plain ESP
        encr, size = PROPOSALS[m.proposal]
        assert m.negotiated.get("encr-alg") == encr and m.negotiated.get("encr-keysize") == size, m.negotiated
        assert None not in m.ip_lens, f"{m.proposal}: ESP packets missing from the capture: {m.ip_lens}"
        want = computed(m)
        off = [(n, got, calc) for n, got, calc in zip(m.payloads, m.ip_lens, want, strict=True)
               if abs(got - calc) > 1]
        assert off == [], f"{m.proposal}: (payload, measured, computed) more than 1 byte apart: {off}"
        tunnel = Profile("esp", 4, ESP_CIPHERS[m.proposal], "tunnel", False)
        assert [ip_bytes(tunnel, n) - got for n, got in zip(m.payloads, m.ip_lens, strict=True)] == \
            [20] * len(PAYLOADS)  # no inner IPv4 header


def test_transport_mode_is_refused_without_kernel_esp():
    assert_refused_without_esp(r'esp_mode = "transport" \(peer gw[ab]\) needs kernel ESP', esp_mode="transport")
