"""Carries out the gateway core's actions on the backends and feeds each outcome back as an input.

Threads, each with its own VICI session (VICI has no request ids), none touching the core:
- set-up workers, one per IKE_SA of the largest pool: load a call's connection and initiate it
  (one round trip or two: off the loop);
- removal workers, as many: a DELETE costs a round trip too, and the next call's set-up must not
  wait behind the last call's teardown in our queue (charon may still serialise the two exchanges
  on one IKE_SA; that wait is real and shows in the timeline);
- listener: charon's child-updown and ike-updown events.
Their outcomes go into one queue that the loop drains (``outcomes``), woken by a pipe. Routing,
nftables and xfrm actions are quick netlink or nft calls and run inline, their outcome returned at
once. The one piece of state here, a responder's extra child configs per peer (rare: ports a NAT
chose; a ``load-conn`` of the peer carries all of them), is guarded by a lock.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import queue
import threading
import time

from ..config import ControllerConfig
from ..gateway.actions import (
    CANCELLED,
    Action,
    AddDnat,
    AddRoute,
    CancelInstall,
    CharonReconnected,
    ClearStaleIke,
    DelDnat,
    DelRoute,
    DnatResult,
    EstablishIke,
    GuardMedia,
    IkeResult,
    Input,
    InstallChild,
    InstallPrekeyed,
    InstallResult,
    Journal,
    Log,
    PeerSet,
    PermitChild,
    PermitResult,
    PrekeyResult,
    RemoveBlanketRoute,
    RemoveChild,
    RemovePrekeyed,
    RemoveResult,
    SetPeer,
    StaleIkeCleared,
    Unjournal,
)
from ..kernel.xfrm import XfrmSocket
from ..keying import dnat, prekeyed
from ..keying.charontimers import limits_for
from ..keying.dataplane import DataPlane, DataPlaneError
from ..keying.routing import PolicyRouting
from ..keying.strongswan import Charon, CharonTimeout, KeyingError
from ..keying.xfrmguard import XfrmGuard
from ..log import DecisionLog
from ..timescale import scaled
from .events import RECONNECT_MAX_S, RECONNECT_MIN_S, CharonEvents, CharonHealth, failed_result
from .journal import Journal as CallJournal

Outcome = tuple[float, Input]
BROKEN = "VICI session broken: "  # an outcome's reason when the session, not charon, failed
CANCEL_MEMORY = 4096
CONNECT_PATIENCE_S = scaled(2.0)  # how long a job waits for charon to answer before it fails


def _session_broken(result: Input) -> bool:
    return str(getattr(result, "reason", "")).startswith(BROKEN)
CHARON_ACTIONS = (InstallChild, PermitChild, RemoveChild, EstablishIke, SetPeer, ClearStaleIke)


class Executor:
    def __init__(self, cfg: ControllerConfig, log: DecisionLog, routing: PolicyRouting | None,
                 dataplane: DataPlane | XfrmGuard | None = None, journal: CallJournal | None = None) -> None:
        self.cfg, self.log, self.routing, self.dataplane = cfg, log, routing, dataplane
        self.journal = journal
        self.peers = {p.name: p for p in cfg.peers}
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        # children whose set-up is not to run (their call ended); bounded: a cancel that came after
        # its set-up had run is never consumed
        self.cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.cancel_lock = threading.Lock()
        self.children: dict[str, dict[str, tuple[list[str], list[str]]]] = {p.name: {} for p in cfg.peers}
        self.conf_lock = threading.Lock()  # the child configs and the load-conn that mirrors them
        # as many exchanges in flight as the largest pool has IKE_SAs (charon runs one at a time on
        # each; VICI runs one command at a time on each session, so one worker per member)
        self.workers = max(p.ike_pool for p in cfg.peers)
        # one queue per pool member and kind: a stalled IKE_SA (a lost packet costs charon's
        # retransmission time-out) holds back only its own member's jobs, never the whole pool
        self.setup_jobs: list[queue.SimpleQueue[Action | None]] = [queue.SimpleQueue() for _ in range(self.workers)]
        self.removal_jobs: list[queue.SimpleQueue[Action | None]] = [queue.SimpleQueue()
                                                                    for _ in range(self.workers)]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.dnat_used = False
        # charon adds its catch-all rule into table 220 when it starts, never with a CHILD_SA's route
        # (checked in the lab): the rule dump that finds it runs once after each start, not per call
        self.blanket_due = True
        self.limits = limits_for(cfg.budget)  # from the post-dial budget: charontimers says why
        self.health = CharonHealth()
        # removals charon did not answer (hung): run again once it answers, so that nothing is left
        self.parked: list[RemoveChild] = []

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        events = CharonEvents(self.cfg.vici, self._post, self.stopping, self._reconnected, self.health,
                              self.limits.command_s, self.log)
        self.threads = [threading.Thread(target=events.run, args=(ready,), name="events", daemon=True)]
        for i in range(self.workers):
            self.threads += [threading.Thread(target=self._worker, args=(self.setup_jobs[i],), name=f"keying-{i}",
                                              daemon=True),
                             threading.Thread(target=self._worker, args=(self.removal_jobs[i],), name=f"unkeying-{i}",
                                              daemon=True)]
        for t in self.threads:
            t.start()
        ready.wait(5)

    def stop(self) -> None:
        self.stopping.set()
        for q in (*self.setup_jobs, *self.removal_jobs):
            q.put(None)
        for t in self.threads:
            t.join(timeout=15)
        self.threads = []

    def close(self) -> None:
        if self.dnat_used:
            dnat.drop_table()  # this process made it: its per-call chains go with it
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _post(self, inp: Input) -> None:
        self.outcomes.put((time.time(), inp))
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass  # closed at shutdown

    def drain(self) -> list[Outcome]:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self.outcomes.get_nowait())
            except queue.Empty:
                return out

    # -- actions ---------------------------------------------------------------------------------

    def submit(self, action: Action, charon: Charon | None = None) -> list[Outcome]:
        """Run or queue one action; what finished at once comes back. With ``charon`` (shutdown, the
        workers stopped) charon's actions run here too, on that session."""
        if isinstance(action, Log):
            self.log(action.event, **action.fields)
            return []
        if isinstance(action, CancelInstall):
            with self.cancel_lock:
                self.cancelled[action.child] = None
                while len(self.cancelled) > CANCEL_MEMORY:
                    self.cancelled.popitem(last=False)
            return []
        if isinstance(action, CHARON_ACTIONS):
            if charon is not None:
                return [(time.time(), self._charon(charon, action))]
            member = getattr(action, "member", 0) % self.workers
            (self.removal_jobs if isinstance(action, RemoveChild) else self.setup_jobs)[member].put(action)
            return []
        return [(time.time(), r) for r in [self._inline(action)] if r is not None]

    def _inline(self, a: Action) -> Input | None:
        if isinstance(a, (AddRoute, DelRoute, RemoveBlanketRoute)):
            if self.routing is not None and isinstance(self.dataplane, DataPlane):
                try:
                    if isinstance(a, AddRoute):
                        self.dataplane.add_flow(a.rule)  # one set element: O(1) per packet in the kernel
                    elif isinstance(a, DelRoute):
                        self.dataplane.del_flow(a.rule)
                    elif self.blanket_due:
                        self.routing.remove_blanket()
                        self.blanket_due = False
                except (DataPlaneError, Exception) as exc:  # noqa: BLE001 - NetlinkError: one line, go on
                    self.log("routing-failed", reason=f"{type(exc).__name__}: {exc}")
            return None
        if isinstance(a, GuardMedia):
            if self.dataplane is not None:
                try:
                    self.dataplane.guard(list(a.guarded), a.rtp, bool(a.guarded), list(a.reach))
                except (DataPlaneError, Exception) as exc:  # noqa: BLE001 - NetlinkError: one line, go on
                    self.log("data-plane-failed", reason=f"{type(exc).__name__}: {exc}")
            return None
        if isinstance(a, AddDnat):
            try:
                dnat.add(a.tag, list(a.rules))
            except dnat.DnatError as exc:
                return DnatResult(a.call_id, a.tag, False, a.rules, a.reason, str(exc))
            self.dnat_used = True
            return DnatResult(a.call_id, a.tag, True, a.rules, a.reason)
        if isinstance(a, DelDnat):
            dnat.delete(a.tag)
            return None
        if isinstance(a, (Journal, Unjournal)):
            if self.journal is not None:
                try:
                    if isinstance(a, Journal):
                        self.journal.write(a.call_id, a.entry)
                    else:
                        self.journal.delete(a.call_id)
                except OSError as exc:  # a full or read-only disk: the call is keyed all the same
                    self.log("journal-failed", call=a.call_id, reason=str(exc))
            return None
        if isinstance(a, (InstallPrekeyed, RemovePrekeyed)):
            return self._prekeyed(a)
        raise TypeError(f"no executor for {type(a).__name__}")

    def _prekeyed(self, a: InstallPrekeyed | RemovePrekeyed) -> PrekeyResult:
        t0 = time.time()
        sock = XfrmSocket()
        try:
            if isinstance(a, InstallPrekeyed):
                prekeyed.install(sock, a.keys, a.local_gw, list(a.pairs))
            else:
                prekeyed.remove(sock, a.keys, prekeyed.policies_for(a.keys, list(a.pairs)))
        except Exception as exc:  # noqa: BLE001 - NetlinkError and friends: one line, nothing left
            return PrekeyResult(a.call_id, False, t0, time.time(), str(exc), isinstance(a, RemovePrekeyed),
                                tuple(k.spi for k in a.keys))
        finally:
            sock.close()
        return PrekeyResult(a.call_id, True, t0, time.time(), "", isinstance(a, RemovePrekeyed),
                            tuple(k.spi for k in a.keys))

    # -- charon ----------------------------------------------------------------------------------

    def _worker(self, jobs: queue.SimpleQueue) -> None:
        """One VICI session; a broken one (charon restarted, crashed, hung past a command's
        time-out) is replaced for the next job, so that keying resumes as soon as charon answers.
        While charon is hung, set-ups fail at once and removals wait for it (parked)."""
        charon: Charon | None = None
        while (job := jobs.get()) is not None:
            if self.health.hung() is not None:
                self._while_hung(job)
                continue
            if charon is None:
                charon = self._connect()
            if charon is None:
                self._post(failed_result(job, "charon is not answering on VICI"))
                continue
            result = self._charon(charon, job)
            if charon.broken:  # timed out: a late answer may still come on it
                charon.close()
                charon = None
                if isinstance(job, RemoveChild):
                    self._park(job)
                    continue
            elif _session_broken(result):
                # the session died under the job (charon restarted since the last one): once more
                # on a new session, so that the job is judged by charon, not by a dead socket
                charon.close()
                charon = None
                try:
                    charon = Charon(self.cfg.vici, self.limits.command_s)
                    result = self._charon(charon, job)
                except KeyingError:
                    pass
            self._post(result)
        if charon is not None:
            charon.close()

    def _connect(self, patience: float = CONNECT_PATIENCE_S) -> Charon | None:
        """A new VICI session, waiting a little for a charon that is starting (back-off), so that a
        burst of jobs does not fail in a few milliseconds; None: charon is not answering."""
        deadline, wait = time.monotonic() + patience, RECONNECT_MIN_S
        while True:
            try:
                return Charon(self.cfg.vici, self.limits.command_s)
            except KeyingError:
                if time.monotonic() + wait > deadline or self.stopping.wait(wait):
                    return None
                wait = min(RECONNECT_MAX_S, wait * 2)

    def _while_hung(self, job: Action) -> None:
        if isinstance(job, RemoveChild):
            self._park(job)
        else:
            since = self.health.hung() or time.time()
            self._post(failed_result(job, f"charon-timeout: charon not answering for {time.time() - since:.1f} s "
                                         f"({self.health.op} timed out)"))

    def _park(self, job: RemoveChild) -> None:
        with self.cancel_lock:
            self.parked.append(job)

    def _timed_out(self, a: Action, exc: CharonTimeout) -> None:
        self.health.timed_out(exc.op, time.time())
        self.log("charon-timeout", op=exc.op, waited_s=exc.waited_s, action=type(a).__name__,
                 call=getattr(a, "call_id", None) or None, child=getattr(a, "child", None))

    def _charon(self, charon: Charon, a: Action) -> Input:
        try:
            if isinstance(a, InstallChild):
                return self._install(charon, a)
            if isinstance(a, RemoveChild):
                return RemoveResult(a.call_id, a.child, True, uniqueid=self._remove(charon, a))
            if isinstance(a, PermitChild):
                self._set_child(charon, a.peer, a.child, (list(a.local_ts), list(a.remote_ts)))
                return PermitResult(a.call_id, a.child, True)
            if isinstance(a, SetPeer):
                return self._set_peer(charon, a)
            if isinstance(a, ClearStaleIke):
                return self._clear_stale(charon, a)
            assert isinstance(a, EstablishIke)
            return self._establish(charon, a)
        except Exception as exc:  # noqa: BLE001 - KeyingError, a broken session: the core decides
            if isinstance(exc, CharonTimeout):
                self._timed_out(a, exc)
            if isinstance(exc, KeyingError):
                return failed_result(a, str(exc))
            # not charon's refusal but the session itself (reset, closed, timed out): say so
            return failed_result(a, f"{BROKEN}{type(exc).__name__}: {exc}")

    def _set_child(self, charon: Charon, peer: str, child: str, sel: tuple[list[str], list[str]] | None) -> None:
        """Add (sel) or remove (None) one child config of the peer's connection, under the lock."""
        with self.conf_lock:
            if peer not in self.children:
                return  # a reload removed the peer: charon forgot it, its child configs with it
            if sel is None:
                if self.children[peer].pop(child, None) is None:
                    return
            else:
                self.children[peer][child] = sel
            charon.load_peer(self.peers[peer], dict(self.children[peer]))

    def _install(self, charon: Charon, a: InstallChild) -> InstallResult:
        with self.cancel_lock:
            if self.cancelled.pop(a.child, False) is None:
                now = time.time()
                return InstallResult(a.call_id, a.child, False, now, now, CANCELLED)
        # the call's own connection, one child: no reload of the peer's connection, whatever the
        # number of live calls; equal to its pool member's, so that charon reuses that IKE_SA
        charon.load_call_conn(self.peers[a.peer], a.child, list(a.local_ts), list(a.remote_ts),
                              None if a.own_conn else a.member)
        t0 = time.time()
        try:
            charon.initiate_conn(a.child, self.limits.initiate_s)
        except CharonTimeout:
            raise
        except KeyingError as exc:
            return InstallResult(a.call_id, a.child, False, t0, time.time(), str(exc))
        return InstallResult(a.call_id, a.child, True, t0, time.time())

    def _remove(self, charon: Charon, a: RemoveChild) -> str | None:
        if a.own_conn:
            return charon.remove_call_conn(a.child)
        if a.permit:  # a responder's SA is the initiator's to delete; only its child config goes
            self._set_child(charon, a.peer, a.child, None)
            return None
        # never learnt its id (a failed or unconfirmed set-up): find it by name, leave nothing behind
        uniqueid = a.uniqueid or charon.find_child(a.child)
        try:
            if uniqueid:
                charon.terminate_child(uniqueid)
        finally:
            charon.unload_conn(a.child)
        return uniqueid

    def _set_peer(self, charon: Charon, a: SetPeer) -> PeerSet:
        """A reload's peer (gateway/reconfig.py; no SA of a call of the old one is left): the new
        connections replace the old ones by name (load-conn), then the old IKE_SAs go, so that the
        peer's next CREATE_CHILD_SA finds the new configuration; a removed peer's credential goes."""
        old = self.peers.get(a.name)
        stale = [ike["uniqueid"] for conn in (old.members() if old else []) for ike in charon.ike_sas(conn)]
        with self.conf_lock:
            if a.peer is not None:
                charon.load_secret(a.peer)
                charon.load_peer(a.peer, {})
                self.peers[a.name], self.children[a.name] = a.peer, {}
            else:
                self.peers.pop(a.name, None)
                self.children.pop(a.name, None)
            keep = set(a.peer.members()) if a.peer is not None else set()
            for conn in old.members() if old else []:
                if conn not in keep:
                    charon.unload_conn(conn)
            if old is not None and a.peer is None and old.auth == "psk":
                charon.unload_secret(old)
        for ike_id in stale:
            charon.terminate_ike_id(ike_id)
        return PeerSet(a.name, True)

    def _establish(self, charon: Charon, a: EstablishIke) -> IkeResult:
        peer = self.peers.get(a.peer)
        if peer is None:
            return IkeResult(a.peer, a.attempt, False, a.member, reason="peer removed by a reload")
        conn = peer.member(a.member)
        if charon.ike_established(conn):
            return IkeResult(a.peer, a.attempt, True, a.member, already=True)
        t0 = time.time()
        charon.initiate_ike(conn, self.limits.initiate_s)
        return IkeResult(a.peer, a.attempt, True, a.member, ms=round((time.time() - t0) * 1000, 3))

    def _clear_stale(self, charon: Charon, a: ClearStaleIke) -> StaleIkeCleared:
        """Every other established IKE_SA of the connection that this gateway answered, or set up
        itself longer ago than the race window: deleted at once, without waiting for the peer
        (which no longer knows them), so that charon reports their CHILD_SAs down now
        (gateway/peerloss.py)."""
        def dead(ike: dict) -> bool:
            if str(ike.get("uniqueid")) == a.keep or ike.get("state") != "ESTABLISHED":
                return False
            return ike.get("initiator") != "yes" or float(ike.get("established") or 0) > a.own_older_than_s

        stale = [str(ike["uniqueid"]) for ike in charon.ike_sas(a.conn) if dead(ike)]
        for ike_id in stale:
            charon.terminate_ike_id(ike_id, force=True)
        return StaleIkeCleared(a.peer, a.conn, a.keep, tuple(stale))

    def _reconnected(self, outage_s: float) -> Input:
        """Load the peers again (a restarted charon knows none of them) and list what it holds;
        removals parked while charon was hung run again (found by name: charon may have run them
        when it resumed)."""
        self.blanket_due = True  # a new charon put its catch-all rule back
        charon = Charon(self.cfg.vici, self.limits.command_s)
        with self.cancel_lock:
            parked, self.parked = self.parked, []
        for job in parked:
            self.removal_jobs[job.member % self.workers].put(dataclasses.replace(job, uniqueid=None))
        try:
            for peer in list(self.peers.values()):  # as a reload may have left them
                charon.load_secret(peer)
                with self.conf_lock:
                    charon.load_peer(peer, dict(self.children[peer.name]))
            self.dataplane_refresh()
            return CharonReconnected(frozenset(c.get("name", "") for c in charon.child_sas()), outage_s)
        finally:
            charon.close()

    def dataplane_refresh(self) -> None:
        if self.dataplane is not None:
            try:
                self.dataplane.ensure_tunnel_route()  # charon made ipsec0 anew
            except Exception as exc:  # noqa: BLE001 - NetlinkError: logged, the keyed flows then go to the sink
                self.log("routing-failed", reason=f"{type(exc).__name__}: {exc}")
