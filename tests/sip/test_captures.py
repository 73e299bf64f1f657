"""Dialogs captured in the SIP lab (kamailio proxy, baresip and sipp user agents; see
ipsecrtp/netns/siplab.py), committed as tests/data/lab-sip.pcapng and replayed through `calls`.
tests/lab/test_siplab.py makes a fresh capture the same way and applies the same checks."""

import os
import shutil

import pytest
from click.testing import CliRunner

from ipsecrtp.cli.main import main
from ipsecrtp.offline import replay

from .captures import check_lab_capture, tshark_sdp_media

PCAPNG = os.path.join(os.path.dirname(__file__), "..", "data", "lab-sip.pcapng")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark cross-checks the SDP")
def test_committed_lab_capture_reads_as_its_scenarios():
    with open(PCAPNG, "rb") as f:
        assert f.read(4) == b"\x0a\x0d\x0d\x0a"  # a pcapng section header, as dumpcap writes
    check_lab_capture(replay(PCAPNG, {5060}), tshark_sdp_media(PCAPNG))


def test_calls_cli_prints_the_lab_capture():
    r = CliRunner().invoke(main, ["calls", "--pcap", PCAPNG])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("100 SIP messages, 6 calls, 0 rejected")
    assert "[2001:db8::30]:16000 <-> [2001:db8::31]:26000" in r.output
    assert "note: stream 0 (audio) offer sendonly" in r.output
