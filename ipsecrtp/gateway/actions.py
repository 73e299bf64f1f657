"""What the gateway core asks of the world (actions) and what the world tells it back (inputs).

Small frozen dataclasses, in the style of h11's events: the core returns actions, the shell's
executor carries them out on the backends (charon over VICI, policy routing, nftables, xfrm) and
feeds each outcome back as an input, stamped with the time it happened. Nothing here holds a
socket, a thread or a clock. Key material (pre-keyed SAs) is kept out of every repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..keying.derive import DirectionKeys
from ..media import Endpoint
from ..selectors import FlowRule, PeerConfig


class Action:
    """Base of everything the core asks the shell to do."""


@dataclass(frozen=True)
class Log(Action):
    """One decision line (the shell adds the wall-clock ``ts`` and writes it as JSON)."""

    event: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EstablishIke(Action):
    """Set up one of the peer's long-lived IKE_SAs (pool member ``member``: strategies that reuse
    them), unless it is up."""

    peer: str
    attempt: int
    member: int = 0


@dataclass(frozen=True)
class ClearStaleIke(Action):
    """The peer set up a new IKE_SA on ``conn`` that this gateway answered (gateway/peerloss.py):
    every other IKE_SA of ``conn`` this gateway answered, or set up itself more than
    ``own_older_than_s`` ago, is dead; delete them at once (``keep``: the new one's unique id) so
    that charon reports their CHILD_SAs down now."""

    peer: str
    conn: str
    keep: str
    own_older_than_s: float = 10.0


@dataclass(frozen=True)
class InstallChild(Action):
    """Load the call's connection (its one child) and initiate its CHILD_SA: on pool member
    ``member``'s IKE_SA, or with own_conn on an IKE_SA of its own (strategy ike-per-call)."""

    call_id: str
    child: str
    peer: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    own_conn: bool = False
    member: int = 0


@dataclass(frozen=True)
class PermitChild(Action):
    """Responder: a child config with exactly these selectors, for a CHILD_SA the peer initiates
    whose ports the broad template does not hold (a port a NAT chose)."""

    call_id: str
    child: str
    peer: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]


@dataclass(frozen=True)
class RemoveChild(Action):
    """Delete a call's CHILD_SA (found by its id, else by its child name) and its child config; with
    own_conn the call's IKE_SA and connection too; permit: only the responder's child config."""

    call_id: str
    child: str
    peer: str
    uniqueid: str | None
    reason: str
    own_conn: bool = False
    permit: bool = False
    member: int = 0  # the pool member's worker runs it (behind that IKE_SA's own exchanges only)


@dataclass(frozen=True)
class CancelInstall(Action):
    """The call ended before its InstallChild ran: skip it if it has not started (a set-up for a
    call that is over would only cost two exchanges in front of live calls)."""

    child: str


CANCELLED = "cancelled: the call ended before its set-up ran"


@dataclass(frozen=True)
class InstallPrekeyed(Action):
    """Strategy pre-keyed: the call's ESP SAs and policies, derived on both gateways, into the kernel."""

    call_id: str
    local_gw: str
    keys: tuple[DirectionKeys, ...]
    pairs: tuple[tuple[Endpoint, Endpoint], ...]


@dataclass(frozen=True)
class RemovePrekeyed(Action):
    call_id: str
    keys: tuple[DirectionKeys, ...]
    pairs: tuple[tuple[Endpoint, Endpoint], ...]
    reason: str


@dataclass(frozen=True)
class RemoveBlanketRoute(Action):
    """kernel-libipsec: drop charon's catch-all rule into its table (it would tunnel SIP too)."""


@dataclass(frozen=True)
class AddRoute(Action):
    rule: FlowRule


@dataclass(frozen=True)
class DelRoute(Action):
    rule: FlowRule


@dataclass(frozen=True)
class AddDnat(Action):
    """Rewrite media addressed as the SDP says to where the flow really is (keying/dnat.py)."""

    call_id: str
    tag: str
    rules: tuple[tuple[str, int, str, int], ...]
    reason: str


