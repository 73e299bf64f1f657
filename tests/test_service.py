"""systemd's notify protocol, signals and reload, against a real controller process: this machine has
no systemd as PID 1 (``systemd-run`` fails: "System has not been booted with systemd"), so the test
plays systemd's side with a real Unix datagram socket as ``$NOTIFY_SOCKET``, as systemd itself does.

The controller runs in dry-run mode (no charon needed) in a namespace of its own, capturing on its
loopback; readiness, watchdog pings, SIGHUP with an invalid then a changed file, and SIGTERM."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from ipsecrtp.config import load
from ipsecrtp.log import read_log
from ipsecrtp.netns import proc
from ipsecrtp.service import Notifier, config_diff
from ipsecrtp.shell.control import query

CONFIG = """\
[controller]
name = "svc"
dry_run = true
interfaces = ["lo"]
vici = "unix:///nonexistent/charon.vici"
state_dir = "{dir}/state"

[[peer]]
name = "gwb"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["192.0.2.0/24"]
remote_media = ["203.0.113.0/24"]
psk_file = "{dir}/psk"
strategy = "{strategy}"
"""


def test_notifier_speaks_sd_notify_over_a_datagram_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "3000000"})
    assert n.watchdog_s == 3.0 and n.notify("READY=1", "STATUS=x")
    assert sock.recv(4096) == b"READY=1\nSTATUS=x"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = "ipsecrtp-test-" + secrets.token_hex(4)
    abstract.bind("\0" + name)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("WATCHDOG=1")
    assert abstract.recv(64) == b"WATCHDOG=1"
    # not under systemd: silent; a watchdog meant for another process: not ours to ping
    assert not Notifier({}).notify("READY=1")
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "3000000",
                     "WATCHDOG_PID": "1"}).watchdog_s is None
    sock.close()
    abstract.close()


def test_config_diff_names_peers_and_keys(tmp_path):
    (tmp_path / "psk").write_text("k" * 32)
    os.chmod(tmp_path / "psk", 0o600)
    for s in ("child-per-call", "speculative"):
        (tmp_path / f"{s}.toml").write_text(CONFIG.format(dir=tmp_path, strategy=s))
    a, b = load(str(tmp_path / "child-per-call.toml")), load(str(tmp_path / "speculative.toml"))
    assert config_diff(a, a) == {"added": [], "removed": [], "changed": [], "controller_keys": []}
    assert config_diff(a, b) == {"added": [], "removed": [], "changed": ["gwb"], "controller_keys": []}


class Systemd:
    """systemd's side of the protocol: the datagrams a service sends to its notify socket."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.got: list[tuple[float, str]] = []

    def pending(self) -> list[str]:
        """Every message queued on the socket now."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        self.got.extend((time.monotonic(), m) for m in out)
        return out

    def wait(self, field: str, timeout: float, alive=lambda: True) -> float:
        """Until a message holding ``field`` (while ``alive()``); when it came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            self.sock.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), msg))
            if field in msg.split("\n"):
                return self.got[-1][0]
        raise AssertionError(f"no {field} within {timeout} s; got {self.got}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")
