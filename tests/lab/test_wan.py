"""The emulated WAN agrees with its setting within 1 ms at 0, 20, 100 and 300 ms RTT, seen by
ping and by tcpdump timestamps on both gateways; jitter and loss do what they say."""

import os
import secrets
import subprocess

import pytest

from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.wancheck import measure
from ipsecrtp.netns.wanem import LinkSettings


@pytest.fixture(scope="module")
def wan_lab():
    lab = Lab("w" + secrets.token_hex(4))
    try:
        lab.up(wan=LinkSettings())
        yield lab
    finally:
        lab.down()
        assert f"irtp-{lab.name}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                          text=True).stdout
        assert not os.path.exists(lab.dir)


@pytest.mark.parametrize("rtt", [0, 20, 100, 300])
def test_rtt_and_one_way_delay_within_1ms(wan_lab, rtt):
    wan_lab.set_wan(LinkSettings(delay_ms=rtt / 2))
    m = measure(wan_lab, probes=30)
    assert abs(m.rtt_ms - rtt) < 1.0, m.to_json()
    assert m.received == m.sent == 30
    assert all(abs(d - rtt / 2) < 1.0 for d in m.one_way_ms), m.to_json()


def test_jitter_and_loss(wan_lab):
    wan_lab.set_wan(LinkSettings(delay_ms=40, jitter_ms=10, loss=0.2, seed=7))
    m = measure(wan_lab, probes=300, gap=0.005)
    lost = 1 - m.received / m.sent
    assert 0.1 < lost < 0.3, m.to_json()  # 20 % +- 5 standard deviations of 300 draws
    # 40 +- 10 ms; above it a few ms of slack for the user-space emulator waking late when the machine
    # is loaded (one of seven full CI runs saw a probe at 51.x ms); the 1 ms accuracy is checked without jitter above
    assert all(29.0 < d < 55.0 for d in m.one_way_ms), m.to_json()
    assert max(m.one_way_ms) - min(m.one_way_ms) > 10  # the delays really vary
    wan_lab.set_wan(LinkSettings(delay_ms=40, ike_loss=1.0))  # IKE-only loss leaves other traffic alone
    m = measure(wan_lab, probes=30)
    assert m.received == m.sent == 30
