"""Per-call timelines inside the gateway core: one ``timeline`` line per call once it is over.

The marks come from what this gateway saw (SIP, IKE and media packets with their capture times,
charon's events with the time the shell received them); ``timing.py`` derives the metrics.
"""

from __future__ import annotations

import collections

from ..sip.events import Event
from ..timing import Budget, CallTimeline, IkePacket, update_timeline, verdict
from .actions import Outbox

LATE_S = 10.0  # after the dialog ended (and the teardown delay), log the timeline whatever is missing


class Timelines:
    def __init__(self, gateway: str, budget: Budget, teardown_delay: float, out: Outbox) -> None:
        self.gateway, self.budget, self.teardown_delay, self.out = gateway, budget, teardown_delay, out
        self.calls: dict[str, CallTimeline] = {}
        self.ike_seen: collections.deque[IkePacket] = collections.deque(maxlen=4096)
        self.ended: dict[str, float] = {}  # call -> when its timeline is logged at the latest

    def get(self, call_id: str | None) -> CallTimeline | None:
        return self.calls.get(call_id) if call_id else None

    def sip_event(self, ev: Event) -> None:
        tl = update_timeline(self.calls, ev, self.gateway)
        if tl is not None and tl.ended is not None and ev.call_id not in self.ended:
            self.ended[ev.call_id] = tl.ended + self.teardown_delay + LATE_S

    def ike(self, packet: IkePacket) -> None:
        self.ike_seen.append(packet)

    def settle(self, call_id: str, now: float, force: bool = False) -> None:
        """Log the call's timeline once its SA is gone (or never came), or when it is late."""
        tl = self.calls.get(call_id)
        if tl is None or (tl.ended is None and not force):
            return
        settled = (tl.sa_up is None or tl.sa_down is not None) and (tl.bye is None or tl.bye_response is not None)
        late = call_id in self.ended and now >= self.ended[call_id]
        if not (settled or late or force):
            return
        lo = tl.keying_started if tl.keying_started is not None else tl.answer_sdp
        if lo is not None and tl.sa_up is not None:
            tl.ike = [p for p in self.ike_seen if lo - 0.001 <= p.time <= tl.sa_up + 0.001]
        d = tl.to_json()
        d["verdict"] = verdict(d["metrics"], self.budget)
        self.out.log("timeline", call=call_id, **{k: v for k, v in d.items() if k != "call_id"})
        del self.calls[call_id]
        self.ended.pop(call_id, None)

    def next_timer(self) -> float | None:
        return min(self.ended.values(), default=None)

    def handle_timer(self, now: float) -> None:
        for call_id in [c for c, due in self.ended.items() if due <= now]:
            self.settle(call_id, now)

    def flush(self, now: float) -> None:
        for call_id in list(self.calls):
            self.settle(call_id, now, force=True)
