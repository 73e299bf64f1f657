"""The dialog tracker's caps (issue 19): how many dialogs it holds in total and per source address,
forks per INVITE, offers per dialog per second, transactions remembered per dialog.

Sans I/O like the tracker: it calls these at the points where an input would make it hold more,
and each cap hit comes back as a :class:`~.events.CapHit` (plus :class:`~.events.DialogEvicted`
for what was dropped to make room). Every operation is O(1) amortised: the queues of candidates
for eviction are kept in the order dialogs started or ended, never scanned.
"""

from __future__ import annotations

from ..media import Endpoint, TooManyPorts, offer_endpoints
from .events import Address, CapHit, DialogEvicted, DialogTerminated, Event
from .limits import Limits
from .offers import Dialog
from .sdp import SessionDescription

UNANSWERED = ("trying", "early")


class _Pool:
    """The dialogs of one scope (all, or one source address), and which of them may be evicted first:
    ended ones (kept only to recognise retransmissions), then unanswered ones, oldest first."""

    __slots__ = ("count", "ended", "unanswered")

    def __init__(self) -> None:
        self.count = 0
        # plain dicts (insertion-ordered; the oldest is the first left): an OrderedDict's rebuild after
        # churn cost milliseconds at 5000 entries, a dict's a fraction (its keys' hashes are kept)
        self.unanswered: dict[str, None] = {}
        self.ended: dict[str, None] = {}

    def victim(self, dialogs: dict[str, Dialog]) -> str | None:
        while self.ended:
            cid = next(iter(self.ended))
            if cid in dialogs:
                return cid
            del self.ended[cid]  # not expected (forget() takes it out), but never evict what is not there
        while self.unanswered:
            cid = next(iter(self.unanswered))
            d = dialogs.get(cid)
            if d is not None and d.state in UNANSWERED:
                return cid
            del self.unanswered[cid]  # answered since: never evicted (its media may be keyed)
        return None


class DialogGuard:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.source_of: dict[str, str] = {}  # tracked call -> the address its INVITE came from
        self.all = _Pool()
        self.by_source: dict[str, _Pool] = {}
        self.offers: dict[str, tuple[float, int]] = {}  # call -> (start of its 1 s window, offers in it)

    def _pools(self, cid: str) -> tuple[_Pool, ...]:
        src = self.source_of.get(cid)
        pool = self.by_source.get(src) if src is not None else None
        return (self.all, pool) if pool is not None else (self.all,)

    # -- what the tracker tells it ------------------------------------------------------------------

    def ended(self, cid: str) -> None:
        """The dialog ended: the first to go when room is needed (only retransmissions are lost)."""
        if cid not in self.source_of:
            return
        for pool in self._pools(cid):
            pool.unanswered.pop(cid, None)
            pool.ended[cid] = None

    def forget(self, cid: str) -> None:
        """The dialog is gone (its linger time over, evicted, or replaced by a new one of the same Call-ID)."""
        if cid not in self.source_of:
            return
        for pool in self._pools(cid):
            pool.count -= 1
            pool.unanswered.pop(cid, None)
            pool.ended.pop(cid, None)
        src = self.source_of.pop(cid, None)
        if src is not None and self.by_source[src].count <= 0:
            del self.by_source[src]
        self.offers.pop(cid, None)

    # -- caps -------------------------------------------------------------------------------------

    def admit(self, cid: str, source: Address | None, now: float, dialogs: dict[str, Dialog],
              timer_at: dict[str, float]) -> tuple[bool, list[Event]]:
        """Room for a new dialog ``cid`` from ``source``: made by evicting the oldest ended, else unanswered,
        dialog of that source (when it is at its cap) or of all (when they are); False when there is none."""
        if cid in self.source_of:
            self.forget(cid)  # its Call-ID again, after the old dialog ended: the old one's place is freed
        src = source[0] if source else ""
        events: list[Event] = []
        pool = self.by_source.get(src)
        lim = self.limits
        for scope, limit, cap in ((pool, lim.max_dialogs_per_source, "dialogs-per-source"),
                                  (self.all, lim.max_dialogs, "dialogs")):
            if scope is None or scope.count < limit:
                continue
            victim = scope.victim(dialogs)
            if victim is None:
                events.append(CapHit(cid, now, cap, limit, "no ended or unanswered dialog to evict: INVITE not "
                                     "tracked", source))
                return False, events
            events.extend(self._evict(victim, cid, cap, limit, now, dialogs, timer_at, source))
        self.source_of[cid] = src
        for p in (self.all, self.by_source.setdefault(src, _Pool())):
            p.count += 1
            p.unanswered[cid] = None
        return True, events

    def _evict(self, victim: str, cid: str, cap: str, limit: int, now: float, dialogs: dict[str, Dialog],
               timer_at: dict[str, float], source: Address | None) -> list[Event]:
        d = dialogs.pop(victim)
        timer_at.pop(victim, None)  # its heap entry is now stale, dropped when it comes up
        vsrc = self.source_of.get(victim) or None
        self.forget(victim)
        where = (vsrc, 0) if vsrc else None
        out: list[Event] = [CapHit(cid, now, cap, limit, f"dialog {victim[:80]} ({d.state}) evicted", source),
                            DialogEvicted(victim, now, cap, d.state, where)]
        if d.state in UNANSWERED:  # what the gateway holds for it (a speculative SA, a timeline) goes
            out.append(DialogTerminated(victim, now, "evicted", None))
        return out

    def fork(self, d: Dialog, to_tag: str | None, now: float, source: Address | None) -> CapHit | None:
        """A response or request opening one more dialog (To tag) of this INVITE beyond the cap."""
        if to_tag in d.legs or to_tag in d.extra:
            return None
        if len(d.legs) + len(d.extra) < self.limits.max_forks:
            return None
        return CapHit(d.call_id, now, "forks", self.limits.max_forks, "one more fork of the INVITE ignored", source)

    def offer(self, cid: str, now: float, source: Address | None) -> CapHit | None:
        """One more offer (re-INVITE, UPDATE) in the dialog: beyond the cap per second it is ignored,
        so that a peer cannot make the gateway re-key a call as fast as it can send."""
        start, n = self.offers.get(cid, (now, 0))
        if now - start >= 1.0 or now < start:
            start, n = now, 0
        self.offers[cid] = (start, n + 1)
        limit = self.limits.max_reinvites_per_second
        if n + 1 <= limit:
            return None
        return CapHit(cid, now, "reinvites-per-second", limit, "offer in the dialog ignored", source)

    def transactions(self, d: Dialog | None, now: float, source: Address | None) -> list[Event]:
        """What the dialog remembers to recognise retransmissions, reset when beyond the cap (one
        retransmission after that looks new, which the tracker takes as a repeat of what it knows)."""
        if d is None or len(d.seen_requests) + len(d.seen_responses) <= self.limits.max_dialog_transactions:
            return []
        d.seen_requests.clear()
        d.seen_responses.clear()
        for leg in d.legs.values():
            leg.answered.clear()
        return [CapHit(d.call_id, now, "dialog-transactions", self.limits.max_dialog_transactions,
                       "transactions remembered for retransmissions reset", source)]


def offered_endpoints(sdp: SessionDescription, max_ports: int, cid: str, now: float,
                      source: Address | None) -> tuple[tuple[Endpoint, ...], list[Event]]:
    """An INVITE's offered endpoints (what speculative keying protects), none beyond the port cap."""
    try:
        return offer_endpoints(sdp, max_ports), []
    except TooManyPorts as exc:
        return (), [CapHit(cid, now, exc.cap, exc.limit, f"offer not keyed ahead of its answer: {exc}", source)]
