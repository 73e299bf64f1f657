"""A peer that lost its IKE state, told by its new IKE_SA rather than by dead-peer detection.

When the peer gateway's charon restarts it forgets our IKE_SA and never says so; dead-peer
detection notices only after its liveness check goes unanswered through every retransmission
(about 12 s with the recommended timers), and until then this gateway's CHILD_SAs for the live
calls send into nothing. charon's own remedy, INITIAL_CONTACT, needs ``unique`` other than
``never``, which a pool of IKE_SAs with the same identities cannot use (keying/strongswan.py).

What tells sooner: with one IKE_SA per peer (``ike_pool = 1``) and a strategy that reuses it, a
gateway never sets up a second IKE_SA to a peer while one is up: charon reuses the one it holds,
whichever side set it up. Only the gateway with the lower address sets it up at its start
(core._establish_pools), and either gateway sets it up again when its charon answers after a
restart. So when the peer sets up a *new* IKE_SA on our member connection while we hold another,
the peer has lost the other one: its charon restarted (a new charon holds nothing), or it gave up
an exchange whose answer never reached it (a half-open IKE_SA on its side, established on ours).
The older one is deleted at once; charon reports its CHILD_SAs down and the calls this gateway
initiated are keyed again on the new IKE_SA (adoption.Recovery), seconds sooner than dead-peer
detection; the calls it answered are the peer's to key again.

The one time two IKE_SAs are both alive: two gateways that start (or whose charons come back) at
once may each set one up before seeing the other's. So an IKE_SA this gateway set up itself is
cleared only once it is older than RACE_S; an answered one always. With an IKE pool the peer's
members all land on our member 0, so a second answered IKE_SA there is normal: not used then.
"""

from __future__ import annotations

from typing import Any

from ..selectors import PeerConfig
from .actions import ClearStaleIke, Outbox, StaleIkeCleared
from .strategies import strategy_of

# two gateways setting up their IKE_SA at once finish within a few round trips of each other; an
# IKE_SA of our own older than this, when the peer sets up a new one, is one the peer lost
RACE_S = 10.0


def stale_ike(peers: tuple[PeerConfig, ...], conn: str, ike: dict[str, Any]) -> ClearStaleIke | None:
    """The clearing an IKE_SA that came up calls for: one this gateway answered, on the member
    connection of a peer with one reused IKE_SA."""
    if ike.get("initiator") == "yes" or not ike.get("uniqueid"):
        return None
    for peer in peers:
        if conn == peer.member(0) and peer.ike_pool == 1 and strategy_of(peer).reuses_ike_sa:
            return ClearStaleIke(peer.name, conn, str(ike["uniqueid"]), RACE_S)
    return None


def report(out: Outbox, r: StaleIkeCleared) -> None:
    """One line when something was cleared (the peer lost its IKE_SA) or the clearing failed; none
    for the usual case, a peer's first IKE_SA."""
    if not r.ok:
        out.log("stale-ike-clear-failed", peer=r.peer, conn=r.conn, reason=r.reason,
                consequence="dead-peer detection clears them (about 12 s with the recommended timers)")
    elif r.cleared:
        out.log("peer-lost-ike", peer=r.peer, conn=r.conn, new_ike=r.keep, cleared=list(r.cleared))
