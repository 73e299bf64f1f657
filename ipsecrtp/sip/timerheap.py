"""The dialog tracker's deadlines: a heap of (when, call) with lazy deletion, whose stale entries
cannot pile up and are never cleared in one long pass.

An entry is live while ``at[call] == when``; a superseded deadline or a dialog evicted or gone
leaves a stale one, dropped when it comes to the top. Evictions under a flood leave one per INVITE,
due only at Timer C (180 s later), so once stale entries outnumber live ones the heap is rebuilt
incrementally: the old heap is drained a few entries per push into a new one (removing a binary
heap's last element keeps it a heap, so the old one stays usable meanwhile and the earliest entry
is the smaller of the two tops). Every operation is O(log n); no call costs O(n).
"""

from __future__ import annotations

import heapq

Entry = tuple[float, str]


class TimerHeap:
    STEP = 32  # old entries moved per push while rebuilding (more than 2: the rebuild ends before the next)

    def __init__(self) -> None:
        self.heap: list[Entry] = []
        self.old: list[Entry] = []  # the heap being drained into ``heap``
        self.at: dict[str, float] = {}  # call -> its live entry's time

    def __len__(self) -> int:
        return len(self.heap) + len(self.old)

    def push(self, when: float, call: str, live: int) -> None:
        """A new earliest deadline for ``call``; ``live``: how many entries should be live (the dialogs)."""
        heapq.heappush(self.heap, (when, call))
        self.at[call] = when
        if not self.old and len(self.heap) > 2 * live + 64:
            self.old, self.heap = self.heap, []
        for _ in range(min(self.STEP, len(self.old))):
            t, c = self.old.pop()
            if self.at.get(c) == t:
                heapq.heappush(self.heap, (t, c))

    def peek(self) -> Entry | None:
        if self.old and (not self.heap or self.old[0] < self.heap[0]):
            return self.old[0]
        return self.heap[0] if self.heap else None

    def pop(self) -> Entry:
        if self.old and (not self.heap or self.old[0] < self.heap[0]):
            return heapq.heappop(self.old)
        return heapq.heappop(self.heap)
