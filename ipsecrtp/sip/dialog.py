"""Dialog and offer/answer tracking, sans I/O (RFC 3261 §12-13, RFC 3262, 3264, 3311, 4028, 6337).

Feed it SIP messages seen on the wire with their capture time; it returns events. Time only
enters as an argument; timers are exposed as :meth:`DialogTracker.next_timer` and fired by
:meth:`DialogTracker.handle_timer`, in the style of aioquic's connection.

A *call* is everything under one Call-ID and From tag: the INVITE and every dialog (To tag)
it forks into. Offer/answer runs per dialog; the call's media is that of the dialog that
answered last while early, and of the confirmed dialog once a 2xx arrived. That is the one set
of flows a gateway keys, and every change to it is a :class:`MediaChanged`.
"""

from __future__ import annotations

from .control import DialogControl
from .errors import CapExceeded, Capped, SipParseError
from .events import (
    Address,
    CapHit,
    DialogConfirmed,
    DialogEarly,
    DialogTerminated,
    Event,
    ExtraDialog,
    MediaOffered,
    MediaRenegotiated,
    MessageRejected,
    Relayed,
    Retransmission,
    SipSeen,
)
from .guard import DialogGuard, offered_endpoints
from .headers import session_expires
from .limits import DEFAULT_LIMITS, Limits
from .message import SipMessage, parse_message
from .offers import Dialog, Leg, Offer, adopted, answer, apply_answer, select
from .sdp import SdpError, parse_sdp
from .timerheap import TimerHeap
from .timers import DialogTimers


