"""The four keying strategies, each an object with one interface (no strategy strings tested
across the core). Names are the configuration's; letters are the design discussion's.

- ``ike-per-call`` (a): an IKE_SA per call, set up with the call and deleted with it (2 RTT);
- ``child-per-call`` (b): one long-lived IKE_SA per peer, one CREATE_CHILD_SA per call (1 RTT);
- ``speculative`` (c): b, started from the offer by the offerer's gateway so that the SA is up
  before the answer, then fitted to the answer;
- ``pre-keyed`` (0): both gateways derive the call's SAs from the peer secret (0 RTT, kernel ESP).
"""

from __future__ import annotations

from ..keying.derive import derive
from ..media import Endpoint, Flow
from ..selectors import PeerConfig
from .actions import Action, InstallChild, InstallPrekeyed, RemoveChild, RemovePrekeyed
from .state import SaKeying


class Strategy:
    name = ""
    letter = ""
    reuses_ike_sa = False  # one IKE_SA per peer, set up at start by the lower address
    keys_offer = False  # keys the offerer's side from the offer, before any answer
    own_conn = False  # each call's child lives in a connection (and IKE_SA) of its own
    both_sides = False  # both gateways install (no initiator/responder split)

    def initiator_endpoint(self, flow: Flow) -> Endpoint:
        """The endpoint whose gateway initiates: the answerer's, which sees the answer first."""
        return flow.answerer

    def install(self, st: SaKeying, local_ts: list[str], remote_ts: list[str]) -> Action:
        assert st.child is not None
        return InstallChild(st.call_id, st.child, st.peer.name, tuple(local_ts), tuple(remote_ts), self.own_conn,
                            st.member)

    def remove(self, st: SaKeying, reason: str) -> Action:
        assert st.child is not None
        return RemoveChild(st.call_id, st.child, st.peer.name, st.uniqueid, reason, own_conn=self.own_conn,
                           permit=st.permit, member=st.member)


class IkePerCall(Strategy):
    name, letter, own_conn = "ike-per-call", "a", True


class ChildPerCall(Strategy):
    name, letter, reuses_ike_sa = "child-per-call", "b", True


class Speculative(ChildPerCall):
    name, letter, keys_offer = "speculative", "c", True

    def initiator_endpoint(self, flow: Flow) -> Endpoint:
        # the offerer's gateway keyed speculatively, so it also fits the SA to the answer
        return flow.offerer


class PreKeyed(Strategy):
    name, letter, both_sides = "pre-keyed", "0", True

    def install_prekeyed(self, st: SaKeying, peer: PeerConfig,
                         pairs: tuple[tuple[Endpoint, Endpoint], ...]) -> InstallPrekeyed:
        keys = derive(peer.psk, st.call_id, st.generation, peer.ike_local, peer.remote_id)
        st.prekeyed = (keys, pairs)
        return InstallPrekeyed(st.call_id, peer.ike_local, keys, pairs)

    def remove(self, st: SaKeying, reason: str) -> Action:
        assert st.prekeyed is not None
        return RemovePrekeyed(st.call_id, st.prekeyed[0], st.prekeyed[1], reason)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (IkePerCall(), ChildPerCall(), Speculative(), PreKeyed())}


def strategy_of(peer: PeerConfig) -> Strategy:
    return STRATEGIES[peer.strategy]
