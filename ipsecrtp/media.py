"""Media flows from an SDP offer/answer pair (RFC 3264, 3605, 5761).

A :class:`Flow` is one bidirectional UDP 5-tuple pair: RTP is symmetric (RFC 4961), so
the offerer's receive port is also its send port. IKEv2 traffic selectors and the
controller's routing rules are derived from these and nothing else.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from .sip.errors import Capped
from .sip.limits import DEFAULT_LIMITS
from .sip.sdp import MediaDescription, SessionDescription

DEFAULT_MAX_PORTS = DEFAULT_LIMITS.max_ports_per_stream


class TooManyPorts(Capped, ValueError):
    """A stream's port count beyond ``max_ports_per_stream``: its flows are never enumerated (an
    m= port count is a number in the input, up to 65535, and each port would be a flow)."""


@dataclass(frozen=True, order=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """The inverse of ``str``: '198.51.100.1:10000' or '[2001:db8::1]:10000'."""
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))


@dataclass(frozen=True, order=True)
class Flow:
    stream: int  # index of the m= line
    kind: str  # "rtp", "rtcp" or "rtp+rtcp" (rtcp-mux)
    offerer: Endpoint
    answerer: Endpoint

    def __str__(self) -> str:
        return f"{self.kind}#{self.stream} udp {self.offerer}<->{self.answerer}"

    def to_json(self) -> dict:
        return {"stream": self.stream, "kind": self.kind, "offerer": str(self.offerer),
                "answerer": str(self.answerer)}

    @classmethod
    def from_json(cls, d: dict) -> Flow:
        return cls(int(d["stream"]), str(d["kind"]), Endpoint.parse(d["offerer"]), Endpoint.parse(d["answerer"]))

    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return self.offerer, self.answerer


def _rtcp(md: MediaDescription, rtp_port: int, index: int) -> Endpoint:
    addr = md.address or ""
    if index == 0 and md.rtcp_port is not None:
        return Endpoint(md.rtcp_address or addr, md.rtcp_port)
    return Endpoint(addr, rtp_port + 1)


def _keyable(md: MediaDescription) -> bool:
    return not md.rejected and md.address is not None and not md.on_hold_address


def _ports(i: int, md: MediaDescription, count: int, max_ports: int) -> int:
    """The stream's port count, checked before anything is done per port."""
    if count > max_ports:
        raise TooManyPorts("ports-per-stream", max_ports, f"stream {i} ({md.media[:20]}) has a port count of "
                           f"{count}, more than max_ports_per_stream {max_ports}")
    return count


def flows(offer: SessionDescription, answer: SessionDescription,
          max_ports: int = DEFAULT_MAX_PORTS) -> tuple[Flow, ...]:
    """The exact UDP flows that offer and answer establish, stream by stream.

    Streams rejected (port 0) or held with a 0.0.0.0 connection address on either side have
    no flow. ``inactive`` streams keep their flows: RTCP continues (RFC 3264 §5.1). A stream whose
    port count (the smaller of the two sides') exceeds ``max_ports`` raises :class:`TooManyPorts`.
    """
    out: list[Flow] = []
    for i, (o, a) in enumerate(zip(offer.media, answer.media, strict=False)):
        if not (_keyable(o) and _keyable(a)):
            continue
        mux = o.rtcp_mux and a.rtcp_mux
        for k in range(_ports(i, o, min(o.port_count, a.port_count), max_ports)):
            # RFC 8866 §5.14: with a port count, RTP uses even ports p, p+2, ... and RTCP the odd ones.
            step = 1 if mux else 2
            op, ap = o.port + k * step, a.port + k * step
            o_ep, a_ep = Endpoint(o.address or "", op), Endpoint(a.address or "", ap)
            if mux:
                out.append(Flow(i, "rtp+rtcp", o_ep, a_ep))
            else:
                out.append(Flow(i, "rtp", o_ep, a_ep))
                out.append(Flow(i, "rtcp", _rtcp(o, op, k), _rtcp(a, ap, k)))
    return tuple(out)


