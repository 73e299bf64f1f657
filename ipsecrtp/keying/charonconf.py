"""The IKE retransmission timers of the charon that answers a VICI socket, read from the
strongswan.conf that process was started with.

charon 5.9 has no VICI command that returns its settings (``stats`` lists plugins and queues,
``version`` the daemon's name; no ``get-settings``). So: the VICI socket's peer credentials
(SO_PEERCRED) name the charon process; its environment says which file it read
(``STRONGSWAN_CONF``, else the compiled-in /etc/strongswan.conf); the file and its ``include``s
are read through ``/proc/PID/root``, i.e. in charon's own mount namespace. That is what charon
uses for IKE_SAs set up after its start or its last ``swanctl --reload-settings``: an edit since
then without a reload is read here but not yet used by charon.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import struct
from dataclasses import dataclass

from .charontimers import Timers, check, limits_for

DEFAULT_CONF = "/etc/strongswan.conf"
_KEY = re.compile(r"([^\s=:{}]+)\s*=\s*(.*)")
_SECTION = re.compile(r"([^\s=:{}]+)\s*(?::[^{]*)?\{(.*)")
_INCLUDE = re.compile(r"include\s+(\S+)")
MAX_INCLUDE_DEPTH = 10


class ConfError(RuntimeError):
    """The running charon's settings could not be read; ``str(err)`` is one line."""


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _value(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return raw


def parse(path: str, root: str = "/", out: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
          depth: int = 0) -> dict[str, str]:
    """strongswan.conf as flat dotted keys (``charon.retransmit_timeout``); a later value of a key
    replaces an earlier one, as in charon. ``root``: the file system the paths are in (charon's
    ``/proc/PID/root``). Sections, ``key = value``, ``include GLOB`` (relative to the including
    file), ``#`` comments and section references (``a : b {``, whose inherited keys are not
    followed). Quoted values spanning lines are not read."""
    out = {} if out is None else out
    try:
        with open(os.path.join(root, path.lstrip("/")), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        if depth == 0:
            raise ConfError(f"{path}: {exc.strerror or exc}") from None
        return out
    stack = list(prefix)
    for raw in lines:
        line = _strip_comment(raw).strip()
        while line:
            if line.startswith("}"):
                if len(stack) > len(prefix):
                    stack.pop()
                line = line[1:].strip()
            elif m := _INCLUDE.match(line):
                pattern = m.group(1)
                if not pattern.startswith("/"):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                if depth < MAX_INCLUDE_DEPTH:
                    for inc in sorted(glob.glob(os.path.join(root, pattern.lstrip("/")))):
                        parse("/" + os.path.relpath(inc, root), root, out, tuple(stack), depth + 1)
                line = ""
            elif m := _KEY.match(line):
                out[".".join([*stack, m.group(1)])] = _value(m.group(2))
                line = ""
            elif m := _SECTION.match(line):
                stack.append(m.group(1))
                line = m.group(2).strip()
            else:
                line = ""  # not a construct this reader knows: skipped
    return out


def timers_from(settings: dict[str, str], daemon: str = "charon") -> Timers:
    """The timers a daemon uses (charon-systemd falls back to charon's section), charon's defaults
    where unset; a value charon could not parse either is read as its default."""
    d = Timers()

    def get(key: str, default: float) -> float:
        for section in dict.fromkeys((daemon, "charon")):
            v = settings.get(f"{section}.{key}")
            if v is not None:
                try:
                    return float(v)
                except ValueError:
                    return default
        return default

    return Timers(get("retransmit_timeout", d.timeout), get("retransmit_base", d.base),
                  int(get("retransmit_tries", d.tries)))


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process serving a connected AF_UNIX socket (the one that listened)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


def conf_of(pid: int) -> str:
    """The strongswan.conf a charon process read: its STRONGSWAN_CONF, else the default."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError as exc:
        raise ConfError(f"charon's environment (pid {pid}): {exc.strerror or exc}") from None
    for kv in env:
        if kv.startswith(b"STRONGSWAN_CONF="):
            return kv.split(b"=", 1)[1].decode(errors="replace")
    return DEFAULT_CONF


@dataclass(frozen=True)
class RunningTimers:
    timers: Timers
    source: str  # where they were read: "pid 1234: /etc/strongswan.conf"


def running_timers(sock: socket.socket, daemon: str = "charon") -> RunningTimers:
    """The timers of the charon at the other end of a VICI socket (see the module's doc)."""
    pid = peer_pid(sock)
    if pid <= 0:
        raise ConfError("the VICI socket's peer has no process id (not a local charon)")
    path = conf_of(pid)
    return RunningTimers(timers_from(parse(path, root=f"/proc/{pid}/root"), daemon), f"pid {pid}: {path}")


def timers_verdict(sock: socket.socket, daemon: str, budget_name: str) -> tuple[bool | None, str]:
    """(True, what was read) when the running charon's timers fit the budget, (False, the one-line
    warning) when they do not, (None, why) when they could not be read."""
    try:
        rt = running_timers(sock, daemon)
    except (ConfError, OSError, ValueError, OverflowError) as exc:  # never a reason to fail: unknown
        return None, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ConfError) else str(exc)
    warning = check(rt.timers, budget_name, limits_for(budget_name))
    t = rt.timers
    read = f"retransmit_timeout {t.timeout:g} s, base {t.base:g}, tries {t.tries} ({rt.source})"
    return (False, f"{warning} [{read}]") if warning else (True, read)
