"""What :class:`~ipsecrtp.sip.dialog.DialogTracker` reports: frozen dataclasses, one per kind of event.

They live apart from the tracker so that their consumers (the gateway core, the timelines, the
offline replay) read them without the state machine, in the style of h11's events module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..media import Endpoint, Flow
from .message import SipMessage

Address = tuple[str, int]


@dataclass(frozen=True)
class Event:
    call_id: str
    time: float  # capture time of the message (or timer) that caused the event


@dataclass(frozen=True)
class MessageRejected(Event):
    reason: str
    source: Address | None = None


@dataclass(frozen=True)
class DialogEarly(Event):
    status: int
    to_tag: str | None
    trigger: str = ""


@dataclass(frozen=True)
class DialogConfirmed(Event):
    to_tag: str | None
    trigger: str = ""


@dataclass(frozen=True)
class MediaNegotiated(Event):
    flows: tuple[Flow, ...]
    trigger: str  # the message carrying the answer
    answer_source: Address | None  # where the answer came from on the wire
    offerer: str  # "caller" or "callee"
    to_tag: str | None = None
    notes: tuple[str, ...] = ()  # rejected/held streams, directions, ICE, SDP keys present
    srtp: str = ""  # "sdes"/"dtls": both sides negotiated SRTP on every stream (sdp.end_to_end_srtp)


@dataclass(frozen=True)
class MediaChanged(Event):
    old: tuple[Flow, ...]
    new: tuple[Flow, ...]
    trigger: str
    answer_source: Address | None
    to_tag: str | None = None
    notes: tuple[str, ...] = ()
    srtp: str = ""


@dataclass(frozen=True)
class DialogTerminated(Event):
    reason: str  # bye-by-caller, bye-by-callee, cancelled, rejected-486, timeout, media-timeout, ...
    trigger: str | None


@dataclass(frozen=True)
class Retransmission(Event):
    trigger: str


@dataclass(frozen=True)
class SipSeen(Event):
    """Every new message of a tracked call (only with ``report_messages``): the raw timeline."""

    method: str  # the request's method, or the CSeq method of a response
    status: int | None  # None for a request
    trigger: str
    message: SipMessage | None = field(default=None, repr=False, compare=False)
    source: Address | None = None


@dataclass(frozen=True)
class MediaOffered(Event):
    """An INVITE's offer (only with ``report_messages``): the offerer's endpoints, before any answer."""

    endpoints: tuple[Endpoint, ...]
    trigger: str
    destination: Address | None  # where the INVITE was going on the wire


@dataclass(frozen=True)
class Relayed(Event):
    """The same message again, one proxy hop further (the capture point sees both sides of a proxy)."""

    trigger: str


@dataclass(frozen=True)
class MediaRenegotiated(Event):
    """An offer/answer that left the flows as they were (hold by sendonly, codec change, refresh)."""

    trigger: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtraDialog(Event):
    """A second fork answered 2xx: the caller must ACK and BYE it (RFC 3261 §13.2.2.4); never keyed."""

    to_tag: str | None
    trigger: str


@dataclass(frozen=True)
class CapHit(Event):
    """An input went beyond a cap of :class:`~.limits.Limits` (``cap``, one of ``limits.CAPS``): what it
    would have cost was not spent. ``detail`` says what happened instead (dropped, evicted, ignored)."""

    cap: str
    limit: int
    detail: str
    source: Address | None = None


@dataclass(frozen=True)
class DialogEvicted(Event):
    """A dialog dropped to make room under a dialogs cap (the oldest ended, else unanswered, one); an
    unanswered one is also reported ended (reason ``evicted``) so that what was held for it goes."""

    cap: str
    state: str  # what it was when evicted: trying, early or terminated
    source: Address | None = None


@dataclass(frozen=True)
class MediaRefused(Event):
    """An offer/answer whose flows were not computed: beyond a cap (ports per stream). The call has
    no flows until a later offer/answer; ``old`` are the ones it had (now gone)."""

    reason: str
    trigger: str
    cap: str
    limit: int
    old: tuple[Flow, ...] = ()