def offer_endpoints(offer: SessionDescription, max_ports: int = DEFAULT_MAX_PORTS) -> tuple[Endpoint, ...]:
    """Every RTP and RTCP endpoint an offer names (before any answer exists): what speculative
    keying can protect on the offerer's side. :class:`TooManyPorts` beyond ``max_ports``."""
    out: list[Endpoint] = []
    for i, md in enumerate(offer.media):
        if not _keyable(md):
            continue
        for k in range(_ports(i, md, md.port_count, max_ports)):
            p = md.port + k * (1 if md.rtcp_mux else 2)
            out.append(Endpoint(md.address or "", p))
            if not md.rtcp_mux:
                out.append(_rtcp(md, p, k))
    return tuple(dict.fromkeys(out))


def notes(offer: SessionDescription, answer: SessionDescription) -> tuple[str, ...]:
    """What an operator should know about a negotiation beyond its flows (never key material)."""
    out: list[str] = []
    for i, (o, a) in enumerate(zip(offer.media, answer.media, strict=False)):
        tag = f"stream {i} ({o.media})"
        if o.rejected or a.rejected:
            out.append(f"{tag} rejected (port 0)")
            continue
        if o.on_hold_address or a.on_hold_address:
            out.append(f"{tag} on hold (c= 0.0.0.0): no flow")
        for who, md in (("offer", o), ("answer", a)):
            if md.direction != "sendrecv":
                out.append(f"{tag} {who} {md.direction}")
        if o.ice or a.ice:
            out.append(f"{tag} has ICE attributes: flows are the SDP defaults, ICE may pick other candidates")
        if o.crypto_count or a.crypto_count:
            out.append(f"{tag} carries SDP key material (a=crypto/k=, not shown)")
        if o.proto != a.proto:
            out.append(f"{tag} transport differs: offer {o.proto}, answer {a.proto}")
    if len(answer.media) != len(offer.media):
        out.append(f"answer has {len(answer.media)} m= lines for the offer's {len(offer.media)}")
    return tuple(out)


# cached: each answer asks about the same few addresses ten times, and parsing them was half of a
# call's keying decision; bounded, so addresses sprayed in SDP only evict
@functools.lru_cache(maxsize=4096)
def _address(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(addr)


@dataclass(frozen=True)
class MediaPolicy:
    """Which flows a gateway may key: addresses in the configured media prefixes of the two
    keying peers and ports in the RTP range. Everything else is refused (hostile SDP)."""

    local_prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    remote_prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    port_min: int
    port_max: int

    @classmethod
    def build(cls, local: list[str], remote: list[str], ports: tuple[int, int]) -> MediaPolicy:
        return cls(tuple(ipaddress.ip_network(p, strict=False) for p in local),
                   tuple(ipaddress.ip_network(p, strict=False) for p in remote), ports[0], ports[1])

    def _in(self, addr: str, nets) -> bool:
        ip = _address(addr)
        return any(ip.version == n.version and ip in n for n in nets)

    def side(self, ep: Endpoint) -> str | None:
        if self._in(ep.address, self.local_prefixes):
            return "local"
        if self._in(ep.address, self.remote_prefixes):
            return "remote"
        return None

    def check(self, flow: Flow) -> str | None:
        """None when the flow may be keyed, else a one-line reason."""
        sides = []
        for ep in flow.endpoints():
            if not self.port_min <= ep.port <= self.port_max:
                return f"{ep} port outside the RTP range {self.port_min}-{self.port_max}"
            s = self.side(ep)
            if s is None:
                return f"{ep} is in neither peer's media prefixes"
            sides.append(s)
        if sorted(sides) != ["local", "remote"]:
            return f"{flow} does not join a local and a remote media endpoint"
        return None

    def orient(self, flow: Flow) -> tuple[Endpoint, Endpoint]:
        """(local, remote) endpoints of an authorised flow."""
        if self.side(flow.offerer) == "local":
            return flow.offerer, flow.answerer
        return flow.answerer, flow.offerer
