"""The controller: the gateway core (``gateway/``, every decision, no I/O) wired to the world.

Start-up checks and loads charon, opens the capture and hands both to a loop: select on the
capture sockets and the executor's wake-up pipe, with the core's ``next_timer()`` as the time-out;
every packet, outcome and due timer goes into the core, every action it returns to the executor
(``shell/executor.py``), whose outcomes come back as inputs. No state is shared between threads:
the core lives on this thread only.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .capture import Capture
from .config import ControllerConfig
from .gateway.actions import Action
from .gateway.core import SINK, GatewayCore
from .gateway.reconfig import guard_for
from .kernel.xfrm import probe_esp
from .keying.charonconf import timers_verdict
from .keying.dataplane import DataPlane, DataPlaneError
from .keying.routing import PolicyRouting
from .keying.strongswan import Charon, CharonTimeout, KeyingError
from .keying.xfrmguard import XfrmGuard, XfrmGuardError
from .log import DecisionLog
from .selectors import PeerConfig
from .shell.control import ControlServer, answer_request
from .shell.events import RecordingExecutor
from .shell.executor import Executor, Outcome
from .shell.journal import Journal as CallJournal
from .shell.ng import NgServer
from .timescale import scaled

if TYPE_CHECKING:
    from .gateway.control import ControlRequest
    from .metrics import Exporter

# the start-up session's limit per VICI command: no call waits on the start, so only a hung charon
# should fail it, not a loaded one (in the real-kernel tier's TCG guest charon took over the per-call
# limit of 2 s to answer a load-conn at start)
START_COMMAND_S = scaled(20.0)
LOOP_TICK_S = 0.5  # the loop wakes at least this often, to notice a stop


class ControllerError(RuntimeError):
    """Start-up failure; ``str(err)`` is the one line printed before exiting non-zero."""


def peers_refusal(peers: tuple[PeerConfig, ...], backend: str, esp: bool) -> str | None:
    """Why these peers cannot be keyed with this charon backend and kernel (at start and at a
    reload), or None."""
    transport = [p.name for p in peers if p.esp_mode == "transport"]
    if backend == "kernel-libipsec" and transport:
        return (f"esp_mode = \"transport\" (peer {transport[0]}) needs kernel ESP (kernel-netlink): "
                "kernel-libipsec does tunnel mode only; set esp_mode = \"tunnel\"")
    if not esp and any(p.strategy == "pre-keyed" for p in peers):
        return ("strategy pre-keyed installs ESP SAs in the kernel, which has no ESP here: "
                "use an IKE strategy (a, b, c) or a kernel with ESP")
    return None


class Controller:
    def __init__(self, cfg: ControllerConfig, log: DecisionLog) -> None:
        self.cfg, self.log = cfg, log
        self.stop = threading.Event()
        self.core: GatewayCore | None = None
        self.executor: Executor | RecordingExecutor | None = None
        self.capture: Capture | None = None
        self.charon: Charon | None = None
        self.routing: PolicyRouting | None = None
        self.dataplane: DataPlane | XfrmGuard | None = None
        self._blocked = (0, 0.0)  # XfrmGuard: packets reported blocked so far, and when
        # remove everything at stop (else live calls keep their SAs, the data plane and the journal)
        self.flush = False
        self.journal: CallJournal | None = None
        self.backend = "unknown"
        self.interfaces: dict[object, str] = {}  # capture socket -> interface name
        self._loaded: list = []  # peers this instance loaded into charon, and so unloads
        self.exporter: Exporter | None = None
        self.ng: NgServer | None = None  # rtpengine's ng control endpoint for a SIP proxy (off by default)
        # more file descriptors the loop selects on, each with what to run on this thread when it
        # is readable (the control socket's wake-up pipe), and what to run on every turn
        self.hooks: dict[int, Callable[[], None]] = {}
        self.ticks: list[Callable[[float], None]] = []
        self.control: ControlServer | None = None
        self.draining = False  # no new call keyed; the service exits once no SA is left
        self.esp = False  # the kernel does ESP (probed at start)

    # -- start / stop ------------------------------------------------------------------------

    def start(self) -> None:
        if self.cfg.metrics is not None:  # first: start-up's own decisions are counted too
            from .metrics import Exporter, Metrics  # imported only when on

            self.exporter = Exporter(self.cfg.metrics, Metrics())
            self.log.listeners.append(self.exporter.metrics)
        if self.cfg.dry_run:
            # observe only: SIP, decisions and timelines, nothing asked of charon (a baseline, or a
            # check of what would be keyed before turning keying on); the actions are recorded
            self._open_capture()
            self._serve_metrics()
            self._serve_ng()
            self._serve_control()
            self.backend = "none (dry run)"
            self.core = GatewayCore(self.cfg, self.backend)
            self.executor = RecordingExecutor(self.log)
            self.log("started", interfaces=self.cfg.interfaces, sip_ports=sorted(self.cfg.sip_ports),
                     backend=self.backend, dry_run=True)
            return
        self._check_charon()
        self._open_capture()
        self._serve_metrics()
        self._serve_ng()
        self._serve_control()  # a second controller of this gateway is refused here, having loaded nothing
        try:
            self._load_peers()
        except KeyingError as exc:
            assert self.capture is not None
            self.capture.close()
            if self.control is not None:
                self.control.close()
            raise ControllerError(str(exc)) from None
        if self.backend == "kernel-libipsec":
            self.routing = PolicyRouting()
            removed = self.routing.remove_blanket()
            self.log("routing-narrowed", removed_blanket_rules=removed, table=self.routing.table)
        if self.backend in ("kernel-libipsec", "kernel-netlink"):
            self._data_plane()
        self.core = GatewayCore(self.cfg, self.backend)
        self.journal = self._open_journal()
        self.executor = Executor(self.cfg, self.log, self.routing, self.dataplane, self.journal)
        self.executor.start()
        self.dispatch(self.core.start(time.time()))
        self._adopt()
        # what start-up built lives for the whole run: out of the collector's way, so that a full
        # collection (tens of ms with thousands of dialogs) does not also walk it each time
        gc.freeze()
        self.log("started", interfaces=self.cfg.interfaces, sip_ports=sorted(self.cfg.sip_ports),
                 backend=self.backend)

    def _open_journal(self) -> CallJournal:
        path = self.cfg.state_dir or os.path.join("/var/lib/ipsecrtp", self.cfg.name or "controller")
        try:
            return CallJournal(path)
        except OSError as exc:
            raise ControllerError(f"controller.state_dir {path}: {exc.strerror or exc}") from None

    def _adopt(self) -> None:
        """The calls a previous run keyed whose SAs stayed up: tracked again, not keyed again."""
        assert self.core is not None and self.charon is not None
        entries = self.journal.load() if self.journal is not None else []
        try:
            children = self.charon.child_sas()
        except KeyingError as exc:
            self.log("adoption-failed", reason=str(exc))
            return
        if entries or any(c.get("name", "").startswith(("call-", "spec-")) for c in children):
            self.log("adopting", journal=len(entries), child_sas=len(children))
            self.dispatch(self.core.adopt(time.time(), entries, children))

    def _data_plane(self) -> None:
        """With protect = required, every packet to those peers' media on the RTP range that no
        CHILD_SA covers kept from the WAN. kernel-libipsec: keyed flows marked into charon's TUN
        by one nftables set, the rest into a sink; kernel-netlink: xfrm block policies under
        charon's own."""
        guard = guard_for(self.cfg.peers)  # what a reload brings it to as well
        guarded = [p for p in self.cfg.peers if p.protect == "required"]
        prefixes, (lo, hi) = list(guard.guarded), guard.rtp
        libipsec = self.backend == "kernel-libipsec"
        try:
            self.dataplane = DataPlane() if libipsec else XfrmGuard()
            self.dataplane.install(prefixes, guard.rtp, bool(guarded), reach=list(guard.reach))
        except (DataPlaneError, XfrmGuardError, OSError) as exc:
            raise ControllerError(f"data plane: {exc}") from None
        if not libipsec:
            self.ticks.append(self._report_blocked)
        self.log("data-plane", mechanism="nftables-sink" if libipsec else "xfrm-block",
                 **({"sink": SINK} if libipsec else {}), required=[p.name for p in guarded], guarded=prefixes,
                 rtp_ports=f"{lo}-{hi}",
                 opportunistic=[p.name for p in self.cfg.peers if p.protect != "required"])

    def _report_blocked(self, now: float) -> None:
        """kernel-netlink: the packets the block policies kept from the WAN, at most once a second
        (the kernel counts them per namespace, not per call)."""
        reported, at = self._blocked
        if now - at < 1.0 or not isinstance(self.dataplane, XfrmGuard):
            return
        n = self.dataplane.blocked()
        if n > reported:
            self.log("media-blocked", packets=n - reported, total=n)
        self._blocked = (n, now)

    def _serve_metrics(self) -> None:
        """Bind the exporter after this machine's checks and before charon is changed: a busy
        address then stops the start having loaded nothing."""
        if self.exporter is None:
            return
        try:
            self.exporter.start()
        except OSError as exc:
            raise ControllerError(f"controller.metrics {self.exporter.url}: {exc.strerror or exc}") from None
        self.log("metrics-serving", url=self.exporter.url)

    def _serve_control(self) -> None:
        """The live views' socket, answered on this thread (shell/control.py)."""
        self.control = ControlServer(self.cfg.control_path, None if self.cfg.dry_run else self.cfg.vici)
        try:
            self.control.start()
        except OSError as exc:
            raise ControllerError(f"controller.control_socket {self.cfg.control_path}: {exc.strerror or exc}") from None
        control = self.control
        self.hooks[control.wake_r] = lambda: control.answer_pending(lambda req: answer_request(self, req, time.time()))
        self.log("control-socket", path=self.cfg.control_path)

    def _serve_ng(self) -> None:
        """Bind the ng endpoint (if configured) before charon is changed: a busy address stops the start."""
        if self.cfg.ng_listen is None:
            return
        try:
            self.ng = NgServer(self.cfg.ng_listen, self.cfg.ng_allow, self.log)
        except OSError as exc:
            where = f"{self.cfg.ng_listen[0]}:{self.cfg.ng_listen[1]}"
            raise ControllerError(f"controller.ng_listen {where}: {exc.strerror or exc}") from None
        self.log("ng-serving", listen=f"{self.cfg.ng_listen[0]}:{self.cfg.ng_listen[1]}", allow=self.cfg.ng_allow)

    def _ng_command(self, req: ControlRequest) -> tuple[dict, list[Action]]:
        """One proxy command into the core (on this thread, like a packet); its reply and actions."""
        assert self.core is not None
        return self.core.control(time.time(), req)

    def _check_charon(self) -> None:
        try:  # a hung charon fails the start in one line, after START_COMMAND_S
            self.charon = Charon(self.cfg.vici, START_COMMAND_S)
            version = self.charon.version()
            self.backend = self.charon.backend()
        except KeyingError as exc:
            if isinstance(exc, CharonTimeout):
                self.log("charon-timeout", op=exc.op, waited_s=exc.waited_s, action="start")
            raise ControllerError(str(exc)) from None
        self._check_timers(str(version.get("daemon") or "charon"))
        probe = probe_esp()
        self.log("backend", kernel_esp=probe.supported, probe=probe.detail, charon_backend=self.backend,
                 charon=f"{version.get('daemon')} {version.get('version')}")
        if self.cfg.backend != "auto" and self.cfg.backend != self.backend:
            raise ControllerError(f"configured backend {self.cfg.backend} but charon runs {self.backend}")
        if self.backend == "kernel-netlink" and not probe.supported:
            raise ControllerError("charon uses kernel-netlink but this kernel has no ESP: "
                                  "load charon's kernel-libipsec plugin instead")
        if self.backend == "unknown":
            raise ControllerError("charon has neither kernel-netlink nor kernel-libipsec loaded")
        self.esp = probe.supported
        refusal = peers_refusal(self.cfg.peers, self.backend, self.esp)
        if refusal is not None:
            raise ControllerError(refusal)

    def _check_timers(self, daemon: str) -> None:
        """One line, never a failure: do charon's IKE retransmission timers fit the budget?"""
        assert self.charon is not None
        fits, detail = timers_verdict(self.charon.sock.sock, daemon, self.cfg.budget)
        event = {True: "charon-timers", False: "charon-timers-warning", None: "charon-timers-unknown"}[fits]
        self.log(event, budget=self.cfg.budget, detail=detail)

    def _load_peers(self) -> None:
        assert self.charon is not None
        for peer in self.cfg.peers:
            self.charon.load_secret(peer)
            self.charon.load_peer(peer, {})
            self._loaded.append(peer)
            self.log("peer-loaded", peer=peer.name, conn=peer.conn, ike_local=peer.ike_local,
                     ike_remote=peer.ike_remote, remote_id=peer.remote_id, local_media=peer.local_media,
                     remote_media=peer.remote_media, rtp_ports=peer.rtp_ports)

    def _open_capture(self) -> None:
        try:
            # SIP on sockets of its own (a kernel filter): media never crowds signalling out
            self.capture = Capture(list(self.cfg.interfaces), sorted(self.cfg.sip_ports),
                                   list(self.cfg.media_interfaces))
        except Exception as exc:  # CaptureError; its message is the one line
            raise ControllerError(str(exc)) from None
        self.interfaces = dict(self.capture.interface_of)

    def shutdown(self) -> None:
        self.stop.set()
        now = time.time()
        if self.control is not None:
            self.control.close()
        live = isinstance(self.executor, Executor)
        if live:
            self.executor.stop()  # nothing is in flight once its workers have stopped
        if live and self.charon is not None:
            self._fresh_session()  # the start-up session may have died with a charon restart
        if self.core is not None:
            # live calls keep their SAs, routes and journal for the next run to adopt (a restart
            # or an upgrade does not put them in clear); --flush removes everything
            self.dispatch(self.core.shutdown(now, keep_live=not self.flush), inline=True)
        if self.charon is not None and self.flush:
            self._unload_peers()
        if live and self.core is not None:
            if self.flush:
                self.dispatch(self.core.release_routes())
                if self.journal is not None:
                    self.journal.clear()
            self.executor.close()
        if self.routing is not None:
            self.routing.close()
        if self.dataplane is not None:
            self.dataplane.close(flush=self.flush)
        if self.charon is not None:
            self.charon.close()
        if self.capture is not None:
            self.capture.close()
        if self.ng is not None:
            self.ng.close()
        self.log("stopped")
        if self.exporter is not None:
            self.exporter.stop()

    def _fresh_session(self) -> None:
        assert self.charon is not None
        self.charon.close()
        try:
            self.charon = Charon(self.cfg.vici)
        except KeyingError as exc:
            self.charon = None
            self.log("keying-failed", reason=f"at stop: {exc}")

    def _unload_peers(self) -> None:
        assert self.charon is not None
        # the peers charon holds now (a reload may have changed them since the start)
        for peer in self.executor.peers.values() if isinstance(self.executor, Executor) else self._loaded:
            try:
                for conn in peer.members():
                    for child in self.charon.child_sas(conn):
                        self.charon.terminate_child(child["uniqueid"])
                self.charon.unload_peer(peer)
            except KeyingError:
                pass

    def apply_peers(self, peers: tuple[PeerConfig, ...]) -> dict | str:
        """A re-read configuration's peers, applied live (SIGHUP; gateway/reconfig.py): what
        changes, or why nothing does (one line)."""
        assert self.core is not None
        refusal = peers_refusal(peers, self.backend, self.esp) if not self.cfg.dry_run else None
        if refusal is not None:
            return refusal
        changes, actions = self.core.reconfigure(time.time(), peers)
        if not isinstance(changes, str):
            self.cfg = dataclasses.replace(self.cfg, peers=peers)
        self.dispatch(actions)
        return changes

    def drain(self) -> None:
        """Key no new call; the live ones keep their SAs (the service stops once they are gone)."""
        self.draining = True
        if self.core is not None:
            self.dispatch(self.core.drain(time.time()))

    # -- the loop ----------------------------------------------------------------------------

    def dispatch(self, actions: list[Action], inline: bool = False) -> None:
        """Hand actions to the executor; what finishes at once goes back into the core."""
        assert self.core is not None and self.executor is not None
        todo: deque[Action] = deque(actions)
        while todo:
            a = todo.popleft()
            if isinstance(self.executor, Executor):
                done = self.executor.submit(a, self.charon if inline else None)
            else:
                done = self.executor.submit(a, time.time())
            for t, inp in done:
                todo.extend(self.core.receive(t, inp))

    def feed(self, outcomes: list[Outcome]) -> None:
        assert self.core is not None
        for t, inp in outcomes:
            self.dispatch(self.core.receive(t, inp))

    def on_packet(self, t: float, data: bytes, interface: str = "") -> None:
        assert self.core is not None
        self.dispatch(self.core.receive_packet(t, data, interface))

    def handle_due(self, now: float) -> None:
        assert self.core is not None
        nt = self.core.next_timer()
        if nt is not None and nt <= now:
            self.dispatch(self.core.handle_timer(now))

    def run(self) -> None:
        assert self.capture is not None and self.core is not None
        socks: list = list(self.capture.fileno_list())
        wake = self.executor.wake_r if isinstance(self.executor, Executor) else None
        if wake is not None:
            socks.append(wake)
        sink = self.dataplane.sink_fd if self.dataplane is not None else None
        if sink is not None:
            socks.append(sink)
        if self.ng is not None:
            socks.append(self.ng)
        socks.extend(self.hooks)
        while not self.stop.is_set():
            nt = self.core.next_timer()
            timeout = LOOP_TICK_S if nt is None else min(LOOP_TICK_S, max(0.0, nt - time.time()))
            readable, _, _ = select.select(socks, [], [], timeout)
            # signalling first: an answer read before the media that follows it
            readable.sort(key=lambda s: s not in self.capture.sip_socks)
            for s in readable:
                if s == wake:
                    assert isinstance(self.executor, Executor)
                    self.feed(self.executor.drain())
                    continue
                if s in self.hooks:
                    self.hooks[s]()
                    continue
                if s is self.ng:
                    self.dispatch(self.ng.serve(self._ng_command))
                    continue
                if s == sink:
                    assert self.dataplane is not None
                    for data in self.dataplane.read_sink():
                        self.on_packet(time.time(), data, SINK)
                    continue
                for t, data in self.capture.read(s):
                    self.on_packet(t, data, self.interfaces[s])
            self.handle_due(time.time())
            for tick in self.ticks:
                tick(time.time())
