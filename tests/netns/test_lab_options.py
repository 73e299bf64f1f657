"""The lab's option checks and the user agents' SIP addressing, without building a lab."""

from __future__ import annotations

import pytest

from ipsecrtp.netns.baresip import account, hostport, write_config
from ipsecrtp.netns.lab import check_options
from ipsecrtp.netns.labstate import IPV6_TOPOLOGY, RTP_PORTS, LabError
from ipsecrtp.netns.wanem import LinkSettings


@pytest.mark.parametrize("mode,nat,wan", [("router", None, None), ("host", "between", None),
                                          ("host", None, LinkSettings(delay_ms=10.0))])
def test_ipv6_builds_the_default_topology_only(mode, nat, wan):
    with pytest.raises(LabError, match="--ipv6 builds the default topology only"):
        check_options(RTP_PORTS, mode, nat, wan, ipv6=True)
    check_options(RTP_PORTS, "host", None, None, ipv6=True)  # the default topology: fine


def test_ipv6_lab_addresses_are_documentation_ones():
    assert all(g.wan.startswith("2001:db8:") for g in IPV6_TOPOLOGY)


def test_an_ipv6_user_agent_listens_and_is_addressed_in_brackets(tmp_path):
    assert hostport("2001:db8::1") == "[2001:db8::1]" and hostport("198.51.100.1") == "198.51.100.1"
    assert account("alice", "2001:db8::1", "auto").startswith("<sip:alice@[2001:db8::1]>")
    write_config(str(tmp_path), "2001:db8::1", [], RTP_PORTS)
    conf = (tmp_path / "config").read_text()
    assert "sip_listen [2001:db8::1]:5060" in conf and "net_prefer_ipv6 yes" in conf
    write_config(str(tmp_path), "198.51.100.1", [], RTP_PORTS)
    conf = (tmp_path / "config").read_text()
    assert "sip_listen 198.51.100.1:5060" in conf and "net_prefer_ipv6" not in conf
