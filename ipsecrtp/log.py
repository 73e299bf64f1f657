"""One JSON object per line for every decision: machine-readable and grep-able."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

Listener = Callable[[dict[str, Any]], None]


class DecisionLog:
    def __init__(self, stream: IO[str] | None = None, node: str | None = None) -> None:
        self.stream = stream or sys.stdout
        self.node = node
        self._lock = threading.Lock()
        # observers of every decision (metrics, the control socket): what is counted is exactly
        # what is logged, so the two never disagree
        self.listeners: list[Listener] = []

    def __call__(self, event: str, **fields: Any) -> None:
        rec: dict[str, Any] = {"ts": round(time.time(), 6), "event": event}
        if self.node:
            rec["node"] = self.node
        rec.update(fields)
        line = json.dumps(rec, default=str, separators=(",", ":"))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()
            for listener in self.listeners:
                listener(rec)


def read_log(path: str) -> list[dict]:
    """The JSON lines of a decision log (other lines, and a missing file, give nothing)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    except FileNotFoundError:
        pass
    return out
