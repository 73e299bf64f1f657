"""The overhead calculator's ESP rows against real ESP packets: for each ESP proposal, a lab keyed
with only that proposal carries RTP packets of every codec payload size (and 16 sizes in a row, for
every padding case of AES-CBC) on a keyed call, and tshark's reading of a WAN capture must agree with
``ipsecrtp.overhead`` within 1 byte per packet. The labs run in parallel (about 30 s in all here)."""

import os
import secrets

import pytest

from ipsecrtp.netns.calls import tshark_available
from ipsecrtp.netns.espsize import computed, default_payloads, measure_all, report

pytestmark = pytest.mark.lab

# must key and match here (kernel-libipsec, charon 5.9.8), as the README says the lab verified
MUST_KEY = ("aes128gcm16", "aes256gcm16", "aes128-sha256", "null-sha256")
# tried, and reported when charon refuses: kernel-libipsec 5.9.8 knows no AES-GMAC ESP context
MAY_REFUSE = ("aes128gmac",)
# what charon's list-sas must say it negotiated, so that the sizes are those of the asked-for cipher
NEGOTIATED = {"aes128gcm16": ("AES_GCM_16", "128"), "aes256gcm16": ("AES_GCM_16", "256"),
              "aes128-sha256": ("AES_CBC", "128"), "null-sha256": ("NULL", None),
              "aes128gmac": ("NULL_AES_GMAC", "128")}


@pytest.fixture(scope="module")
def measured():
    if not tshark_available():
        pytest.skip("tshark not installed (apt-get install tshark)")
    prefix = "ov" + secrets.token_hex(3)
    try:
        ms = measure_all(list(MUST_KEY + MAY_REFUSE), default_payloads(), prefix)
    finally:  # each lab removes itself; check that nothing of any of them is left
        leftovers = [n for n in os.popen("ip netns list").read().split() if n.startswith(f"irtp-{prefix}")]
        assert leftovers == [], f"namespaces left behind: {leftovers}"
    print("\n" + "\n".join(report(ms)))  # which ran, which charon refused and why (pytest -s or -rP)
    return {m.proposal: m for m in ms}


@pytest.mark.parametrize("proposal", MUST_KEY + MAY_REFUSE)
def test_esp_packet_sizes_match_the_calculator(measured, proposal, record_property):
    m = measured[proposal]
    record_property("esp", {"proposal": proposal, "keyed": m.keyed, "refused": m.refused,
                            "negotiated": m.negotiated, "payloads": m.payloads, "ip_lens": m.ip_lens})
    if not m.keyed:
        assert proposal in MAY_REFUSE, f"{proposal} did not key: {m.refused}"
        assert m.refused.startswith("charon in "), m.refused  # charon's own reason, not just a time-out
        pytest.skip(f"charon refused {proposal}: {m.refused}")
    encr, size = NEGOTIATED[proposal]
    assert m.negotiated.get("encr-alg") == encr and m.negotiated.get("encr-keysize") == size, m.negotiated
    if proposal == "aes128-sha256":
        assert m.negotiated.get("integ-alg") == "HMAC_SHA2_256_128"
    assert m.mode == "TUNNEL"
    want = computed(m)
    assert None not in m.ip_lens, f"ESP packets missing from the capture: {m.ip_lens}"
    off = [(n, got, calc) for n, got, calc in zip(m.payloads, m.ip_lens, want, strict=True) if abs(got - calc) > 1]
    assert off == [], f"(payload, measured, computed) more than 1 byte apart: {off}"
    # the example, measured: G.711 at 20 ms under AES-GCM-128 in UDP-encapsulated tunnel mode
    if proposal == "aes128gcm16" and m.encap:
        assert m.ip_lens[m.payloads.index(160)] == 264
