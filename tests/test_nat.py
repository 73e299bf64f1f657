"""NAT findings from SIP, SDP, media and charon's IKE_SA view (pure)."""

import ipaddress

from ipsecrtp.nat import (
    ike_encapsulation,
    ike_findings,
    media_finding,
    nated_media,
    sdp_findings,
    sdp_leftover_findings,
    sip_findings,
)
from ipsecrtp.sip.message import parse_message
from ipsecrtp.sip.sdp import parse_sdp

from .sip.build import msg, sdp


def names(findings):
    return sorted(f.test for f in findings)


def test_request_through_a_nat():
    raw = msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", extra=("Contact: <sip:alice@10.1.2.3:5062>",))
    m = parse_message(raw.replace(b"198.51.100.1:5060", b"10.1.2.3:5062"))
    got = sip_findings(m, ("203.0.113.7", 40001))
    assert names(got) == ["contact-port-vs-source", "contact-private", "via-host-vs-source", "via-port-vs-source",
                          "via-private"]
    assert any("10.1.2.3" in f.evidence and "203.0.113.7" in f.evidence for f in got)


def test_request_without_nat_has_no_findings():
    m = parse_message(msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE",
                          extra=("Contact: <sip:alice@198.51.100.1:5060>",)))
    assert sip_findings(m, ("198.51.100.1", 5060)) == []


def test_response_with_received_and_rport_and_lab_inside_prefix():
    m = parse_message(msg("SIP/2.0 200 OK", "1 INVITE", to_tag="t").replace(
        b"branch=z9hG4bK1", b"branch=z9hG4bK1;received=203.0.113.7;rport=40001"))
    assert names(sip_findings(m, ("198.51.100.2", 5060))) == ["via-received", "via-rport"]
    inside = (ipaddress.ip_network("192.0.2.0/24"),)  # the lab's inside range counts as private
    req = parse_message(msg("BYE sip:bob@198.51.100.2 SIP/2.0", "2 BYE", to_tag="t").replace(
        b"198.51.100.1:5060", b"192.0.2.10:5060"))
    assert "via-private" in names(sip_findings(req, ("203.0.113.7", 5060), inside))


def test_sdp_against_signalling_source_and_media_latching():
    s = parse_sdp(sdp("192.168.1.20", "audio 10000 RTP/AVP 0", "video 0 RTP/AVP 96"))
    got = sdp_findings(s, ("203.0.113.7", 5060))
    assert names(got) == ["sdp-private", "sdp-vs-source"]  # the rejected video stream says nothing
    assert sdp_findings(parse_sdp(sdp("198.51.100.1")), ("198.51.100.1", 5060)) == []
    assert media_finding("192.168.1.20", 10000, "203.0.113.7", 31000).test == "media-latching"
    assert media_finding("198.51.100.1", 10000, "198.51.100.1", 10000) is None


def test_media_a_nat_hid_is_taken_from_the_signalling_source():
    s = parse_sdp(sdp("192.168.1.20", "audio 10000 RTP/AVP 0", "video 0 RTP/AVP 96"))
    assert nated_media(s, ("203.0.113.7", 5060)) == {"192.168.1.20": "203.0.113.7"}
    assert nated_media(s, ("10.0.0.1", 5060)) == {}  # signalling from a private address: no public one to use
    assert nated_media(parse_sdp(sdp("198.51.100.1")), ("203.0.113.7", 5060)) == {}  # public c=: not this case
    lab = (ipaddress.ip_network("192.0.2.128/25"),)
    assert nated_media(parse_sdp(sdp("192.0.2.130")), ("192.0.2.20", 5060), lab) == {"192.0.2.130": "192.0.2.20"}


def test_an_alg_rewrite_shows_in_the_attributes_it_left():
    body = sdp("203.0.113.7", "audio 10000 RTP/AVP 0|a=ssrc:1 cname:sip:alice@192.168.1.20").decode()
    (f,) = sdp_leftover_findings(body, parse_sdp(body.encode()), ("203.0.113.7", 5060))
    assert f.test == "sdp-rewritten" and "192.168.1.20" in f.evidence and "203.0.113.7" in f.evidence
    clean = sdp("203.0.113.7", "audio 10000 RTP/AVP 0|a=ssrc:1 cname:sip:alice@203.0.113.7").decode()
    assert sdp_leftover_findings(clean, parse_sdp(clean.encode()), ("203.0.113.7", 5060)) == []
    untouched = sdp("192.168.1.20", "audio 10000 RTP/AVP 0|a=ssrc:1 cname:sip:alice@192.168.1.20").decode()
    assert sdp_leftover_findings(untouched, parse_sdp(untouched.encode()), ("203.0.113.7", 5060)) == []


def test_ike_real_nat_versus_forced_encapsulation():
    libipsec = {"remote-host": "198.51.100.1", "remote-port": "4500", "nat-remote": "yes", "nat-any": "yes",
                "encap": "yes"}
    assert ike_findings(libipsec, "198.51.100.1", "kernel-libipsec") == []  # no false positive
    assert ike_encapsulation(libipsec, "kernel-libipsec").startswith("forced")
    natted = {"remote-host": "203.0.113.1", "remote-port": "31873", "nat-remote": "yes", "nat-any": "yes",
              "encap": "yes"}
    assert names(ike_findings(natted, "198.51.100.1", "kernel-libipsec")) == ["ike-nat-remote"]
    behind = {"remote-host": "198.51.100.2", "remote-port": "4500", "local-host": "192.0.2.1", "local-port": "4500",
              "nat-local": "yes", "nat-any": "yes", "encap": "yes"}
    assert names(ike_findings(behind, "198.51.100.2", "kernel-netlink")) == ["ike-nat-local"]
    assert ike_encapsulation(behind, "kernel-netlink").startswith("NAT-T: this gateway")
    assert ike_encapsulation({"encap": "no"}, "kernel-netlink") == "none"
