"""Running the controller as a system service: systemd's notify protocol, signals and draining.

- Readiness: ``READY=1`` on ``$NOTIFY_SOCKET`` once :meth:`Controller.start` returned (peers loaded
  in charon, capture open, control socket bound), ``STOPPING=1`` at the stop, ``STATUS=`` lines.
- Watchdog: with ``$WATCHDOG_USEC`` set (``WatchdogSec=`` in the unit) a ``WATCHDOG=1`` from the
  loop's own turns every half interval: a loop that stops turning is restarted by systemd.
- SIGTERM/SIGINT stop cleanly (live calls keep their SAs for the next run to adopt); SIGHUP re-reads
  the configuration file: an invalid one is refused with one line and the controller runs on; a
  valid one's peer additions, removals and changes are applied live without touching calls of
  unchanged peers (gateway/reconfig.py); changed ``[controller]`` keys are named for a restart.
- Draining (``ipsecrtp drain`` over the control socket): no new call is keyed; once no SA of a
  call is left, the controller stops.

The notify protocol is a few lines over a Unix datagram socket (sd_notify(3)); no maintained PyPI
package for it is available here (``sdnotify`` and ``systemd-python`` are not in the registry
lists, ``cysystemd`` needs libsystemd's headers and a C build for these few lines).
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import fields

from .config import ConfigError, ControllerConfig, load
from .controller import Controller

DRAIN_CHECK_S = 0.5  # how often a draining controller looks whether its last call has ended
# once no SA is held: how long it still runs, for charon's child-updown of the last removal (its
# sa-down line, the call's timeline) to come in before the stop
DRAIN_GRACE_S = 1.0


class Notifier:
    """sd_notify(3): one datagram per message to ``$NOTIFY_SOCKET`` (a path, or ``@`` for Linux's
    abstract namespace); nothing at all when the variable is unset (not run by systemd)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())  # a watchdog meant for another process is not ours
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and ours else None
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def notify(self, *lines: str) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            return False  # systemd gone or the socket full: the service goes on regardless
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def config_diff(old: ControllerConfig, new: ControllerConfig) -> dict:
    """What a re-read configuration changes: peers added, removed and changed (by name), and the
    [controller] keys whose value differs."""
    before = {p.name: p for p in old.peers}
    after = {p.name: p for p in new.peers}
    keys = [f.name for f in fields(ControllerConfig) if f.name != "peers"
            and getattr(old, f.name) != getattr(new, f.name)]
    return {"added": sorted(after.keys() - before.keys()), "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
            "controller_keys": keys}


class Service:
    """The controller's run, with systemd's protocol and the signals wired to it."""

    def __init__(self, ctl: Controller, config_path: str, notifier: Notifier | None = None) -> None:
        self.ctl, self.config_path = ctl, config_path
        self.notifier = notifier or Notifier()
        self.reload_asked = False
        self.last_ping = 0.0
        self.last_drain_check = 0.0
        self.empty_since: float | None = None  # draining: since when no SA is held

    def install_signals(self) -> None:
        """Handlers only set flags: the work happens on the loop's turn (the core's thread)."""
        signal.signal(signal.SIGTERM, lambda *_: self.ctl.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.ctl.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_asked", True))

    def run(self) -> None:
        """After a successful start: tell systemd, turn the loop until a stop, then stop."""
        self.ctl.ticks.append(self.tick)
        self.notifier.notify("READY=1", f"STATUS=keying for {len(self.ctl.cfg.peers)} peers",
                             f"MAINPID={os.getpid()}")
        self.ctl.log("ready", notify=bool(self.notifier.address), watchdog_s=self.notifier.watchdog_s)
        try:
            self.ctl.run()
        finally:
            self.notifier.notify("STOPPING=1", "STATUS=stopping")
            self.ctl.shutdown()
            self.notifier.close()

    def tick(self, now: float) -> None:
        """On each turn of the loop (at least every 0.5 s)."""
        wd = self.notifier.watchdog_s
        if wd is not None and now - self.last_ping >= wd / 2:
            self.notifier.notify("WATCHDOG=1")
            self.last_ping = now
        if self.reload_asked:
            self.reload_asked = False
            self.reload()
        if self.ctl.draining and now - self.last_drain_check >= DRAIN_CHECK_S:
            self.last_drain_check = now
            self._drained()

    def _drained(self) -> None:
        core = self.ctl.core
        assert core is not None
        now = self.last_drain_check
        left = len(core.snapshot(now)["sas"])
        self.notifier.notify(f"STATUS=draining: {left} SAs of live calls left")
        if left:
            self.empty_since = None
            return
        if self.empty_since is None:
            self.empty_since = now
        elif now - self.empty_since >= DRAIN_GRACE_S:
            self.ctl.log("drained")
            self.ctl.stop.set()

    def reload(self) -> None:
        """SIGHUP: validate the file again; refuse an invalid one (one line); apply its peers."""
        self.notifier.notify("RELOADING=1")
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            self.ctl.log("reload-refused", reason=str(exc), consequence="running on with the configuration it has")
            self.notifier.notify("READY=1", f"STATUS=reload refused: {exc}")
            return
        diff = config_diff(self.ctl.cfg, new)
        peers = {k: diff[k] for k in ("added", "removed", "changed")}
        if not any(diff.values()):
            self.ctl.log("reloaded", changes="none")
        elif any(peers.values()):
            # applied live: calls of unchanged peers are not touched (gateway/reconfig.py)
            applied = self.ctl.apply_peers(new.peers)
            if isinstance(applied, str):
                self.ctl.log("reload-refused", reason=applied, consequence="running on with the peers it has")
            else:
                self.ctl.log("reloaded", **applied)
        if diff["controller_keys"]:
            # the capture, the sockets and the limits are fixed for the run: named for a restart
            self.ctl.log("reload-needs-restart", controller_keys=diff["controller_keys"],
                         consequence="running on with these [controller] keys as they were; a restart applies "
                                     "them (live calls keep their SAs and are adopted)")
        self.notifier.notify("READY=1", "STATUS=configuration re-read")
