"""charon's events for the shell: a listener thread on its own VICI session (VICI runs one command
at a time per session, and a listener holds its session), turned into the core's inputs; and the
recording executor that stands in for the real one in a dry run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..gateway.actions import (
    Action,
    ChildUpDown,
    ClearStaleIke,
    EstablishIke,
    EventsLost,
    IkeResult,
    IkeUpDown,
    Input,
    InstallChild,
    InstallResult,
    Log,
    PeerSet,
    PermitChild,
    PermitResult,
    RemoveChild,
    RemoveResult,
    SetPeer,
    StaleIkeCleared,
)
from ..keying.strongswan import COMMAND_TIMEOUT_S, Charon, CharonTimeout, KeyingError, listen
from ..timescale import scaled

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.25, 2.0  # back-off while charon does not answer
# while charon is hung, how long a probe (a new session's `version`) waits: a healthy charon answers
# in about a millisecond, and the listener polls every 0.5 s, so charon's return is seen within ~1 s
# (scaled on a far slower machine: a loaded TCG guest answers in seconds, not milliseconds)
PROBE_S = scaled(0.5)


class CharonHealth:
    """Whether charon answers. A worker whose command timed out marks it hung; until the listener's
    probe sees it answer again, set-ups fail at once instead of each waiting out its own time-out
    (a hung charon holds no later call beyond one time-out). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hung_since: float | None = None
        self.op = ""

    def timed_out(self, op: str, now: float) -> bool:
        """Record a time-out; True when it starts a hang (the first one seen)."""
        with self._lock:
            if self.hung_since is not None:
                return False
            self.hung_since, self.op = now, op
            return True

    def hung(self) -> float | None:
        with self._lock:
            return self.hung_since

    def resumed(self, now: float) -> float | None:
        """charon answered: how long it was hung, or None if it was not."""
        with self._lock:
            since, self.hung_since = self.hung_since, None
        return None if since is None else now - since


def probe(vici: str, wait: float = PROBE_S) -> bool:
    """Does charon answer a command (on a session of its own) within ``wait``?"""
    try:
        c = Charon(vici, timeout=wait)
    except KeyingError:
        return False
    try:
        c.version()
        return True
    except KeyingError:
        return False
    finally:
        c.close()


class CharonEvents:
    def __init__(self, vici: str, post: Callable[[Input], None], stopping: threading.Event,
                 reconnected: Callable[[float], Input], health: CharonHealth | None = None,
                 timeout: float = COMMAND_TIMEOUT_S, log: Callable[..., None] | None = None) -> None:
        self.vici, self._post, self.stopping, self._reconnected = vici, post, stopping, reconnected
        self.health = health if health is not None else CharonHealth()
        self.timeout, self.log = timeout, log

    def run(self, ready: threading.Event) -> None:
        """charon's events; when the session breaks (charon stopped, crashed or restarted) it is
        opened again with a short back-off, the peers are loaded again and the core is told which
        CHILD_SAs charon still holds, so that it keys the calls that lost theirs."""
        lost_at: float | None = None
        backoff, next_probe = RECONNECT_MIN_S, 0.0
        while not self.stopping.is_set():
            try:
                for name, payload, _t in listen(self.vici, timeout=self.timeout):
                    ready.set()
                    if lost_at is not None:
                        self.health.resumed(time.time())
                        self._post(self._reconnected(time.time() - lost_at))
                        lost_at, backoff = None, RECONNECT_MIN_S
                    if self.stopping.is_set():
                        return
                    if self.health.hung() is not None and time.monotonic() >= next_probe:
                        next_probe = time.monotonic() + PROBE_S
                        self._check_resumed()
                    if name in ("child-updown", "ike-updown"):
                        for inp in events_to_inputs(name, payload):
                            self._post(inp)
            except (KeyingError, OSError) as exc:
                if self.stopping.is_set():
                    return
                if isinstance(exc, CharonTimeout) and self.health.timed_out(exc.op, time.time()) and self.log:
                    self.log("charon-timeout", op=exc.op, waited_s=exc.waited_s, action="events")
                if lost_at is None:
                    lost_at = time.time()
                    self._post(EventsLost(str(exc)))
                ready.set()
                self.stopping.wait(backoff)
                backoff = min(RECONNECT_MAX_S, backoff * 2)

    def _check_resumed(self) -> None:
        """charon was hung (a command timed out; this session, idle, did not notice): once it
        answers a probe, the same recovery as after a restart (peers loaded again, the calls whose
        set-up failed meanwhile keyed again, parked removals run)."""
        if probe(self.vici):
            outage = self.health.resumed(time.time())
            if outage is not None:
                self._post(self._reconnected(outage))


def failed_result(a: Action, reason: str) -> Input:
    """The outcome of one of charon's actions that failed (or never ran) for ``reason``."""
    now = time.time()
    if isinstance(a, RemoveChild):
        return RemoveResult(a.call_id, a.child, False, reason)
    if isinstance(a, PermitChild):
        return PermitResult(a.call_id, a.child, False, reason)
    if isinstance(a, EstablishIke):
        return IkeResult(a.peer, a.attempt, False, a.member, reason=reason)
    if isinstance(a, SetPeer):
        return PeerSet(a.name, False, reason)
    if isinstance(a, ClearStaleIke):
        return StaleIkeCleared(a.peer, a.conn, a.keep, (), False, reason)
    assert isinstance(a, InstallChild)
    return InstallResult(a.call_id, a.child, False, now, now, reason)


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
        if isinstance(action, SetPeer):  # no charon to change: the core goes on with the new peers
            return [(now, PeerSet(action.name, True))]
        return []
