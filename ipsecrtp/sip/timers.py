"""The dialog tracker's timers: Timer C for an unanswered INVITE (RFC 3261 §16.6), RFC 4028 session
timers, media inactivity, and how long an ended dialog is kept for retransmissions.

A mixin of :class:`~.dialog.DialogTracker`, apart so that each part stays readable: deadlines in a
:class:`~.timerheap.TimerHeap` (the earliest in O(log n)), fired through ``next_timer`` and
``handle_timer(now)`` in the style of aioquic, at most ``timer_batch`` dialogs per call.
"""

from __future__ import annotations

from .events import DialogTerminated, Event
from .guard import DialogGuard
from .offers import Dialog
from .timerheap import TimerHeap


class DialogTimers:
    # set by DialogTracker.__init__
    dialogs: dict[str, Dialog]
    linger: float
    invite_timeout: float
    media_timeout: float | None
    session_timer_grace: float
    timer_batch: int | None
    guard: DialogGuard
    _timers: TimerHeap
    _timer_at: dict[str, float]

    def _end(self, d: Dialog, now: float, reason: str, trigger: str | None) -> DialogTerminated:
        raise NotImplementedError

    def _deadline(self, d: Dialog) -> float | None:
        if d.state == "terminated":
            return (d.ended or 0.0) + self.linger
        if d.state in ("trying", "early"):
            return d.last_activity + self.invite_timeout
        times = []
        if self.media_timeout is not None:
            times.append(d.last_activity + self.media_timeout)
        if d.session_expires is not None:
            times.append(d.refreshed + d.session_expires + self.session_timer_grace)
        return min(times) if times else None

    def _schedule(self, call_id: str) -> None:
        d = self.dialogs.get(call_id)
        t = self._deadline(d) if d is not None else None
        if t is not None and (call_id not in self._timer_at or t < self._timer_at[call_id]):
            self._timers.push(t, call_id, len(self.dialogs))

    # with timer_batch (a live loop): heap entries looked at per call at most. Stale ones (dialogs
    # evicted in a flood) can be thousands due at once; dropping them is spread over calls, the time
    # returned then being the earliest entry's, which is never later than a real deadline
    POPS = 256

    def next_timer(self) -> float | None:
        budget = self.POPS if self.timer_batch is not None else -1
        while (top := self._timers.peek()) is not None:
            t, cid = top
            if budget == 0:
                return t
            budget -= 1
            if self._timer_at.get(cid) != t:
                self._timers.pop()  # superseded by an earlier entry
                continue
            d = self.dialogs.get(cid)
            real = self._deadline(d) if d is not None else None
            if real == t:
                return t
            self._timers.pop()  # its dialog is gone, or activity moved the deadline later
            del self._timer_at[cid]
            self._schedule(cid)
        return None

    def handle_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        due: list[str] = []
        pops = 0
        while (top := self._timers.peek()) is not None and top[0] <= now and \
                (self.timer_batch is None or (len(due) < self.timer_batch and pops < self.POPS)):
            pops += 1
            _, cid = self._timers.pop()
            if self._timer_at.get(cid) is not None and self._timer_at[cid] <= now:
                del self._timer_at[cid]
                due.append(cid)
        for cid in due:
            d = self.dialogs.get(cid)
            if d is None:
                continue
            events.extend(self._expire(cid, d, now))
            self._schedule(cid)
        return events

    def _expire(self, cid: str, d: Dialog, now: float) -> list[Event]:
        """What is due for one dialog now (its heap entry may have come early: then nothing)."""
        if d.state == "terminated":
            if now >= (d.ended or 0.0) + self.linger:
                del self.dialogs[cid]
                self.guard.forget(cid)
        elif d.state in ("trying", "early") and now >= d.last_activity + self.invite_timeout:
            return [self._end(d, now, "timeout", None)]
        elif d.state == "confirmed":
            if d.session_expires is not None and now >= d.refreshed + d.session_expires + self.session_timer_grace:
                return [self._end(d, now, "session-expired", None)]
            if self.media_timeout is not None and now >= d.last_activity + self.media_timeout:
                return [self._end(d, now, "media-timeout", None)]
        return []
