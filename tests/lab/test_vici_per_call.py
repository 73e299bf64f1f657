"""Issue 14, "no per-call reload": the VICI commands the real executor sends to a real charon per
call are the same for the first call and the thirtieth, and none of them carries or lists the
other live calls. Counted, not mocked: every vici.Session.request / streamed_request the
executor's threads make is counted (and its message kept) on its way to the lab's charons, which
really create and delete the CHILD_SAs."""

import io
import queue
import secrets
import time
from collections import Counter

import pytest
import vici

from ipsecrtp import config
from ipsecrtp.gateway.actions import (
    ChildUpDown,
    EstablishIke,
    IkeResult,
    InstallChild,
    InstallResult,
    RemoveChild,
    RemoveResult,
)
from ipsecrtp.keying.strongswan import Charon
from ipsecrtp.log import DecisionLog
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.labdaemons import write_controller_config
from ipsecrtp.shell.executor import Executor

pytestmark = pytest.mark.lab

LIVE = 30  # calls up at once by the end of the set-ups
POOL = 2


class Counted:
    """Each VICI command a keying thread sends, in order: (thread, command, message)."""

    def __init__(self) -> None:
        self.sent: queue.SimpleQueue[tuple[str, str, dict | None]] = queue.SimpleQueue()

    def take(self) -> list[tuple[str, str, dict | None]]:
        out = []
        while not self.sent.empty():
            out.append(self.sent.get())
        return out


@pytest.fixture(scope="module")
def setup(request):
    """Charons of a lab of its own (no controllers), both peers loaded as a controller loads them at
    start, and gwb's executor with its pool of IKE_SAs up; the commands are counted from then on."""
    import threading

    lab = Lab("t" + secrets.token_hex(4))
    counted = Counted()
    mp = pytest.MonkeyPatch()
    ex = None
    try:
        lab.up(controllers=False, rtp_ports=(20000, 20199), ike_pool=POOL)
        a, b = lab.topology[0], lab.topology[1]
        cfg_b = config.load(write_controller_config(lab, b, a))
        cfg_a = config.load(write_controller_config(lab, a, b))
        for cfg in (cfg_a, cfg_b):
            c = Charon(cfg.vici)
            try:
                for peer in cfg.peers:
                    c.load_secret(peer)
                    c.load_peer(peer, {})
            finally:
                c.close()
        ex = Executor(cfg_b, DecisionLog(io.StringIO()), routing=None)
        ex.start()
        peer = cfg_b.peers[0]
        for k in range(POOL):
            ex.submit(EstablishIke(peer.name, 1, k))
        results = wait_for(ex, lambda o: isinstance(o, IkeResult), POOL)
        assert all(r.ok for r in results), results

        def counting(name):
            orig = getattr(vici.Session, name)

            def wrapper(self, command, *args):
                if threading.current_thread().name.startswith(("keying-", "unkeying-")):
                    counted.sent.put((threading.current_thread().name, command, args[-1] if args else None))
                return orig(self, command, *args)
            return wrapper

        for name in ("request", "streamed_request"):
            mp.setattr(vici.Session, name, counting(name))
        yield lab, ex, peer, counted
    finally:
        mp.undo()
        if ex is not None:
            ex.stop()
            ex.close()
        lab.down()


_seen: list = []  # outcomes drained but not yet asked for (a child-updown may come before its initiate's reply)


def wait_for(ex: Executor, match, n: int, timeout: float = 20.0) -> list:
    """The first n outcomes that match, from the executor's outcome queue (the others are kept)."""
    deadline = time.monotonic() + timeout
    while True:
        _seen.extend(inp for _t, inp in ex.drain())
        got = [inp for inp in _seen if match(inp)][:n]
        if len(got) == n:
            for inp in got:
                _seen.remove(inp)
            return got
        assert time.monotonic() < deadline, f"only {len(got)} of {n} outcomes within {timeout} s: {_seen[-5:]}"
        time.sleep(0.01)


def test_per_call_commands_do_not_grow_with_live_calls(setup):
    lab, ex, peer, counted = setup
    lo = lab.rtp_ports[0]
    local, remote = peer.local_media[0].split("/")[0], peer.remote_media[0].split("/")[0]
    per_setup, per_removal, ids = [], [], {}
    for i in range(LIVE):
        child = f"call-vici{i:02d}-0"
        port = lo + 4 * i
        ex.submit(InstallChild(f"c{i}", child, peer.name, (f"{local}/32[udp/{port}]",),
                               (f"{remote}/32[udp/{port}]",), member=i % POOL))
        [res] = wait_for(ex, lambda o, c=child: isinstance(o, InstallResult) and o.child == c, 1)
        assert res.ok, res.reason
        [up] = wait_for(ex, lambda o, c=child: isinstance(o, ChildUpDown) and o.up and o.child.get("name") == c, 1)
        ids[child] = up.child["uniqueid"]
        # the pool spreads the calls: each CHILD_SA is on its member's IKE_SA
        assert up.ike == peer.member(i % POOL), (child, up.ike)
        per_setup.append(counted.take())

    live = Charon(lab.vici("gwb"))
    try:
        assert {c["name"] for c in live.child_sas()} >= set(ids)  # all LIVE keyed at once, for real
    finally:
        live.close()

    for i, (child, uid) in enumerate(ids.items()):
        ex.submit(RemoveChild(f"c{i}", child, peer.name, uid, "bye", member=i % POOL))
        [res] = wait_for(ex, lambda o, c=child: isinstance(o, RemoveResult) and o.child == c, 1)
        assert res.ok, res.reason
        per_removal.append(counted.take())

    setup_shapes = [Counter(cmd for _t, cmd, _m in s) for s in per_setup]
    removal_shapes = [Counter(cmd for _t, cmd, _m in s) for s in per_removal]
    # the same commands for call 1 as for call 30 with 29 others live: one load-conn of the call's
    # own connection and one initiate; one terminate and one unload-conn
    assert all(s == Counter({"load-conn": 1, "initiate": 1}) for s in setup_shapes), setup_shapes
    assert all(s == Counter({"terminate": 1, "unload-conn": 1}) for s in removal_shapes), removal_shapes
    for i, sent in enumerate(per_setup):
        [conn] = [m for _t, cmd, m in sent if cmd == "load-conn"]
        (name, body), = conn.items()
        assert name == f"call-vici{i:02d}-0"
        assert list(body["children"]) == [name]  # never the peer's connection with every live call
    # each call's jobs ran on its own pool member's workers
    for sents in (per_setup, per_removal):
        assert all(t.endswith(f"-{i % POOL}") for i, sent in enumerate(sents) for t, _c, _m in sent)

    check = Charon(lab.vici("gwb"))
    try:
        assert not set(ids) & {c["name"] for c in check.child_sas()}
        assert not set(ids) & set(check.conns())
    finally:
        check.close()
