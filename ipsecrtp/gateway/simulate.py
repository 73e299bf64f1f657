"""A charon that says yes: the outcomes the shell would feed back if every action succeeded.

For the offline replay (``ipsecrtp calls --pcap F --config C``): the same core decides on a
capture, and this stands in for the backends so that the decisions go on past the first install
(removals, re-keys, teardown delays), each at the capture time it would happen. Pure; the SAs'
ids and SPIs it invents are marked as such (``sim-N``, SPIs from 0x7e000000 up) and never reach charon.
"""

from __future__ import annotations

from .actions import (
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
    PermitChild,
    PermitResult,
    PrekeyResult,
    RemoveChild,
    RemovePrekeyed,
    RemoveResult,
)

SIM_SPI_BASE = 0x7E000000  # simulated SPIs, well apart from charon's (0xc...) and pre-keyed ones (0x1...)


class SimulatedCharon:
    def __init__(self, peer_conns: dict[str, str]) -> None:
        self.peer_conns = peer_conns  # peer name -> its connection name
        self.ids = 0
        self.up: dict[str, dict] = {}  # child name -> the CHILD_SA as charon would report it

    def outcomes(self, action: Action, now: float) -> list[Input]:
        if isinstance(action, InstallChild):
            self.ids += 1
            spi = SIM_SPI_BASE + 2 * self.ids
            child = {"name": action.child, "uniqueid": f"sim-{self.ids}", "state": "INSTALLED",
                     "local-ts": list(action.local_ts), "remote-ts": list(action.remote_ts),
                     "spi-in": f"{spi:08x}", "spi-out": f"{spi + 1:08x}"}
            self.up[action.child] = child
            conn = action.child if action.own_conn else self.peer_conns[action.peer]
            return [ChildUpDown(True, conn, child), InstallResult(action.call_id, action.child, True, now, now)]
        if isinstance(action, RemoveChild):
            child = self.up.pop(action.child, None)
            out: list[Input] = []
            if child is not None and not action.permit:
                out.append(ChildUpDown(False, self.peer_conns[action.peer], child))
            return [*out, RemoveResult(action.call_id, action.child, True,
                                       uniqueid=child["uniqueid"] if child else None)]
        if isinstance(action, PermitChild):
            return [PermitResult(action.call_id, action.child, True)]
        if isinstance(action, (InstallPrekeyed, RemovePrekeyed)):
            return [PrekeyResult(action.call_id, True, now, now, removed=isinstance(action, RemovePrekeyed),
                                 spis=tuple(k.spi for k in action.keys))]
        if isinstance(action, AddDnat):
            return [DnatResult(action.call_id, action.tag, True, action.rules, action.reason)]
        if isinstance(action, EstablishIke):
            return [IkeResult(action.peer, action.attempt, True, already=True)]
        return []