def test_a_real_controller_under_the_notify_protocol(tmp_path):
    ns = "irtp-svc-" + secrets.token_hex(4)
    d = str(tmp_path)
    (tmp_path / "psk").write_text("k" * 32)
    os.chmod(tmp_path / "psk", 0o600)
    cfg = tmp_path / "controller.toml"
    cfg.write_text(CONFIG.format(dir=d, strategy="child-per-call"))
    log = str(tmp_path / "controller.log")
    systemd = Systemd(str(tmp_path / "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    pid = st = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        pid, st = proc.spawn(ns, [sys.executable, "-m", "ipsecrtp", "run", "--config", str(cfg)], log, env=env)
        # a cold start's imports may be slow on a loaded machine; a controller that died is told at once
        systemd.wait("READY=1", 120, alive=lambda: proc.reap(pid) or proc.alive(pid, st))
        assert proc.alive(pid, st), open(log).read()[-2000:]
        # ready means started: the capture open and the control socket answering
        assert [e["event"] for e in read_log(log)].count("started") == 1
        sock = load(str(cfg)).control_path
        assert query(sock, {"cmd": "status"})["calls"] == 0
        # watchdog: pings from the loop's turns, about every half interval (0.5 s; the loop turns
        # at least every 0.5 s): several within 3 s, none required sooner than that
        systemd.pending()
        time.sleep(3.0)
        assert systemd.pending().count("WATCHDOG=1") >= 3
        # SIGHUP with a broken file: refused in one line, the controller runs on and still answers
        cfg.write_text(CONFIG.format(dir=d, strategy="zzz"))
        os.kill(pid, signal.SIGHUP)
        systemd.wait("RELOADING=1", 10)
        systemd.wait("READY=1", 10)
        [refused] = [e for e in read_log(log) if e["event"] == "reload-refused"]
        assert "peer[0].strategy: 'zzz' is not one of" in refused["reason"]
        assert proc.alive(pid, st) and query(sock, {"cmd": "status"})["calls"] == 0
        # SIGHUP with a changed peer: applied live (no call to re-key here; tests/lab/test_reload.py
        # has live calls and charon), then a changed [controller] key: named for a restart
        cfg.write_text(CONFIG.format(dir=d, strategy="speculative"))
        os.kill(pid, signal.SIGHUP)
        systemd.wait("RELOADING=1", 10)
        systemd.wait("READY=1", 10)
        [applied] = [e for e in read_log(log) if e["event"] == "reloaded"]
        assert applied["changed"] == ["gwb"] and applied["added"] == applied["removed"] == []
        assert [e["peer"] for e in read_log(log) if e["event"] == "peer-loaded"] == ["gwb"]
        assert [e for e in read_log(log) if e["event"] == "reload-needs-restart"] == []
        cfg.write_text(CONFIG.format(dir=d, strategy="speculative").replace('name = "svc"', 'name = "svc2"'))
        os.kill(pid, signal.SIGHUP)
        systemd.wait("RELOADING=1", 10)
        systemd.wait("READY=1", 10)
        [named] = [e for e in read_log(log) if e["event"] == "reload-needs-restart"]
        assert named["controller_keys"] == ["name"]
        # SIGTERM: STOPPING=1, a clean exit, the control socket gone
        os.kill(pid, signal.SIGTERM)
        systemd.wait("STOPPING=1", 10)
        assert proc.wait_exit(pid, st, 20)
        assert not os.path.exists(sock)
        assert [e["event"] for e in read_log(log)][-1] == "stopped"
    finally:
        if pid is not None:
            proc.kill(pid, st)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        systemd.sock.close()
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


UNIT = os.path.join(os.path.dirname(__file__), "..", "ipsecrtp", "data", "ipsecrtp@.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_unit_file_passes_systemd_analyze_verify(tmp_path):
    """systemd's own parser (offline, no PID 1 needed) finds nothing to say about the unit; a broken
    copy shows the check can fail. ExecStart names the venv's entry point here (systemd resolves a
    bare name in its fixed search path, /usr/local/bin where pip puts it on a gateway)."""
    text = open(UNIT).read()
    assert "Type=notify\n" in text and "WatchdogSec=" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    entry = os.path.join(os.path.dirname(sys.executable), "ipsecrtp")
    good = tmp_path / "ipsecrtp@gw1.service"
    good.write_text(text.replace("ExecStart=ipsecrtp ", f"ExecStart={entry} "))
    r = subprocess.run(["systemd-analyze", "verify", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    bad = tmp_path / "ipsecrtp@gw2.service"
    bad.write_text(good.read_text().replace("Type=notify", "Type=notfy").replace("WatchdogSec=30", "WatchdogSec=x"))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert "Failed to parse service type" in r.stderr and "Failed to parse sec value" in r.stderr
    # the ExecStart command line is one the installed command accepts
    argv = next(line for line in text.splitlines() if line.startswith("ExecStart=")).split("=", 1)[1].split()
    assert argv[:2] == ["ipsecrtp", "run"] and argv[2] == "--config"
    r = subprocess.run([sys.executable, "-m", "ipsecrtp", "run", "--config", str(tmp_path / "missing.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "missing.toml: No such file or directory" in r.stderr
