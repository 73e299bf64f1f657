"""Processes and sockets inside named network namespaces, tracked by pid and start time."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def start_time(pid: int) -> int | None:
    """Kernel start time of a pid (field 22 of /proc/PID/stat), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def spawn(ns: str, argv: list[str], log_path: str, env: dict | None = None) -> tuple[int, int]:
    """Start argv inside namespace ns with output to log_path; returns (pid, start time)."""
    with open(log_path, "ab") as log:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True)
    st = None
    for _ in range(50):
        st = start_time(p.pid)
        if st is not None:
            break
        time.sleep(0.01)
    return p.pid, st or 0


def alive(pid: int, st: int) -> bool:
    return start_time(pid) == st


def kill(pid: int, st: int, grace: float = 5.0) -> None:
    """Stop exactly this process (pid and start time must match), TERM then KILL."""
    if not alive(pid, st):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pid)
        if not alive(pid, st):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(100):
        reap(pid)
        if not alive(pid, st):
            return
        time.sleep(0.02)


def reap(pid: int) -> None:
    """Collect an exited child of ours (until then it stays a zombie, and ``alive``)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass




def wait_exit(pid: int, st: int, timeout: float) -> bool:
    """Wait for this process (pid and start time) to end by itself; whether it did within timeout."""
    deadline = time.monotonic() + timeout
    while alive(pid, st):
        reap(pid)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def ns_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()] if r.returncode == 0 else []


def run(ns: str | None, *argv: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(cmd, capture_output=capture, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r


def in_netns(ns: str, fn, *args):
    """Run fn(*args) on a helper thread that has joined namespace ns (setns is per thread)."""
    result: dict = {}

    def target() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {ns}")
            try:
                result["value"] = fn(*args)
            finally:
                _libc.setns(own, CLONE_NEWNET)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc
        finally:
            os.close(fd)
            os.close(own)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def connect_tcp(ns: str, addr: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP connection made from inside ns (the socket stays in that namespace)."""
    def make() -> socket.socket:
        s = socket.create_connection(addr, timeout=timeout)
        return s
    return in_netns(ns, make)
