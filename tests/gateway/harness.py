"""Drives a GatewayCore the way the shell does, without the shell: packets, timers and charon's
answers in, actions collected. Log actions are kept as the decoded lines the shell would write.

:meth:`Harness.outcome` plays the executor and charon for one action (what they feed back, and
when); :meth:`Harness.yes` answers everything asked so far as a charon that says yes would, so
that a test only spells out the answers it is about."""

from __future__ import annotations

import itertools

from ipsecrtp.config import ControllerConfig
from ipsecrtp.gateway.actions import (
    Action,
    AddDnat,
    ChildUpDown,
    DnatResult,
    EstablishIke,
    IkeResult,
    Input,
    InstallChild,
    InstallPrekeyed,
    InstallResult,
    Log,
    PeerSet,
    PermitChild,
    PermitResult,
    PrekeyResult,
    RemoveChild,
    RemovePrekeyed,
    RemoveResult,
    SetPeer,
)
from ipsecrtp.gateway.core import GatewayCore
from ipsecrtp.selectors import PeerConfig

# the actions the shell reports an outcome of (the others have none: logs, routes, DelDnat)
ANSWERED = (InstallChild, RemoveChild, PermitChild, InstallPrekeyed, RemovePrekeyed, EstablishIke, AddDnat, SetPeer)


def config(peers: tuple[PeerConfig, ...], name: str = "gw", **kw) -> ControllerConfig:
    return ControllerConfig(("wan0",), frozenset({5060}), "unix:///nonexistent", peers, kw.pop("media_timeout", 30.0),
                            "auto", name=name, **kw)


