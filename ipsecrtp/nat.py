"""NAT detection from SIP, SDP, observed media and IKE. Pure: values in, findings with evidence out.

SIP tests follow Kamailio nathelper's ``nat_uac_test`` (flags 1, 2, 4, 8, 16, 32, 128) plus RFC 3581
``received``/``rport`` left by a downstream element and the SDP connection address compared with
the packet source. Media latching compares where RTP really comes from with what the SDP said.
IKE findings come from charon's NAT-D results; kernel-libipsec forces UDP encapsulation by
faking its own NAT-D hash, which makes the *peer* report ``nat-remote``: a remote NAT is therefore
only believed when the peer's address or port as seen differs from the configured one.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from .sip.message import SipMessage
from .sip.sdp import SessionDescription

# RFC 1918 and RFC 6598 (shared address space, carrier-grade NAT)
PRIVATE = tuple(ipaddress.ip_network(p) for p in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                  "100.64.0.0/10", "fc00::/7"))


@dataclass(frozen=True)
class NatFinding:
    test: str  # short name of the test that fired
    where: str  # sip, sdp, media, ike
    evidence: str  # what was seen, in one line

    def to_json(self) -> dict:
        return {"test": self.test, "where": self.where, "evidence": self.evidence}


# cached: every INVITE and 2xx asks about the same few addresses a dozen times (ipaddress parsing was
# half of a call's cost in the gateway core); bounded, so addresses sprayed by a peer only evict
@functools.lru_cache(maxsize=4096)
def _ip(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def is_private(host: str, extra: tuple = ()) -> bool:
    ip = _ip(host)
    return ip is not None and any(ip.version == n.version and ip in n for n in (*PRIVATE, *extra))


def _port(s: str) -> int | None:
    """A port written in ASCII digits, else None ('²' passes isdigit; int() of a long one raises)."""
    return int(s) if s.isascii() and s.isdigit() and len(s) <= 5 else None


def _uri_hostport(value: str) -> tuple[str, int | None] | None:
    """host and port of the URI in a name-addr / addr-spec (``<sip:u@h:p;params>``)."""
    v = value
    if "<" in v:
        v = v[v.index("<") + 1:v.index(">")] if ">" in v else v
    v = v.split(";", 1)[0]
    if ":" not in v:
        return None
    v = v.split(":", 1)[1]  # drop the scheme
    v = v.rsplit("@", 1)[-1]
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = v.partition(":")
    port = port.split("?")[0]
    return host, _port(port)


def sip_findings(msg: SipMessage, source: tuple[str, int], private: tuple = ()) -> list[NatFinding]:
    """What one message, received from ``source`` on the wire, says about a NAT on its way."""
    out: list[NatFinding] = []
    src, sport = source
    via = msg.vias[0]
    if msg.is_request:
        if _ip(via.host) is not None and _ip(via.host) != _ip(src):  # nathelper 2
            out.append(NatFinding("via-host-vs-source", "sip", f"top Via sent-by {via.host}, packet from {src}"))
        if via.port is not None and via.port != sport or via.port is None and sport != 5060:  # nathelper 16
            out.append(NatFinding("via-port-vs-source", "sip",
                                  f"top Via port {via.port or 5060}, packet from port {sport}"))
        if is_private(via.host, private):  # nathelper 4
            out.append(NatFinding("via-private", "sip", f"top Via sent-by {via.host} is a private address"))
        for c in msg.get_all("contact"):
            hp = _uri_hostport(c)
            if hp is None:
                continue
            if is_private(hp[0], private):  # nathelper 1
                out.append(NatFinding("contact-private", "sip", f"Contact {hp[0]} is a private address"))
            if hp[1] is not None and hp[1] != sport:  # nathelper 128
                out.append(NatFinding("contact-port-vs-source", "sip", f"Contact port {hp[1]}, packet from {sport}"))
    else:
        # a response carries our own Via back: received/rport tell what the next hop saw of us
        rec, rport = via.param("received"), via.param("rport")
        if rec and _ip(rec) != _ip(via.host):  # RFC 3581 servers add received even when it is the same
            out.append(NatFinding("via-received", "sip", f"next hop saw {via.host} as {rec} (RFC 3581 received)"))
        if rport and _port(rport) is not None and via.port is not None and _port(rport) != via.port:
            out.append(NatFinding("via-rport", "sip", f"next hop saw port {via.port} as {rport} (RFC 3581 rport)"))
    if is_private(src, private):  # nathelper 32
        out.append(NatFinding("source-private", "sip", f"packet source {src} is a private address"))
    return out


def sdp_findings(sdp: SessionDescription, source: tuple[str, int], private: tuple = ()) -> list[NatFinding]:
    """The SDP's connection addresses against the signalling source (nathelper 8, and c= vs source)."""
    out = []
    for i, md in enumerate(sdp.media):
        if md.rejected or md.address is None or md.on_hold_address:
            continue
        if is_private(md.address, private):
            out.append(NatFinding("sdp-private", "sdp", f"stream {i} c= {md.address} is a private address"))
        if _ip(md.address) != _ip(source[0]):
            out.append(NatFinding("sdp-vs-source", "sdp", f"stream {i} c= {md.address}, signalling from {source[0]}"))
    return out