class DialogTracker(DialogTimers, DialogControl):
    """Tracks every INVITE-initiated call seen; one instance per capture point."""

    def __init__(self, *, media_timeout: float | None = 30.0, invite_timeout: float = 180.0,
                 linger: float = 32.0, session_timer_grace: float = 2.0, report_messages: bool = False,
                 limits: Limits = DEFAULT_LIMITS, timer_batch: int | None = None) -> None:
        self.report_messages = report_messages
        # dialogs expired per handle_timer call at most (None: all due): a flood's INVITEs all reach
        # Timer C together, and a live loop should read packets between batches, not stall on them
        self.timer_batch = timer_batch
        self.limits, self.guard = limits, DialogGuard(limits)  # caps on what an input can make it hold
        self.max_ports = limits.max_ports_per_stream
        self.media_timeout = media_timeout
        self.invite_timeout = invite_timeout  # Timer C (RFC 3261 §16.6) bounds an unanswered INVITE
        self.linger = linger  # keep ended dialogs to recognise retransmissions (64*T1)
        self.session_timer_grace = session_timer_grace
        self.dialogs: dict[str, Dialog] = {}
        # (when, call) no later than each dialog's next deadline: the earliest in O(log n), whatever
        # the number of calls. Media activity only moves a deadline later, so it pushes nothing: an
        # entry that comes due early is checked against the dialog and pushed again.
        self._timers = TimerHeap()
        self._timer_at = self._timers.at  # call -> its earliest entry still in the heap

    # -- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, source: Address | None = None,
                stream: bool = False, destination: Address | None = None) -> list[Event]:
        try:
            msg = parse_message(data, stream=stream, limits=self.limits)
        except CapExceeded as exc:
            return [CapHit("", now, exc.cap, exc.limit, f"message dropped: {exc}", source)]
        except SipParseError as exc:
            return [MessageRejected("", now, str(exc), source)]
        return self.receive_message(msg, now, source, destination)

    def receive_message(self, msg: SipMessage, now: float, source: Address | None = None,
                        destination: Address | None = None) -> list[Event]:
        d = self.dialogs.get(msg.call_id)
        if d is not None:
            repeat = self._repeat(d, msg, now)
            if repeat is not None:  # seen before: no need to read its SDP again (a relayed copy is remembered)
                return repeat + self.guard.transactions(d, now, source)
        body = msg.sdp_body()
        try:
            sdp = parse_sdp(body, self.limits) if body else None
        except SdpError as exc:
            if isinstance(exc, Capped):
                return [CapHit(msg.call_id, now, exc.cap, exc.limit, f"message dropped: {exc}", source)]
            return [MessageRejected(msg.call_id, now, f"bad SDP: {exc}", source)]
        events = self._request(msg, sdp, now, source) if msg.is_request else self._response(msg, sdp, now, source)
        self._schedule(msg.call_id)
        events += self.guard.transactions(self.dialogs.get(msg.call_id), now, source)
        if self.report_messages and msg.call_id in self.dialogs:
            seen: list[Event] = [SipSeen(msg.call_id, now, msg.cseq[1], msg.status, msg.summary(), msg, source)]
            d = self.dialogs[msg.call_id]
            if msg.is_request and msg.method == "INVITE" and msg.to_tag is None and sdp is not None \
                    and d.invite_offer is not None and d.invite_offer.sdp is sdp:
                endpoints, refused = offered_endpoints(sdp, self.max_ports, msg.call_id, now, source)
                seen += [*refused, MediaOffered(msg.call_id, now, endpoints, msg.summary(), destination)]
            return [*seen, *events]
        return events

    def adopt(self, call_id: str, from_tag: str | None, to_tag: str | None, flows: tuple, now: float) -> None:
        """Track a call a previous run of the controller saw set up (see ``offers.adopted``)."""
        if call_id not in self.dialogs:
            self.dialogs[call_id] = adopted(call_id, from_tag, to_tag, flows, now)
            self._schedule(call_id)

    def media_activity(self, call_id: str, now: float) -> None:
        d = self.dialogs.get(call_id)
        if d is not None and d.state != "terminated":
            d.last_activity = max(d.last_activity, now)

    # -- internals -----------------------------------------------------------------------------

    def _end(self, d: Dialog, now: float, reason: str, trigger: str | None) -> DialogTerminated:
        d.state, d.ended = "terminated", now
        self.guard.ended(d.call_id)
        return DialogTerminated(d.call_id, now, reason, trigger)

    def _leg_of(self, d: Dialog, msg: SipMessage) -> tuple[Leg | None, str]:
        """The dialog an in-dialog request belongs to, and who sent it."""
        if msg.from_tag == d.from_tag:
            return d.legs.get(msg.to_tag), "caller"
        if msg.to_tag == d.from_tag:
            return d.legs.get(msg.from_tag), "callee"
        return None, "caller"

    def _repeat(self, d: Dialog, msg: SipMessage, now: float) -> list[Event] | None:
        """Events for a message this call has seen already (retransmitted, or relayed by a proxy), else None."""
        cseq = msg.cseq
        if msg.is_request:
            method = msg.method.upper()
            key = (msg.vias[0].branch, method, cseq[0])
            if key in d.seen_requests:
                # ACKs to each retransmitted 2xx repeat legitimately
                return [Retransmission(d.call_id, now, msg.summary())] if method != "ACK" else []
            if any((v.branch, method, cseq[0]) in d.seen_requests for v in msg.vias[1:]):
                d.seen_requests.add(key)  # a proxy forwarded what we saw on its other side
                return [Relayed(d.call_id, now, msg.summary())] if method != "ACK" else []
            return None
        top = d.seen_responses.get((msg.to_tag, cseq, msg.status))
        if top is None:
            return None
        if top != msg.vias[0].branch:
            return [Relayed(d.call_id, now, msg.summary())]
        return [Retransmission(d.call_id, now, msg.summary())]

    def _request(self, msg: SipMessage, sdp, now: float, source) -> list[Event]:
        method = msg.method.upper()
        cseq = msg.cseq
        d = self.dialogs.get(msg.call_id)
        branch = msg.vias[0].branch
        key = (branch, method, cseq[0])
        trigger = msg.summary()
        if method == "INVITE" and msg.to_tag is None:
            if d is not None and d.state != "terminated":
                # same Call-ID, new branch: a spiral through a proxy, or a retransmission re-sent by it
                d.seen_requests.add(key)
                if d.invite_branch is None and msg.from_tag == d.from_tag:
                    # the INVITE of a call a proxy reported first (sip/control.py): its responses on the
                    # wire (487, 486, a 2xx) are now known as this INVITE's
                    d.invite_branch, d.invite_cseq = branch, cseq[0]
                return [Retransmission(d.call_id, now, trigger)]
            admitted, events = self.guard.admit(msg.call_id, source, now, self.dialogs, self._timer_at)
            if not admitted:
                return events
            d = Dialog(msg.call_id, msg.from_tag, branch, cseq[0], now, last_activity=now)
            self.dialogs[msg.call_id] = d
            d.seen_requests.add(key)
            if sdp is not None:
                d.invite_offer = Offer(sdp, "caller", cseq)
            return events
        if d is None or d.state == "terminated":
            return []
        d.seen_requests.add(key)
        d.last_activity = max(d.last_activity, now)
        if method == "CANCEL":
            d.cancelled = True
            return []
        if method in ("INVITE", "UPDATE") and (hit := self.guard.offer(d.call_id, now, source)) is not None:
            return [hit]
        leg, side = self._leg_of(d, msg)
        if leg is None:
            if method == "BYE" and msg.to_tag in d.extra:
                return []  # the caller tearing down a fork's extra 2xx dialog
            if d.state == "confirmed" or method not in ("PRACK", "UPDATE"):
                return []
            if (hit := self.guard.fork(d, msg.to_tag, now, source)) is not None:
                return [hit]
            leg = d.legs.setdefault(msg.to_tag, Leg(msg.to_tag))  # PRACK/UPDATE before we saw its 18x
        if method == "BYE":
            if leg.to_tag != d.to_tag and d.state == "confirmed":
                return []
            return [self._end(d, now, f"bye-by-{side}", trigger)]
        if method == "ACK":
            if leg.offer is not None and leg.offer.by == "callee" and sdp is not None:
                return answer(d, leg, sdp, now, trigger, source, self.max_ports)
            return []
        if method == "PRACK" and sdp is not None and leg.offer is not None and leg.offer.by == "callee":
            return answer(d, leg, sdp, now, trigger, source, self.max_ports)
        if method in ("INVITE", "UPDATE", "PRACK") and sdp is not None:
            leg.offer = Offer(sdp, side, cseq)
        return []

    def _response(self, msg: SipMessage, sdp, now: float, source) -> list[Event]:
        d = self.dialogs.get(msg.call_id)
        if d is None:
            return []
        if d.state == "terminated":
            d.seen_responses[(msg.to_tag, msg.cseq, msg.status)] = msg.vias[0].branch  # e.g. the BYE's 200
            return []
        if msg.from_tag != d.from_tag and not (msg.to_tag == d.from_tag and d.state != "trying"):
            return []  # not this call's (a From tag the INVITE did not carry)
        status, cseq = msg.status or 0, msg.cseq
        d.seen_responses[(msg.to_tag, cseq, status)] = msg.vias[0].branch
        d.last_activity = max(d.last_activity, now)
        if status == 100:
            return []
        # a response to a request the callee sent carries the callee's tag in From
        leg = d.legs.get(msg.to_tag if msg.from_tag == d.from_tag else msg.from_tag)
        if cseq[1] == "INVITE" and cseq[0] == d.invite_cseq:
            return self._invite_response(d, leg, msg, sdp, now, source)
        if leg is None:
            return []
        return self._in_dialog_response(d, leg, msg, sdp, now, source)

    def _invite_response(self, d: Dialog, leg: Leg | None, msg: SipMessage, sdp, now: float, source) -> list[Event]:
        """A response to the call's INVITE, from one fork: it ends the call, or opens, confirms or answers a dialog."""
        status, trigger = msg.status or 0, msg.summary()
        if status >= 300:
            return self._invite_failed(d, status, now, trigger)
        if msg.to_tag is None:
            return []  # a 1xx/2xx without To tag creates no dialog (RFC 3261 §12.1)
        if (hit := self.guard.fork(d, msg.to_tag, now, source)) is not None:
            return [hit]
        if d.state == "confirmed" and (leg is None or (status >= 200 and msg.to_tag != d.to_tag)):
            # a fork answering after the call is confirmed: its tag is remembered (the caller's BYE to it
            # is not this call's end) and its 2xx reported, never keyed
            d.extra.add(msg.to_tag)
            return [ExtraDialog(d.call_id, now, msg.to_tag, trigger)] if status >= 200 else []
        events: list[Event] = []
        if leg is None:
            leg = d.legs[msg.to_tag] = Leg(msg.to_tag)
            if status < 200:
                d.state = "early"
                events.append(DialogEarly(d.call_id, now, status, msg.to_tag, trigger))
        if status >= 200 and d.state != "confirmed":
            events.extend(self._confirm(d, leg, msg, now, trigger, source))
        if sdp is not None:
            events.extend(self._invite_sdp(d, leg, msg, sdp, now, trigger, source))
        return events

    def _invite_failed(self, d: Dialog, status: int, now: float, trigger: str) -> list[Event]:
        """A final failure to the INVITE ends a call that no fork has answered with a 2xx yet."""
        if d.state in ("trying", "early"):
            reason = "cancelled" if d.cancelled or status == 487 else f"rejected-{status}"
            return [self._end(d, now, reason, trigger)]
        return []  # once a fork answered 2xx the others' failures (a proxy cancels them) end nothing

    def _confirm(self, d: Dialog, leg: Leg, msg: SipMessage, now: float, trigger: str, source) -> list[Event]:
        """The first 2xx to the INVITE: its fork's dialog becomes the call's, the other forks' early ones end."""
        d.state = "confirmed"
        events: list[Event] = [DialogConfirmed(d.call_id, now, msg.to_tag, trigger)]
        events.extend(select(d, leg, now, trigger, source))
        for other in list(d.legs):
            if other != msg.to_tag:
                del d.legs[other]
        self._session_timer(d, msg, now)
        return events

    def _invite_sdp(self, d: Dialog, leg: Leg, msg: SipMessage, sdp, now: float, trigger: str, source) -> list[Event]:
        """SDP in a response to the INVITE: the answer to the INVITE's offer, or (late offer) an offer."""
        status = msg.status or 0
        reliable = msg.get("rseq") is not None
        if d.invite_offer is not None:
            if not leg.invite_answered or (leg.tentative and status >= 200):
                revision = leg.invite_answered  # the 2xx confirming an unreliable 18x's answer
                leg.invite_answered, leg.tentative = True, status < 200 and not reliable
                new = apply_answer(d, leg, d.invite_offer, sdp, now, trigger, source, self.max_ports)
                return [e for e in new if not (revision and isinstance(e, MediaRenegotiated))]
        elif leg.offer is None and not leg.flows and (status >= 200 or reliable):
            # late offer: no SDP in the INVITE, so this response offers; the ACK or PRACK answers
            leg.offer = Offer(sdp, "callee", msg.cseq)
        return []

    def _in_dialog_response(self, d: Dialog, leg: Leg, msg: SipMessage, sdp, now: float, source) -> list[Event]:
        """A response to a request inside a dialog (re-INVITE, UPDATE, PRACK, BYE, ...)."""
        status, cseq, trigger = msg.status or 0, msg.cseq, msg.summary()
        method = cseq[1]
        if status >= 300:
            if method in ("INVITE", "UPDATE", "PRACK") and leg.offer is not None and leg.offer.cseq == cseq:
                leg.offer = None  # the offer died with its transaction (491 glare, 488, ...)
            if status in (408, 481) and method != "BYE" and leg.to_tag == d.to_tag:  # RFC 5057
                return [self._end(d, now, f"failed-{status}", trigger)]
            return []
        if 200 <= status <= 299 and method in ("INVITE", "UPDATE"):
            self._session_timer(d, msg, now)
        if sdp is not None and leg.offer is not None and leg.offer.cseq == cseq:
            return answer(d, leg, sdp, now, trigger, source, self.max_ports)
        return []

    def _session_timer(self, d: Dialog, msg: SipMessage, now: float) -> None:
        """A 2xx to INVITE/UPDATE starts or refreshes the session interval (RFC 4028 §10)."""
        interval = session_expires(msg.get("session-expires"))
        if interval is not None:
            d.session_expires = interval
        d.refreshed = now
