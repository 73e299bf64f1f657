"""Offers, answers and deletes a SIP proxy reports over a control channel (rtpengine's ng protocol),
applied to the same dialogs as the SIP seen on the wire.

A mixin of :class:`~.dialog.DialogTracker`, like ``timers.py``: a call is one entry in
``dialogs`` whichever way it was learnt, so a call the proxy reports and the capture also sees
is negotiated once, and each offer/answer goes through the same ``offers.py`` functions (so the
events are the same :class:`MediaNegotiated`, :class:`MediaChanged`, ...). What the proxy does
not say (CSeq, Via branch, 18x or 2xx) is not made up: an ng answer confirms the dialog (a proxy
calls ``rtpengine_answer`` for the answer it forwards), an ng delete ends it.

Every check runs before anything changes: a :class:`ControlError` leaves the dialogs as they were.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import Capped
from .events import Address, DialogConfirmed, DialogTerminated, Event, MediaOffered, SipSeen
from .guard import DialogGuard, offered_endpoints
from .limits import Limits
from .offers import Dialog, Leg, Offer, answer, apply_answer
from .sdp import SdpError, SessionDescription, parse_sdp

OFFER_TRIGGER, ANSWER_TRIGGER, DELETE_TRIGGER = "ng offer", "ng answer", "ng delete"


class ControlError(ValueError):
    """The command does not fit the call (unknown Call-ID, tags of another call, bad SDP): refused,
    nothing changed. ``str()`` is the reason given back to the proxy."""


class DialogControl:
    # set by DialogTracker.__init__
    dialogs: dict[str, Dialog]
    limits: Limits
    guard: DialogGuard
    max_ports: int
    _timer_at: dict[str, float]

    # and, from DialogTracker and DialogTimers: _end(d, now, reason, trigger), _schedule(call_id)
    _end: Callable[[Dialog, float, str, str | None], DialogTerminated]
    _schedule: Callable[[str], None]

    # -- the commands ------------------------------------------------------------------------------

    def control_offer(self, call_id: str, from_tag: str, to_tag: str | None, body: bytes, now: float,
                      source: Address | None = None) -> list[Event]:
        """An offer the proxy forwards: a new call (no live dialog of that Call-ID), the call's first
        offer again (a retransmission, another branch, or the INVITE already seen on the wire: nothing
        changes), or an offer inside the dialog (a re-INVITE or UPDATE, from either side)."""
        sdp = self._sdp(call_id, body)
        d = self.dialogs.get(call_id)
        if d is None or d.state == "terminated":
            return self._new_call(call_id, from_tag, sdp, now, source)
        leg, side = self._leg(d, from_tag, to_tag)
        if leg is None:  # the initial offer again
            if d.invite_offer is None and d.state != "confirmed":
                d.invite_offer = Offer(sdp, "caller", (d.invite_cseq, "INVITE"))  # the wire's INVITE had none
            return []
        if (hit := self.guard.offer(call_id, now, source)) is not None:
            return [hit]
        d.last_activity = max(d.last_activity, now)
        # an ng offer's CSeq is unknown: a negative one, which no response seen on the wire answers
        leg.offer = Offer(sdp, side, (-1 - len(leg.answered), "INVITE"))
        return []

    def control_answer(self, call_id: str, from_tag: str, to_tag: str, body: bytes, now: float,
                       source: Address | None = None) -> list[Event]:
        """The answer the proxy forwards (From and To tags of the response): to the offer pending in
        that dialog, else to the call's first offer. The dialog is confirmed by it."""
        if not to_tag:
            raise ControlError("answer without to-tag")
        sdp = self._sdp(call_id, body)
        d = self._live(call_id)
        tag = self._answerer(d, from_tag, to_tag)
        leg = d.legs.get(tag)
        if leg is None and d.state == "confirmed":
            raise ControlError(f"to-tag {tag[:80]!r} is not the call's answered dialog")
        if (leg is None or leg.offer is None) and d.invite_offer is None:
            raise ControlError("no offer waiting for this answer")
        if leg is None and (hit := self.guard.fork(d, tag, now, source)) is not None:
            return [hit]
        if leg is not None and leg.offer is None and leg.invite_answered and leg.answered:
            return []  # its offers are answered already (seen on the wire): the same answer again
        # from here on nothing can fail
        if leg is None:
            leg = d.legs[tag] = Leg(tag)
        d.last_activity = max(d.last_activity, now)
        events: list[Event] = []
        if d.state != "confirmed":
            d.state, d.to_tag, d.refreshed = "confirmed", tag, now
            for other in [t for t in d.legs if t != tag]:
                del d.legs[other]  # the forks that did not answer
            events.append(DialogConfirmed(call_id, now, tag, ANSWER_TRIGGER))
        if leg.offer is not None:
            events += answer(d, leg, sdp, now, ANSWER_TRIGGER, source, self.max_ports)
        else:
            assert d.invite_offer is not None
            # tentative: a later answer to the same offer (a 183's, then the 200's) may revise it
            leg.invite_answered, leg.tentative = True, True
            events += apply_answer(d, leg, d.invite_offer, sdp, now, ANSWER_TRIGGER, source, self.max_ports)
        self._schedule(call_id)
        return events

    def control_delete(self, call_id: str, from_tag: str, now: float, to_tag: str = "") -> list[Event]:
        """The proxy is done with the call (BYE, CANCEL, a failure): the dialog ends. With the To tag of
        one unanswered fork while others remain (one branch failed), only that fork goes."""
        d = self._live(call_id)
        if from_tag and from_tag != d.from_tag and from_tag not in d.legs:
            raise ControlError(f"from-tag {from_tag[:80]!r} is not the call's")
        if to_tag and d.state != "confirmed" and to_tag in d.legs and len(d.legs) > 1 and to_tag != d.to_tag:
            del d.legs[to_tag]
            return []
        ev = self._end(d, now, "ng-delete", DELETE_TRIGGER)
        self._schedule(call_id)
        return [ev]

    # -- helpers -----------------------------------------------------------------------------------

    def _sdp(self, call_id: str, body: bytes) -> SessionDescription:
        if not body:
            raise ControlError("no sdp")
        try:
            return parse_sdp(body, self.limits)
        except SdpError as exc:
            what = "SDP beyond a cap" if isinstance(exc, Capped) else "bad SDP"
            raise ControlError(f"{what}: {exc}") from None

    def _live(self, call_id: str) -> Dialog:
        d = self.dialogs.get(call_id)
        if d is None or d.state == "terminated":
            raise ControlError("unknown call-id")
        return d

    def _new_call(self, call_id: str, from_tag: str, sdp: SessionDescription, now: float,
                  source: Address | None) -> list[Event]:
        if not from_tag:
            raise ControlError("offer without from-tag")
        admitted, events = self.guard.admit(call_id, source, now, self.dialogs, self._timer_at)
        if not admitted:
            return events
        d = Dialog(call_id, from_tag, None, 0, now, last_activity=now)
        d.invite_offer = Offer(sdp, "caller", (0, "INVITE"))
        self.dialogs[call_id] = d
        endpoints, refused = offered_endpoints(sdp, self.max_ports, call_id, now, source)
        # SipSeen starts the call's timeline as an INVITE would (no message: nothing else reads one)
        events += [SipSeen(call_id, now, "INVITE", None, OFFER_TRIGGER, None, source), *refused,
                   MediaOffered(call_id, now, endpoints, OFFER_TRIGGER, None)]
        self._schedule(call_id)
        return events

    @staticmethod
    def _leg(d: Dialog, from_tag: str, to_tag: str | None) -> tuple[Leg | None, str]:
        """The dialog an offer belongs to and who made it; (None, caller): the call's first offer."""
        if from_tag == d.from_tag:
            leg = d.legs.get(to_tag) if to_tag else None
            if leg is None and to_tag and d.state == "confirmed":
                raise ControlError(f"to-tag {to_tag[:80]!r} is not the call's answered dialog")
            return leg, "caller"
        if to_tag and to_tag == d.from_tag and from_tag in d.legs:
            return d.legs[from_tag], "callee"
        raise ControlError("from-tag and to-tag are not the call's")

    @staticmethod
    def _answerer(d: Dialog, from_tag: str, to_tag: str) -> str:
        """The answering dialog's tag: To of a response to the caller's offer, From of one to the callee's."""
        if from_tag == d.from_tag:
            return to_tag
        if to_tag == d.from_tag and from_tag:
            return from_tag
        raise ControlError("from-tag and to-tag are not the call's")
