"""A fresh capture from real kamailio, baresip and sipp (UDP/TCP, IPv4/IPv6, proxy, forking, PRACK,
UPDATE, session timer, late offer, 486) must read exactly as the scenarios it played."""

import os
import secrets
import subprocess

import pytest

from ipsecrtp.netns.labstate import LabError
from ipsecrtp.netns.siplab import SipLab
from ipsecrtp.offline import replay

from ..sip.captures import SCENARIOS, check_lab_capture, tshark_sdp_media


def test_live_sip_lab_capture(tmp_path):
    lab = SipLab("s" + secrets.token_hex(4))
    try:
        lab.up()
        # a second lab of the same name is refused and its down() leaves the first alone
        twin = SipLab(lab.name)
        with pytest.raises(LabError, match="exists already"):
            twin.up()
        assert twin.down() == [] and os.path.exists(lab.state_path)
        assert lab.run_all() == SCENARIOS
        pcap = str(tmp_path / "sip.pcapng")
        os.replace(lab.stop_capture(), pcap)
        check_lab_capture(replay(pcap, {5060}), tshark_sdp_media(pcap))
    finally:
        lab.down()
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"irtp-{lab.name}-" not in ns
        assert not os.path.exists(lab.dir)
