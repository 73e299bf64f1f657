"""The executor's own threads against a VICI socket that a hung process holds (accepted into the
backlog, never answered, as a SIGSTOPped charon's): a burst of set-ups is answered within one
command time-out in all, not one time-out each behind the other; every failure says
charon-timeout; a removal is parked for when charon answers again, not failed (that would leave
the SA in charon). The real charon's hang and return are tests/lab/test_charon_hung.py."""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import time

from ipsecrtp.gateway.actions import EventsLost, InstallChild, InstallResult, RemoveChild
from ipsecrtp.keying.charontimers import limits_for
from ipsecrtp.selectors import PeerConfig
from ipsecrtp.shell.events import CharonHealth
from ipsecrtp.shell.executor import Executor
from tests.gateway.harness import config

PEER = PeerConfig("gwb", "198.51.100.1", "198.51.100.2", ("203.0.113.0/26",), ("203.0.113.64/26",), b"k" * 32)


def test_a_hung_charon_holds_a_burst_of_set_ups_for_one_time_out_and_parks_removals():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "charon.vici")
        hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hung.bind(path)
        hung.listen(64)
        lines: list[tuple[str, dict]] = []
        cfg = dataclasses.replace(config((PEER,)), vici=f"unix://{path}")
        ex = Executor(cfg, lambda event, **f: lines.append((event, f)), None)
        limit = limits_for(cfg.budget).command_s
        try:
            ex.start()
            t0 = time.monotonic()
            for i in range(4):  # one pool member: one worker, one after the other
                ex.submit(InstallChild(f"c{i}", f"call-{i}-0", "gwb", ("203.0.113.1/32[udp/40000]",),
                                       ("203.0.113.65/32[udp/40000]",)))
            ex.submit(RemoveChild("c9", "call-9-0", "gwb", "7", "bye"))
            results: list[InstallResult] = []
            lost: list[EventsLost] = []
            while len(results) < 4 and time.monotonic() - t0 < 4 * limit + 5:
                time.sleep(0.05)
                for _t, inp in ex.drain():
                    (results if isinstance(inp, InstallResult) else lost).append(inp)
            waited = time.monotonic() - t0
        finally:
            ex.stop()
            ex.close()
            hung.close()
    assert [r.call_id for r in results] == ["c0", "c1", "c2", "c3"]
    assert all(not r.ok and r.reason.startswith("charon-timeout") for r in results), results
    # one command time-out for the whole burst (the first to meet the hang), not four in a row
    assert waited < 1.5 * limit, (waited, limit)
    assert [a.child for a in ex.parked] == ["call-9-0"]  # kept for when charon answers again
    assert not [x for x in lost if not isinstance(x, EventsLost)]  # no removal result: nothing failed
    timeouts = [f for e, f in lines if e == "charon-timeout"]
    # one line per hang, from whichever thread met it first (the event listener's registration, or
    # a worker's command)
    assert len(timeouts) == 1 and timeouts[0]["op"] in {"listen", "load-conn"}, timeouts


def test_charon_health_one_hang_at_a_time():
    h = CharonHealth()
    assert h.hung() is None and h.resumed(5.0) is None
    assert h.timed_out("load-conn", 10.0)  # starts a hang: the one line is logged for this one
    assert not h.timed_out("initiate", 11.0)  # the same hang
    assert (h.hung(), h.op) == (10.0, "load-conn")
    assert h.resumed(12.5) == 2.5
    assert h.hung() is None and h.resumed(13.0) is None