_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


def sdp_leftover_findings(body: str, sdp: SessionDescription, source: tuple[str, int],
                          private: tuple = ()) -> list[NatFinding]:
    """A SIP ALG rewrites c=, o= and m= but not what it does not parse: an attribute (``a=ssrc:...
    cname:user@host``, ``a=rtcp:port IN IP4 host``) still naming a private address, while the
    connection addresses are public, shows that something rewrote the SDP on its way."""
    conns = [md.address for md in sdp.media if md.address and not md.rejected]
    if not conns or any(is_private(c, private) for c in conns):
        return []  # nothing rewrote c=, or nothing to compare with: sdp_findings covers it
    out = []
    for line in body.splitlines():
        if not line.startswith("a="):
            continue
        for addr in _IPV4.findall(line):
            if is_private(addr, private) and _ip(addr) != _ip(source[0]):
                out.append(NatFinding("sdp-rewritten", "sdp",
                                      f"{line.strip()[:80]} names private {addr} while c= says {conns[0]}: "
                                      "a SIP ALG rewrote the SDP"))
                break
    return out


def nated_media(sdp: SessionDescription, source: tuple[str, int], private: tuple = ()) -> dict[str, str]:
    """SDP addresses a NAT hid (private, not the signalling source, which is public) mapped to the
    address the media will really come from and must be sent to: the signalling source, as
    nathelper's ``fix_nated_sdp`` takes it. The ports are kept (a NAT keeps them when it can; latching
    tells when it did not)."""
    if is_private(source[0], private) or _ip(source[0]) is None:
        return {}
    out = {}
    for md in sdp.media:
        if md.rejected or md.address is None or md.on_hold_address:
            continue
        if is_private(md.address, private) and _ip(md.address) != _ip(source[0]):
            out[md.address] = source[0]
    return out


def media_finding(sdp_addr: str, sdp_port: int, seen_addr: str, seen_port: int) -> NatFinding | None:
    """Latching: RTP for an SDP endpoint arrived from somewhere else."""
    if _ip(sdp_addr) == _ip(seen_addr) and sdp_port == seen_port:
        return None
    return NatFinding("media-latching", "media",
                      f"SDP said {sdp_addr}:{sdp_port}, RTP came from {seen_addr}:{seen_port}")


def ike_findings(ike_sa: dict, peer_address: str, backend: str) -> list[NatFinding]:
    """charon's view of one IKE_SA (``list-sas`` entry) against the peer's own address (its IKE
    identity): seen from elsewhere, something translated it."""
    out = []
    yes = {k for k in ("nat-local", "nat-remote", "nat-fake", "nat-any", "encap") if ike_sa.get(k) == "yes"}
    host, port = ike_sa.get("remote-host", ""), ike_sa.get("remote-port", "")
    ike_remote = peer_address
    moved = _ip(host) != _ip(ike_remote) or port not in ("500", "4500")
    if "nat-local" in yes:
        local = f"{ike_sa.get('local-host')}:{ike_sa.get('local-port')}"
        out.append(NatFinding("ike-nat-local", "ike", f"NAT-D: this gateway is behind a NAT (local {local})"))
    if "nat-remote" in yes:
        if moved:
            out.append(NatFinding("ike-nat-remote", "ike",
                                  f"NAT-D: the peer is behind a NAT, seen as {host}:{port} (configured {ike_remote})"))
        # else: seen at the configured address and port: the peer forced UDP encapsulation by faking its
        # NAT-D hash (kernel-libipsec always does), or a NAT keeps both (a configured public address); not
        # reported as a NAT, ike_encapsulation() says which encapsulation is in use
    elif moved:
        out.append(NatFinding("ike-peer-moved", "ike", f"the peer is seen as {host}:{port}, configured {ike_remote}"))
    return out


def ike_encapsulation(ike_sa: dict, backend: str) -> str:
    """Why IKE/ESP run over UDP 4500 here, in words."""
    if ike_sa.get("encap") != "yes" and ike_sa.get("nat-any") != "yes":
        return "none"
    if ike_sa.get("nat-local") == "yes":
        return "NAT-T: this gateway is behind a NAT"
    if backend == "kernel-libipsec":
        return "forced: kernel-libipsec always encapsulates (userspace ESP on UDP 4500)"
    return "NAT-T: the peer is behind a NAT or forces encapsulation"
