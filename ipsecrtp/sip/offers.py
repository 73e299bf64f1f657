"""Per-call dialog state and offer/answer (RFC 3264) for the tracker: which leg's flows are the
call's, and the event each answer makes. Pure functions over :class:`Dialog`; ``dialog.py``
decides when they apply."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..media import DEFAULT_MAX_PORTS, Flow, TooManyPorts, flows, notes
from .events import Event, MediaChanged, MediaNegotiated, MediaRefused, MediaRenegotiated
from .sdp import SessionDescription, end_to_end_srtp

# --- state ------------------------------------------------------------------------------------

@dataclass
class Offer:
    sdp: SessionDescription
    by: str  # "caller" or "callee"
    cseq: tuple[int, str]


@dataclass
class Leg:
    """One dialog of a call: the INVITE's transaction answered by one UAS (one To tag)."""

    to_tag: str | None
    offer: Offer | None = None  # an offer inside this dialog waiting for its answer
    flows: tuple[Flow, ...] = ()
    invite_answered: bool = False  # the INVITE's own offer got its answer here
    tentative: bool = False  # that answer came in an unreliable 18x: the 2xx may revise it
    answered: set = field(default_factory=set)  # CSeqs whose offer was answered
    notes: tuple[str, ...] = ()
    srtp: str = ""  # the answer's end-to-end SRTP ("sdes", "dtls" or "")


@dataclass
class Dialog:
    call_id: str
    from_tag: str | None
    invite_branch: str | None
    invite_cseq: int
    started: float
    state: str = "trying"  # trying, early, confirmed, terminated
    to_tag: str | None = None  # the confirmed dialog's tag, else the last early one
    invite_offer: Offer | None = None
    legs: dict = field(default_factory=dict)  # to_tag -> Leg
    extra: set = field(default_factory=set)  # tags of further 2xx forks (to be torn down)
    flows: tuple[Flow, ...] = ()
    negotiated: bool = False
    srtp: str = ""  # the call's end-to-end SRTP as last negotiated (offers.publish)
    cancelled: bool = False
    last_activity: float = 0.0
    ended: float | None = None
    session_expires: float | None = None  # RFC 4028 interval from the last 2xx that set it
    refreshed: float = 0.0
    seen_requests: set = field(default_factory=set)  # (branch, method, cseq)
    seen_responses: dict = field(default_factory=dict)  # (to_tag, cseq, status) -> top Via branch

    @property
    def offer(self) -> Offer | None:
        """The offer awaiting an answer, if any (the INVITE's, or one inside the current dialog)."""
        leg = self.legs.get(self.to_tag)
        if leg is not None and leg.offer is not None:
            return leg.offer
        if leg is not None and leg.invite_answered:
            return None
        return self.invite_offer


def same_flows(a: tuple[Flow, ...], b: tuple[Flow, ...]) -> bool:
    def norm(fs: tuple[Flow, ...]) -> set:
        return {(f.stream, f.kind, frozenset(f.endpoints())) for f in fs}
    return norm(a) == norm(b)




def answer(d: Dialog, leg: Leg, sdp: SessionDescription, now: float, trigger: str, source,
           max_ports: int = DEFAULT_MAX_PORTS) -> list[Event]:
    """The answer to the offer pending in this dialog."""
    assert leg.offer is not None
    offer, leg.offer = leg.offer, None
    leg.answered.add(offer.cseq)
    return apply_answer(d, leg, offer, sdp, now, trigger, source, max_ports)

def apply_answer(d: Dialog, leg: Leg, offer: Offer, sdp: SessionDescription, now: float, trigger: str,
                 source, max_ports: int = DEFAULT_MAX_PORTS) -> list[Event]:
    try:
        leg.flows = flows(offer.sdp, sdp, max_ports)
    except TooManyPorts as exc:
        return refuse(d, leg, exc, now, trigger)
    leg.notes = notes(offer.sdp, sdp)
    leg.srtp = end_to_end_srtp(offer.sdp, sdp)
    if d.state == "confirmed" and leg.to_tag != d.to_tag:
        return []
    d.to_tag = leg.to_tag
    return publish(d, leg, now, trigger, source, offer.by)

def refuse(d: Dialog, leg: Leg, exc: TooManyPorts, now: float, trigger: str) -> list[Event]:
    """An offer/answer beyond a cap: this leg has no flows, and if it is the call's, neither has the call
    (its old flows are not what the phones use any more; a later sane offer/answer keys again)."""
    leg.flows, leg.notes = (), (str(exc),)
    if d.state == "confirmed" and leg.to_tag != d.to_tag:
        return []
    d.to_tag = leg.to_tag
    old, d.flows, d.negotiated = d.flows, (), True
    return [MediaRefused(d.call_id, now, str(exc), trigger, exc.cap, exc.limit, old)]

def select(d: Dialog, leg: Leg, now: float, trigger: str, source) -> list[Event]:
    """The confirmed dialog's media becomes the call's (another fork may have answered last)."""
    d.to_tag = leg.to_tag
    if leg.flows and d.flows and not same_flows(d.flows, leg.flows):
        return publish(d, leg, now, trigger, source, "caller")
    return []

def publish(d: Dialog, leg: Leg, now: float, trigger: str, source, offerer: str) -> list[Event]:
    """The call's media is now this leg's: negotiated for the first time, changed, or not."""
    old, new = d.flows, leg.flows
    d.flows = new
    srtp_changed, d.srtp = d.srtp != leg.srtp, leg.srtp  # SRTP dropped on the same ports: keyed again
    if not old:
        if new or not d.negotiated:  # a first answer that leaves nothing to key is still reported
            d.negotiated = True
            return [MediaNegotiated(d.call_id, now, new, trigger, source, offerer, leg.to_tag, leg.notes, leg.srtp)]
        return []
    if same_flows(old, new) and not srtp_changed:
        return [MediaRenegotiated(d.call_id, now, trigger, leg.notes)]
    return [MediaChanged(d.call_id, now, old, new, trigger, source, leg.to_tag, leg.notes, leg.srtp)]


def adopted(call_id: str, from_tag: str | None, to_tag: str | None, flows: tuple[Flow, ...], now: float) -> Dialog:
    """A confirmed dialog rebuilt from a controller's journal after a restart: its INVITE was seen
    by the previous run, so only what ends or changes it is left to see (a BYE, a re-INVITE, or
    no media any more)."""
    leg = Leg(to_tag, flows=flows, invite_answered=True)
    return Dialog(call_id, from_tag, None, 0, now, state="confirmed", to_tag=to_tag, legs={to_tag: leg},
                  flows=flows, negotiated=True, last_activity=now, refreshed=now)

