"""SIP from untrusted sources held to a rate before anything is parsed (issue 15 item 6).

Parsing and tracking a SIP message costs the core about half a millisecond here, so one source
sending 10,000 messages a second (junk and never-answered INVITEs) used to fill the controller's
loop: the kernel then dropped what the loop did not read, the legitimate calls' SIP included (9 to
17 of 20 calls keyed in ``bench faults``' flood). The dialog caps bound memory, not work. Here a
message from a source that is not a trusted one spends a token of that source's bucket first
(``max_sip_per_source_per_s`` a second, as many in a burst); without one it is dropped for the cost
of decoding its IP header and a dictionary lookup.

Trusted sources are never held back: the peers' IKE addresses and media prefixes (their gateways
and phones: the legitimate signalling of a keyed call comes from them) and the operator's
``sip_trusted`` prefixes (a proxy or SBC on an address of its own). The buckets are bounded
(least recently seen source forgotten first); a flood from spoofed, ever-changing source
addresses gets a full bucket per address, which this cannot tell from many real sources: that is
for the network's anti-spoofing filters, and the dialog caps still bound what it makes us hold.

Pure: addresses and ``now`` in, a verdict and the reports to log out.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from ..sip.limits import cap_name
from .actions import Outbox

if TYPE_CHECKING:
    from ..config import ControllerConfig

MAX_SOURCES = 4096  # untrusted sources with a bucket at once (each a few hundred bytes)
REPORT_EVERY_S = 1.0  # at most one cap-hit line a second per source, with what was dropped since
CAP = cap_name("max_sip_per_source_per_s")


def trusted_sources(cfg: ControllerConfig) -> list[str]:
    """The peers' IKE addresses (their own and a NAT's) and media prefixes, and ``sip_trusted``."""
    out = list(cfg.sip_trusted)
    for p in cfg.peers:
        out += [p.ike_local, p.ike_remote, p.ike_remote_id, *p.local_media, *p.remote_media]
    return out


class _Bucket:
    __slots__ = ("dropped", "last", "reported", "tokens", "trusted")

    def __init__(self, trusted: bool, tokens: float, now: float) -> None:
        self.trusted, self.tokens, self.last = trusted, tokens, now
        self.dropped, self.reported = 0, now - REPORT_EVERY_S


class SourceThrottle:
    def __init__(self, rate: int, trusted: list[str], out: Outbox, max_sources: int = MAX_SOURCES) -> None:
        self.rate, self.out, self.max_sources = float(rate), out, max_sources
        self.trusted = []
        for p in trusted:
            try:
                self.trusted.append(ipaddress.ip_network(p, strict=False))
            except ValueError:
                pass  # a name (an IKE identity that is not an address): no source address to trust
        self.sources: dict[str, _Bucket] = {}
        self.dropped_total = 0

    def _is_trusted(self, src: str) -> bool:
        try:
            addr = ipaddress.ip_address(src)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def _bucket(self, src: str, now: float) -> _Bucket:
        b = self.sources.pop(src, None)  # re-inserted below: the dict's order is recency
        if b is None:
            b = _Bucket(self._is_trusted(src), self.rate, now)
            if len(self.sources) >= self.max_sources:
                del self.sources[next(iter(self.sources))]
        self.sources[src] = b
        return b

    def admit(self, src: str, now: float) -> bool:
        """Whether a message from ``src`` at ``now`` may be parsed; a source held back is reported in
        one ``cap-hit`` line a second at most, with how many of its messages were dropped since."""
        b = self._bucket(src, now)
        if b.trusted:
            return True
        b.tokens = min(self.rate, b.tokens + (now - b.last) * self.rate)
        b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        b.dropped += 1
        self.dropped_total += 1
        if now - b.reported >= REPORT_EVERY_S:
            self.out.log("cap-hit", cap=CAP, limit=int(self.rate), source=src, dropped=b.dropped,
                         reason="SIP from an untrusted source beyond its rate: dropped unparsed")
            b.dropped, b.reported = 0, now
        return False
