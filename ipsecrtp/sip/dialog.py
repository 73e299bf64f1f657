"""Dialog and offer/answer tracking, sans I/O (RFC 3261 §12-13, RFC 3264, RFC 6337).

Feed it SIP messages seen on the wire with their capture time; it returns events. Time only
enters as an argument; timers are exposed as :meth:`DialogTracker.next_timer` and fired by
:meth:`DialogTracker.handle_timer`, in the style of aioquic's connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..media import Flow, flows
from .message import SipMessage, SipParseError, parse_message
from .sdp import SdpError, SessionDescription, parse_sdp

Address = tuple[str, int]


# --- events -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    call_id: str
    time: float


@dataclass(frozen=True)
class MessageRejected(Event):
    reason: str
    source: Address | None = None


@dataclass(frozen=True)
class DialogEarly(Event):
    status: int
    to_tag: str | None


@dataclass(frozen=True)
class DialogConfirmed(Event):
    to_tag: str | None


@dataclass(frozen=True)
class MediaNegotiated(Event):
    flows: tuple[Flow, ...]
    trigger: str  # the message carrying the answer
    answer_source: Address | None  # where the answer came from on the wire
    offerer: str  # "caller" or "callee"


@dataclass(frozen=True)
class MediaChanged(Event):
    old: tuple[Flow, ...]
    new: tuple[Flow, ...]
    trigger: str
    answer_source: Address | None


@dataclass(frozen=True)
class DialogTerminated(Event):
    reason: str  # bye-by-caller, bye-by-callee, cancelled, rejected-486, timeout, media-timeout, ...
    trigger: str | None


# --- state ------------------------------------------------------------------------------------

@dataclass
class _Offer:
    sdp: SessionDescription
    by: str  # "caller" or "callee"
    cseq: tuple[int, str]


@dataclass
class Dialog:
    call_id: str
    from_tag: str | None
    invite_branch: str | None
    invite_cseq: int
    started: float
    state: str = "trying"  # trying, early, confirmed, terminated
    to_tag: str | None = None
    offer: _Offer | None = None
    flows: tuple[Flow, ...] = ()
    cancelled: bool = False
    last_activity: float = 0.0
    ended: float | None = None
    seen_requests: set = field(default_factory=set)  # (branch, method, cseq) for retransmissions
    answered_cseqs: set = field(default_factory=set)


def _same(a: tuple[Flow, ...], b: tuple[Flow, ...]) -> bool:
    norm = lambda fs: {(f.kind, frozenset(f.endpoints())) for f in fs}  # noqa: E731
    return norm(a) == norm(b)


class DialogTracker:
    """Tracks every INVITE dialog seen; one instance per capture point."""

    def __init__(self, *, media_timeout: float | None = 30.0, invite_timeout: float = 180.0,
                 linger: float = 32.0) -> None:
        self.media_timeout = media_timeout
        self.invite_timeout = invite_timeout  # Timer C (RFC 3261 §16.6) bounds an unanswered INVITE
        self.linger = linger  # keep ended dialogs to recognise retransmissions (64*T1)
        self.dialogs: dict[str, Dialog] = {}

    # -- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, source: Address | None = None,
                stream: bool = False) -> list[Event]:
        try:
            msg = parse_message(data, stream=stream)
        except SipParseError as exc:
            return [MessageRejected("", now, str(exc), source)]
        return self.receive_message(msg, now, source)

    def receive_message(self, msg: SipMessage, now: float, source: Address | None = None) -> list[Event]:
        try:
            cseq = msg.cseq
        except (ValueError, IndexError):
            return [MessageRejected(msg.call_id, now, "malformed CSeq", source)]
        try:
            sdp = parse_sdp(msg.sdp_body()) if msg.sdp_body() else None
        except SdpError as exc:
            return [MessageRejected(msg.call_id, now, f"bad SDP: {exc}", source)]
        if msg.is_request:
            return self._request(msg, cseq, sdp, now, source)
        return self._response(msg, cseq, sdp, now, source)

    def media_activity(self, call_id: str, now: float) -> None:
        d = self.dialogs.get(call_id)
        if d is not None and d.state != "terminated":
            d.last_activity = max(d.last_activity, now)

    # -- timers --------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        times = []
        for d in self.dialogs.values():
            if d.state == "terminated":
                times.append((d.ended or 0.0) + self.linger)
            elif d.state in ("trying", "early"):
                times.append(d.last_activity + self.invite_timeout)
            elif self.media_timeout is not None:
                times.append(d.last_activity + self.media_timeout)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        for cid, d in list(self.dialogs.items()):
            if d.state == "terminated":
                if now >= (d.ended or 0.0) + self.linger:
                    del self.dialogs[cid]
            elif d.state in ("trying", "early") and now >= d.last_activity + self.invite_timeout:
                events.append(self._end(d, now, "timeout", None))
            elif (d.state == "confirmed" and self.media_timeout is not None
                  and now >= d.last_activity + self.media_timeout):
                events.append(self._end(d, now, "media-timeout", None))
        return events

    # -- internals -----------------------------------------------------------------------------

    def _end(self, d: Dialog, now: float, reason: str, trigger: str | None) -> DialogTerminated:
        d.state, d.ended = "terminated", now
        return DialogTerminated(d.call_id, now, reason, trigger)

    def _side(self, d: Dialog, msg: SipMessage) -> str:
        """Who sent a request inside the dialog: its From tag is the caller's for the caller."""
        return "caller" if msg.from_tag == d.from_tag else "callee"

    def _request(self, msg: SipMessage, cseq, sdp, now: float, source) -> list[Event]:
        method = msg.method.upper()
        d = self.dialogs.get(msg.call_id)
        vias = msg.vias
        branch = vias[0].branch if vias else None
        key = (branch, method, cseq[0])
        if d is not None and key in d.seen_requests and method != "ACK":
            return []  # retransmission
        if method == "INVITE" and msg.to_tag is None:
            if d is not None and d.state != "terminated":
                return []  # same Call-ID, new branch: a spiral or a retransmission through a proxy
            d = Dialog(msg.call_id, msg.from_tag, branch, cseq[0], now, last_activity=now)
            self.dialogs[msg.call_id] = d
            d.seen_requests.add(key)
            if sdp is not None:
                d.offer = _Offer(sdp, "caller", cseq)
            return []
        if d is None or d.state == "terminated":
            return []
        d.seen_requests.add(key)
        d.last_activity = max(d.last_activity, now)
        trigger = msg.summary()
        if method == "CANCEL":
            d.cancelled = True
            return []
        if method == "BYE":
            return [self._end(d, now, f"bye-by-{self._side(d, msg)}", trigger)]
        if method == "ACK":
            if d.offer is not None and d.offer.by == "callee" and sdp is not None:
                return self._answer(d, sdp, now, trigger, source)
            return []
        if method in ("INVITE", "UPDATE") and sdp is not None:
            d.offer = _Offer(sdp, self._side(d, msg), cseq)
        elif method == "PRACK" and sdp is not None and d.offer is not None and d.offer.by == "callee":
            return self._answer(d, sdp, now, trigger, source)
        return []

    def _response(self, msg: SipMessage, cseq, sdp, now: float, source) -> list[Event]:
        d = self.dialogs.get(msg.call_id)
        if d is None or d.state == "terminated":
            return []
        status, method = msg.status or 0, cseq[1]
        trigger = msg.summary()
        events: list[Event] = []
        d.last_activity = max(d.last_activity, now)
        initial = method == "INVITE" and cseq[0] == d.invite_cseq
        if initial and d.state in ("trying", "early"):
            if 101 <= status <= 199:
                if d.state == "trying" or d.to_tag != msg.to_tag:
                    d.state, d.to_tag = "early", msg.to_tag
                    events.append(DialogEarly(d.call_id, now, status, msg.to_tag))
            elif 200 <= status <= 299:
                d.state, d.to_tag = "confirmed", msg.to_tag
                events.append(DialogConfirmed(d.call_id, now, msg.to_tag))
            elif status >= 300:
                reason = "cancelled" if d.cancelled or status == 487 else f"rejected-{status}"
                return [self._end(d, now, reason, trigger)]
        elif status >= 300 and method in ("INVITE", "UPDATE"):
            if d.offer is not None and d.offer.cseq == cseq:
                d.offer = None  # the offer died with its transaction (491 glare, 488, ...)
            if status in (408, 481):  # RFC 5057: the dialog itself is gone
                return [self._end(d, now, f"failed-{status}", trigger)]
            return events
        elif status >= 300 and method == "BYE":
            return events
        if sdp is None or method not in ("INVITE", "UPDATE", "PRACK") or status >= 300:
            return events
        if d.offer is None or d.offer.cseq != cseq:
            if method == "INVITE" and cseq not in d.answered_cseqs and (status >= 200 or msg.get("rseq")):
                # no offer in the request: this response carries the offer, the ACK/PRACK the answer
                # the offer comes from whoever received the request; the From tag names its sender
                d.offer = _Offer(sdp, "callee" if msg.from_tag == d.from_tag else "caller", cseq)
            return events
        events.extend(self._answer(d, sdp, now, trigger, source))
        return events

    def _answer(self, d: Dialog, answer: SessionDescription, now: float, trigger: str,
                source) -> list[Event]:
        assert d.offer is not None
        offer = d.offer
        new = flows(offer.sdp, answer)
        d.answered_cseqs.add(offer.cseq)
        d.offer = None
        old = d.flows
        d.flows = new
        if not old:
            return [MediaNegotiated(d.call_id, now, new, trigger, source, offer.by)]
        if _same(old, new):
            return []
        return [MediaChanged(d.call_id, now, old, new, trigger, source)]