@dataclass(frozen=True)
class DelDnat(Action):
    tag: str


# --- inputs: outcomes of actions and charon's events --------------------------------------------

@dataclass(frozen=True)
class Journal(Action):
    """Remember a keyed call in the controller's state directory (a restarted controller adopts it)."""

    call_id: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class Unjournal(Action):
    call_id: str


@dataclass(frozen=True)
class SetPeer(Action):
    """Replace what charon holds for one peer (a re-read configuration, SIGHUP): its IKE_SAs, its
    connections and its credential go; ``peer`` (None: the peer was removed) is loaded in their
    place. Asked only once no SA of a call of the old peer is left (gateway/reconfig.py)."""

    name: str
    peer: PeerConfig | None


@dataclass(frozen=True)
class GuardMedia(Action):
    """The data plane for the peers now configured: the media prefixes kept from the WAN unless
    keyed (protect = required), the RTP range, and (kernel-libipsec) every peer's prefixes routed."""

    guarded: tuple[str, ...]
    rtp: tuple[int, int]
    reach: tuple[str, ...]


class Input:
    """Base of what the shell feeds back into the core besides packets and timers."""


@dataclass(frozen=True)
class IkeResult(Input):
    peer: str
    attempt: int
    ok: bool
    member: int = 0
    ms: float = 0.0
    reason: str = ""
    already: bool = False  # an IKE_SA (or a child on one) was up already: nothing was done


@dataclass(frozen=True)
class StaleIkeCleared(Input):
    """What ClearStaleIke found and deleted (the unique ids), or why it could not."""

    peer: str
    conn: str
    keep: str
    cleared: tuple[str, ...]
    ok: bool = True
    reason: str = ""


@dataclass(frozen=True)
class InstallResult(Input):
    call_id: str
    child: str
    ok: bool
    started: float  # when the initiate was sent
    finished: float  # when charon answered it
    reason: str = ""


@dataclass(frozen=True)
class PermitResult(Input):
    call_id: str
    child: str
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class RemoveResult(Input):
    call_id: str
    child: str
    ok: bool
    reason: str = ""
    uniqueid: str | None = None  # the SA found and deleted (by name when its id was not known)


@dataclass(frozen=True)
class PrekeyResult(Input):
    call_id: str
    ok: bool
    started: float
    finished: float
    reason: str = ""
    removed: bool = False  # the result of a RemovePrekeyed
    spis: tuple[int, ...] = ()


@dataclass(frozen=True)
class DnatResult(Input):
    call_id: str
    tag: str
    ok: bool
    rules: tuple[tuple[str, int, str, int], ...] = ()  # the action's, for the log line
    reason: str = ""  # the action's: why it translates
    error: str = ""


@dataclass(frozen=True)
class ChildUpDown(Input):
    """charon's child-updown, one CHILD_SA per input (the event may carry several)."""

    up: bool
    ike: str  # the connection name of its IKE_SA
    child: dict[str, Any]


@dataclass(frozen=True)
class IkeUpDown(Input):
    up: bool
    conn: str
    ike: dict[str, Any]


@dataclass(frozen=True)
class EventsLost(Input):
    """The shell's charon event session broke."""

    reason: str


@dataclass(frozen=True)
class CharonReconnected(Input):
    """charon answers again after the session broke; the shell has loaded the peers again.
    ``children``: the names of the CHILD_SAs charon holds now (none after a restart)."""

    children: frozenset[str]
    outage_s: float


@dataclass(frozen=True)
class PeerSet(Input):
    """The outcome of :class:`SetPeer`."""

    name: str
    ok: bool
    reason: str = ""


class Outbox(list[Action]):
    """Where the core's parts put their actions during one input; the core hands them out."""

    def log(self, event: str, **fields: Any) -> None:
        self.append(Log(event, fields))
