"""Caps on what one input can make the controller spend or hold (issue 19: hostile input has a
bounded cost). Each is a ``[controller]`` key of the same name; whatever arrives, the SIP core,
the TCP reassembly and the flows derived from SDP stay within them, and each cap hit is an event
(:class:`~.events.CapHit`) the gateway logs as a ``cap-hit`` line naming the cap.

The defaults are far above what legitimate signalling needs and low enough that the worst message
costs about a millisecond (``ipsecrtp bench hostile`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    # far above a call's signalling (a few KiB; RFC 3261 §18.1.1 moves anything near the path MTU to
    # TCP), on UDP and TCP alike; parsing is linear in it, and 64 KiB already cost a millisecond here
    max_message_bytes: int = 32768
    # header fields per message (lines, and each value of a comma-separated Contact list): a real
    # INVITE has 10 to 40; each costs parsing time, so the worst message stays near a millisecond
    max_headers: int = 128
    max_vias: int = 70  # Max-Forwards' usual start (RFC 3261 §8.1.1.6): no real message has crossed more hops
    max_media_lines: int = 16  # m= lines per SDP (audio, video, a few extra streams)
    # lines per SDP: a trunk's SDP has 10 to 30, a WebRTC offer with ICE candidates 100 to 200; each
    # costs parsing time, as a header does
    max_sdp_lines: int = 256
    # RFC 8866 §5.14 port counts (layered codecs); a legitimate stream needs one or two. Beyond it the
    # offer/answer is refused, never enumerated: its flows are not computed at all
    max_ports_per_stream: int = 8
    max_tcp_connections: int = 1024  # TCP directions reassembled at once (least recently used dropped)
    max_tcp_buffered_bytes: int = 8 * 1024 * 1024  # bytes waiting in all TCP reassembly buffers together
    max_dialogs: int = 10000  # calls tracked at once (ended ones kept for retransmissions included)
    max_dialogs_per_source: int = 5000  # ... of which from one source address
    max_forks: int = 16  # dialogs (To tags) one INVITE may fork into
    max_reinvites_per_second: int = 5  # offers (re-INVITE, UPDATE) in one dialog within a second
    max_dialog_transactions: int = 512  # requests and responses remembered per dialog for retransmissions
    # SIP messages a second (and in a burst) parsed from one source that is neither a peer's address
    # nor in a peer's media prefixes nor in sip_trusted; beyond it dropped unparsed (gateway/throttle.py):
    # a flood from one address then costs a lookup a message, not a parse
    max_sip_per_source_per_s: int = 500


DEFAULT_LIMITS = Limits()


def cap_name(field_name: str) -> str:
    """The ``cap`` a log line names: the key without ``max_``, dashed (``max_vias`` -> ``vias``)."""
    return field_name.removeprefix("max_").replace("_", "-")


CAPS: tuple[str, ...] = tuple(cap_name(f.name) for f in fields(Limits))  # every value ``cap`` can take