class Harness:
    def __init__(self, cfg: ControllerConfig, backend: str = "kernel-libipsec") -> None:
        self.core = GatewayCore(cfg, backend)
        self.actions: list[tuple[float, Action]] = []
        self.pending: list[Action] = []  # asked of the shell, not answered yet (oldest first)
        self.up: dict[str, dict] = {}  # child name -> charon's view of the CHILD_SA, while it is up
        self.answered: dict[str, int] = {}  # child name -> index of the first action after its set-up answered
        self.said_no: list[Action] = []  # actions answered with a failure
        self._ids = itertools.count(1)
        self._take(0.0, self.core.start(0.0))

    def _take(self, now: float, actions: list[Action]) -> list[Action]:
        self.actions.extend((now, a) for a in actions)
        self.pending.extend(a for a in actions if isinstance(a, ANSWERED))
        return actions

    def on_packet(self, t: float, data: bytes, media_only: bool = False) -> list[Action]:
        return self._take(t, self.core.receive_packet(t, data, "lan0" if media_only else "wan0"))

    def charon(self, now: float, inp: Input) -> list[Action]:
        return self._take(now, self.core.receive(now, inp))

    def handle_due(self, now: float) -> list[Action]:
        nt = self.core.next_timer()
        if nt is None or nt > now:
            return []
        return self._take(now, self.core.handle_timer(now))

    def run_until(self, now: float) -> list[Action]:
        """Every timer due up to ``now``, in order, each at its own time."""
        out: list[Action] = []
        while (nt := self.core.next_timer()) is not None and nt <= now:
            out += self._take(nt, self.core.handle_timer(nt))
        return out

    def logs(self, event: str | None = None) -> list[dict]:
        return [dict(a.fields, event=a.event, at=t) for t, a in self.actions
                if isinstance(a, Log) and (event is None or a.event == event)]

    def of(self, kind: type) -> list:
        return [a for _, a in self.actions if isinstance(a, kind)]

    def at(self, kind: type) -> list[tuple[float, Action]]:
        """Actions of one kind with the time the core returned them."""
        return [(t, a) for t, a in self.actions if isinstance(a, kind)]

    # -- playing charon and the executor ------------------------------------------------------------

    def child_sa(self, name: str, local_ts: tuple[str, ...], remote_ts: tuple[str, ...]) -> dict:
        """A CHILD_SA as a child-updown event carries it."""
        n = next(self._ids)
        return {"name": name, "uniqueid": str(n), "local-ts": list(local_ts), "remote-ts": list(remote_ts),
                "spi-in": f"{0xc0000000 + 2 * n:08x}", "spi-out": f"{0xc0000001 + 2 * n:08x}", "state": "INSTALLED"}

    def outcome(self, a: Action, now: float, ok: bool = True, up: bool | None = None,
                rtt: float = 0.0) -> list[tuple[float, Input]]:
        """What the executor feeds back for ``a`` started at ``now`` (ok: charon said yes; up: whether a
        child-updown comes, by default when ok), in the order the shell's queue would hold them
        (the event first: charon raises it before the initiate returns)."""
        done = now + rtt
        if isinstance(a, InstallChild):
            up = ok if up is None else up
            out: list[tuple[float, Input]] = []
            if up:
                sa = self.up[a.child] = self.child_sa(a.child, a.local_ts, a.remote_ts)
                out.append((done, ChildUpDown(True, a.child if a.own_conn else f"peer-{a.peer}", sa)))
            reason = "" if ok else "CHILD_SA establishment failed"
            return [*out, (done, InstallResult(a.call_id, a.child, ok, now, done, reason))]
        if isinstance(a, RemoveChild):
            sa = self.up.pop(a.child, None) if ok else None
            res: Input = RemoveResult(a.call_id, a.child, ok, "" if ok else "DELETE failed",
                                      uniqueid=sa["uniqueid"] if sa else None)
            down = [(done, ChildUpDown(False, a.child if a.own_conn else f"peer-{a.peer}", sa))] if sa else []
            return [(done, res), *down]
        if isinstance(a, PermitChild):
            return [(done, PermitResult(a.call_id, a.child, ok, "" if ok else "load-conn failed"))]
        if isinstance(a, (InstallPrekeyed, RemovePrekeyed)):
            return [(done, PrekeyResult(a.call_id, ok, now, done, "" if ok else "File exists",
                                        isinstance(a, RemovePrekeyed), tuple(k.spi for k in a.keys)))]
        if isinstance(a, EstablishIke):
            return [(done, IkeResult(a.peer, a.attempt, ok, a.member, ms=rtt * 1000, reason="" if ok else "timeout"))]
        if isinstance(a, SetPeer):
            return [(done, PeerSet(a.name, ok, "" if ok else "load-conn failed"))]
        if isinstance(a, AddDnat):
            return [(done, DnatResult(a.call_id, a.tag, ok, a.rules, a.reason, "" if ok else "nft failed"))]
        raise TypeError(f"no outcome for {type(a).__name__}")

    def answer(self, a: Action, now: float, ok: bool = True, up: bool | None = None,
               rtt: float = 0.0) -> list[Action]:
        """Feed back the outcome of one pending action."""
        self.pending.remove(a)
        if isinstance(a, (InstallChild, PermitChild)):
            self.answered[a.child] = len(self.actions)
        if not ok:
            self.said_no.append(a)
        out: list[Action] = []
        for t, inp in self.outcome(a, now, ok, up, rtt):
            out += self.charon(t, inp)
        return out

    def yes(self, now: float, rtt: float = 0.0) -> list[Action]:
        """charon (and every backend) said yes to all that was asked, and to what that asks in turn."""
        out: list[Action] = []
        while self.pending:
            out += self.answer(self.pending[0], now, rtt=rtt)
        return out

    def responder_up(self, now: float, install: InstallChild, name: str = "media") -> list[Action]:
        """The responder's charon: the peer's CHILD_SA for ``install`` came up here, under the name of
        the template child that matched it (its selectors seen from this side)."""
        sa = self.up[install.child] = self.child_sa(name, install.remote_ts, install.local_ts)
        return self.charon(now, ChildUpDown(True, self.conn, sa))

    def responder_down(self, now: float, install: InstallChild) -> list[Action]:
        """The initiator deleted it: the responder's charon reports it down."""
        return self.charon(now, ChildUpDown(False, self.conn, self.up.pop(install.child)))

    @property
    def conn(self) -> str:
        """The connection of this gateway's IKE_SA with its (first) peer, as charon names it."""
        return self.core.cfg.peers[0].conn
