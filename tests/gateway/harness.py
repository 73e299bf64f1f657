"""Drives a GatewayCore the way the shell does, without the shell: packets, timers and charon's
answers in, actions collected. Log actions are kept as the decoded lines the shell would write."""

from __future__ import annotations

from ipsecrtp.config import ControllerConfig
from ipsecrtp.gateway.actions import Action, Input, Log
from ipsecrtp.gateway.core import GatewayCore
from ipsecrtp.selectors import PeerConfig


def config(peers: tuple[PeerConfig, ...], name: str = "gw", **kw) -> ControllerConfig:
    return ControllerConfig(("wan0",), frozenset({5060}), "unix:///nonexistent", peers, kw.pop("media_timeout", 30.0),
                            "auto", name=name, **kw)


class Harness:
    def __init__(self, cfg: ControllerConfig, backend: str = "kernel-libipsec") -> None:
        self.core = GatewayCore(cfg, backend)
        self.actions: list[tuple[float, Action]] = []
        self._take(0.0, self.core.start(0.0))

    def _take(self, now: float, actions: list[Action]) -> list[Action]:
        self.actions.extend((now, a) for a in actions)
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
