"""A re-read configuration's peers applied to a running gateway (SIGHUP, issue 16). Pure.

What an operator asks by editing a peer is what the core does, peer by peer; calls of peers whose
configuration is unchanged are not touched (their SAs, their IKE_SAs, their child configs):

- **added**: charon loads it (:class:`SetPeer`); calls to it are keyed once it is loaded (a call
  answered meanwhile waits, it is not refused).
- **removed**: no new call is keyed to it; its live calls' SAs are removed (after the teardown
  delay, as at a BYE: trust in that peer was withdrawn); once none is left, charon forgets the peer
  (its IKE_SAs, connections and credential).
- **changed**: its live calls' SAs are removed at once, charon's view of the peer is replaced, and
  those calls are keyed again under the new settings (``sa-lost`` / ``sa-recovered`` with reason
  ``peer-changed``: the gap is counted and timed, like a charon restart's). Calls answered while
  it is replaced wait for it.

One change at a time: a reload while one is being applied is refused (one line), nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..media import Flow
from ..selectors import PeerConfig
from .actions import GuardMedia, Outbox, PeerSet, SetPeer
from .adoption import Recovery
from .keying import Keying
from .state import KeyState, SaKeying

PEER_CHANGED, PEER_REMOVED = "peer-changed", "peer-removed"


@dataclass
class Replacing:
    """One peer on its way from ``old`` (what charon holds; None: added) to ``new`` (None: removed)."""

    old: PeerConfig | None
    new: PeerConfig | None
    asked: bool = False  # SetPeer handed out, its PeerSet not back yet
    # calls to key once the new peer is loaded: (call, flows, trigger, srtp)
    waiting: list[tuple[str, tuple[Flow, ...], str, str]] = field(default_factory=list)


def peer_changes(old: tuple[PeerConfig, ...], new: tuple[PeerConfig, ...]) -> dict[str, list[str]]:
    """Peers added, removed and changed, by name."""
    before, after = {p.name: p for p in old}, {p.name: p for p in new}
    return {"added": sorted(after.keys() - before.keys()), "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n])}


def guard_for(peers: tuple[PeerConfig, ...]) -> GuardMedia:
    """The data plane the peers need (either backend's): what the controller installs at start."""
    # each prefix once: an nftables interval set refuses the same element twice in one command
    return GuardMedia(tuple(dict.fromkeys(n for p in peers if p.protect == "required" for n in p.remote_media)),
                      (min(p.rtp_ports[0] for p in peers), max(p.rtp_ports[1] for p in peers)),
                      tuple(dict.fromkeys(n for p in peers for n in p.remote_media)))


class Reconfig:
    def __init__(self, k: Keying, recovery: Recovery, out: Outbox) -> None:
        self.k, self.recovery, self.out = k, recovery, out
        self.replacing: dict[str, Replacing] = {}

    def busy(self) -> bool:
        return bool(self.replacing)

    def waits(self, name: str) -> bool:
        """Calls to this peer wait: it is being loaded or replaced."""
        r = self.replacing.get(name)
        return r is not None and r.new is not None

    def defer(self, call_id: str, peer: PeerConfig, flows: tuple[Flow, ...], trigger: str, srtp: str, t: float) -> bool:
        """Keep a call answered while its peer is loaded or replaced, to key it then."""
        if not self.waits(peer.name):
            return False
        waiting = self.replacing[peer.name].waiting
        waiting[:] = [w for w in waiting if w[0] != call_id]  # its latest media counts
        waiting.append((call_id, flows, trigger, srtp))
        self.out.log("keying-deferred", call=call_id, t=t, peer=peer.name, reason="peer being loaded (reload)")
        return True

    def forget(self, call_id: str) -> None:
        """The dialog ended before its peer was loaded: nothing to key."""
        for r in self.replacing.values():
            r.waiting[:] = [w for w in r.waiting if w[0] != call_id]

    def apply(self, now: float, old: tuple[PeerConfig, ...], new: tuple[PeerConfig, ...]) -> dict[str, list[str]]:
        """Start replacing: the calls of removed and changed peers lose their SAs (changed ones are
        remembered, to key again). The core authorises with ``new`` from now on."""
        changes = peer_changes(old, new)
        before, after = {p.name: p for p in old}, {p.name: p for p in new}
        for name in changes["added"]:
            self.replacing[name] = Replacing(None, after[name])
        for name in changes["removed"] + changes["changed"]:
            r = self.replacing[name] = Replacing(before[name], after.get(name))
            for st in [s for s in self.k.calls.values() if s.peer.name == name]:
                self._unkey(st, r, now)
        self.out.log("reload-applying", **changes, t=now)
        return changes

    def _unkey(self, st: SaKeying, r: Replacing, now: float) -> None:
        if r.new is None:
            self.k.unkey(st.call_id, PEER_REMOVED, now)
            return
        if st.flows:  # a speculative SA (keyed from the offer) has no flows yet: its answer is deferred
            r.waiting.append((st.call_id, st.flows, PEER_CHANGED, ""))
            if st.state is KeyState.UP:
                self.out.log("sa-lost", call=st.call_id, child=st.child, sa=st.uniqueid, reason=PEER_CHANGED, t=now)
                self.recovery.lost.setdefault(st.call_id, (now, PEER_CHANGED))
        self.k.unkey(st.call_id, PEER_CHANGED, now, rekeying=True)

    def poll(self) -> None:
        """Ask charon to replace each peer none of whose SAs is left (their removals answered)."""
        for name, r in self.replacing.items():
            if not r.asked and not self._holds(name):
                r.asked = True
                self.out.append(SetPeer(name, r.new))

    def _holds(self, name: str) -> bool:
        k = self.k
        sas = (*k.calls.values(), *k.timed.values(), *k.by_child.values(), *k.prekey_installing.values(),
               *k.prekey_removing.values())
        return any(s.peer.name == name and s.state is not KeyState.GONE for s in sas) or \
            any(ps.peer.name == name for ps, _gen in k.shared.by_child.values())

    def peer_set(self, r: PeerSet, now: float) -> tuple[Replacing | None, list[tuple[str, tuple[Flow, ...], str, str]]]:
        """charon holds the new peer (or forgot the removed one): the calls that waited for it."""
        rep = self.replacing.pop(r.name, None)
        if rep is None:
            return None, []
        if not r.ok:
            self.out.log("reload-failed", peer=r.name, reason=r.reason, calls_unkeyed=len(rep.waiting),
                         consequence="calls to this peer are not keyed until a reload or restart loads it")
            for call, *_ in rep.waiting:
                self.recovery.forget(call)
            return rep, []
        self.out.log("peer-removed" if rep.new is None else "peer-loaded", peer=r.name, t=now, live=True,
                     calls_to_key=len(rep.waiting))
        return rep, rep.waiting
