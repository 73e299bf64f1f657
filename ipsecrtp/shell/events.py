"""charon's events for the shell: a listener thread on its own VICI session (VICI runs one command
at a time per session, and a listener holds its session), turned into the core's inputs; and the
recording executor that stands in for the real one in a dry run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..gateway.actions import Action, ChildUpDown, EventsLost, IkeUpDown, Input, Log
from ..keying.strongswan import KeyingError, listen

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.25, 2.0  # back-off while charon does not answer


class CharonEvents:
    def __init__(self, vici: str, post: Callable[[Input], None], stopping: threading.Event,
                 reconnected: Callable[[float], Input]) -> None:
        self.vici, self._post, self.stopping, self._reconnected = vici, post, stopping, reconnected

    def run(self, ready: threading.Event) -> None:
        """charon's events; when the session breaks (charon stopped, crashed or restarted) it is
        opened again with a short back-off, the peers are loaded again and the core is told which
        CHILD_SAs charon still holds, so that it keys the calls that lost theirs."""
        lost_at: float | None = None
        backoff = RECONNECT_MIN_S
        while not self.stopping.is_set():
            try:
                for name, payload, _t in listen(self.vici):
                    ready.set()
                    if lost_at is not None:
                        self._post(self._reconnected(time.time() - lost_at))
                        lost_at, backoff = None, RECONNECT_MIN_S
                    if self.stopping.is_set():
                        return
                    if name in ("child-updown", "ike-updown"):
                        for inp in events_to_inputs(name, payload):
                            self._post(inp)
            except (KeyingError, OSError) as exc:
                if self.stopping.is_set():
                    return
                if lost_at is None:
                    lost_at = time.time()
                    self._post(EventsLost(str(exc)))
                ready.set()
                self.stopping.wait(backoff)
                backoff = min(RECONNECT_MAX_S, backoff * 2)


def events_to_inputs(name: str, payload: dict) -> list[Input]:
    """One input per CHILD_SA of a child-updown (per IKE_SA of an ike-updown)."""
    up = payload.get("up") == "yes"
    out: list[Input] = []
    for ike_name, ike in payload.items():
        if not isinstance(ike, dict):
            continue
        if name == "ike-updown":
            out.append(IkeUpDown(up, ike_name, ike))
        else:
            out.extend(ChildUpDown(up, ike_name, child) for child in ike.get("child-sas", {}).values())
    return out


class RecordingExecutor:
    """Dry run and offline replay: every action is recorded, none is carried out; log lines are
    written (the decisions an operator wants to see)."""

    def __init__(self, log: Callable[..., None] | None = None) -> None:
        self.log = log
        self.actions: list[tuple[float, Action]] = []

    def submit(self, action: Action, now: float = 0.0) -> list[tuple[float, Input]]:
        self.actions.append((now, action))
        if isinstance(action, Log) and self.log is not None:
            self.log(action.event, **action.fields)
        return []
