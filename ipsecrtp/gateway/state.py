"""Per-SA keying state: an explicit enum and transition table (h11-style), not a set of flags.

One :class:`SaKeying` is one CHILD_SA (or pre-keyed SA pair) of a call: the exact one fitted to the
offer/answer, a speculative one keyed from the offer, or a responder's view of the peer's. The
transitions are data: :data:`TRANSITIONS` maps (state, happening) to the next state, and anything
not in it is a :class:`StateError` (a bug, never an input the world can cause: the core only
advances an SA on inputs it has checked belong to it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..keying.derive import DirectionKeys
from ..media import Endpoint, Flow
from ..selectors import FlowRule, PeerConfig


class KeyState(enum.Enum):
    WAITING = "waiting"  # responder: the peer initiates, nothing asked of charon
    SHARING = "sharing"  # initiator, legs = "shared": its flows are in the peer's next shared CHILD_SA
    PERMITTING = "permitting"  # responder: a child config of its own is being loaded
    REQUESTED = "requested"  # initiator: install asked, no word back yet
    ANNOUNCED = "announced"  # charon said child-updown up, its initiate has not returned yet
    INITIATED = "initiated"  # initiate returned ok, child-updown not seen yet
    CONFIRMING = "confirming"  # initiate reported a failure: child-updown may still come (briefly)
    UP = "up"  # installed and confirmed
    FAILED = "failed"  # never came up
    DRAINING = "draining"  # unkeyed: removed once the teardown delay is over (and its set-up done)
    REMOVING = "removing"  # removal asked
    GONE = "gone"


class Happening(enum.Enum):
    CHILD_UP = "child-up"
    INSTALL_OK = "install-ok"
    INSTALL_FAILED = "install-failed"
    PERMITTED = "permitted"
    CONFIRM_TIMEOUT = "confirm-timeout"
    UNKEY = "unkey"
    REMOVE = "remove"
    REMOVED = "removed"
    CHILD_DOWN = "child-down"


S, H = KeyState, Happening
TRANSITIONS: dict[tuple[KeyState, Happening], KeyState] = {
    (S.WAITING, H.CHILD_UP): S.UP,
    (S.WAITING, H.UNKEY): S.GONE,  # the initiator deletes it
    (S.SHARING, H.CHILD_UP): S.UP,  # a shared CHILD_SA covering its flows came up (gateway/shared.py)
    (S.SHARING, H.UNKEY): S.DRAINING,  # it leaves the shared CHILD_SA after the teardown delay
    (S.PERMITTING, H.PERMITTED): S.WAITING,
    (S.PERMITTING, H.INSTALL_FAILED): S.FAILED,
    (S.PERMITTING, H.UNKEY): S.DRAINING,
    (S.REQUESTED, H.CHILD_UP): S.ANNOUNCED,
    (S.REQUESTED, H.INSTALL_OK): S.INITIATED,
    (S.REQUESTED, H.INSTALL_FAILED): S.CONFIRMING,
    (S.REQUESTED, H.UNKEY): S.DRAINING,
    (S.ANNOUNCED, H.INSTALL_OK): S.UP,
    (S.ANNOUNCED, H.INSTALL_FAILED): S.UP,  # it came up all the same: recovered
    (S.ANNOUNCED, H.UNKEY): S.DRAINING,
    (S.INITIATED, H.CHILD_UP): S.UP,
    (S.INITIATED, H.CONFIRM_TIMEOUT): S.FAILED,
    (S.INITIATED, H.UNKEY): S.DRAINING,
    (S.CONFIRMING, H.CHILD_UP): S.UP,
    (S.CONFIRMING, H.CONFIRM_TIMEOUT): S.FAILED,
    (S.CONFIRMING, H.UNKEY): S.DRAINING,
    (S.UP, H.UNKEY): S.DRAINING,
    (S.UP, H.CHILD_DOWN): S.UP,  # a responder's view, or a rekey's old SA: the call decides
    (S.FAILED, H.UNKEY): S.DRAINING,  # still remove whatever charon may hold under its name
    # an initiator's CHILD_SA that showed up after all (charon answered late: it was hung, or busy
    # past the wait): the call is protected by it, so it counts as keyed, late (keying-recovered)
    (S.FAILED, H.CHILD_UP): S.UP,
    (S.DRAINING, H.REMOVE): S.REMOVING,
    (S.DRAINING, H.INSTALL_OK): S.DRAINING,  # the set-up finished after the call ended
    (S.DRAINING, H.INSTALL_FAILED): S.DRAINING,
    (S.DRAINING, H.CHILD_UP): S.DRAINING,
    (S.DRAINING, H.PERMITTED): S.DRAINING,
    (S.REMOVING, H.REMOVED): S.GONE,
    (S.REMOVING, H.CHILD_UP): S.REMOVING,
    (S.REMOVING, H.INSTALL_OK): S.REMOVING,
    (S.REMOVING, H.INSTALL_FAILED): S.REMOVING,
}

# states in which a set-up asked of charon has not answered yet: a removal waits for it, so that
# one call's teardown never overtakes its own set-up
SETTING_UP = frozenset({KeyState.REQUESTED, KeyState.ANNOUNCED, KeyState.PERMITTING})
# how long a CHILD_SA may take to show up after its initiate answered (either way)
CONFIRM_WAIT = 3.0


class StateError(RuntimeError):
    pass


@dataclass
class SaKeying:
    """One SA of a call and everything needed to remove it."""

    call_id: str
    peer: PeerConfig
    role: str  # initiator, responder (pre-keyed: initiator, it removes its own)
    flows: tuple[Flow, ...]
    rules: frozenset[FlowRule]
    state: KeyState
    generation: int = 0
    answered_at: float = 0.0
    child: str | None = None
    uniqueid: str | None = None
    speculative: bool = False  # strategy c: keyed from the offer, before any answer
    spec: SaKeying | None = None  # the speculative SA this exact one replaces once up
    own_conn: bool = False  # ike-per-call: a connection (and IKE_SA) of its own
    member: int = 0  # the peer's pool member whose IKE_SA carries it (its connection equals that member's)
    shared: bool = False  # initiator, legs = "shared": its flows ride the peer's shared CHILD_SA
    permit: bool = False  # responder: a child config of its own (a port outside the template's)
    dnat: str | None = None  # the nftables chains translating a NAT address back
    prekeyed: tuple[tuple[DirectionKeys, ...], tuple[tuple[Endpoint, Endpoint], ...]] | None = None
    set_up_pending: bool = False  # the install has not answered: removal waits for it
    remove_due: float | None = None  # DRAINING: when the teardown delay is over
    remove_reason: str = ""
    confirm_due: float | None = None  # INITIATED/CONFIRMING: give up waiting for child-updown then
    install_started: float | None = None
    install_finished: float | None = None
    install_error: str = ""
    child_info: dict = field(default_factory=dict)  # charon's view of the CHILD_SA once up

    def journal_entry(self, from_tag: str | None, to_tag: str | None) -> dict:
        """The call as a restarted controller adopts it (no key material: tags, flows, names)."""
        return {"call_id": self.call_id, "from_tag": from_tag, "to_tag": to_tag, "peer": self.peer.name,
                "role": self.role, "child": self.child, "generation": self.generation, "member": self.member,
                "flows": [f.to_json() for f in self.flows]} | ({"shared": True} if self.shared else {})

    def advance(self, happening: Happening) -> KeyState:
        nxt = TRANSITIONS.get((self.state, happening))
        if nxt is None:
            raise StateError(f"{self.call_id} {self.child}: no transition from {self.state.value} on "
                             f"{happening.value}")
        self.state = nxt
        return nxt

    def can(self, happening: Happening) -> bool:
        return (self.state, happening) in TRANSITIONS

    @property
    def terminated(self) -> bool:
        return self.state in (KeyState.DRAINING, KeyState.REMOVING, KeyState.GONE)
