"""The control socket: a local Unix socket (mode 0600) an operator's ``ipsecrtp calls``/``sas`` ask.

One JSON request line in, one JSON answer line out. A thread accepts and reads requests; it never
touches the gateway core (which lives on the loop's thread only): it queues each request and wakes
the loop through a pipe the loop selects on, the loop answers it from the core's read-only
snapshot (:meth:`ControlServer.answer_pending`), and the thread writes the answer, after adding
charon's own figures for each SA (state, bytes, packets) over a VICI session of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import stat
import threading
from collections.abc import Callable

from ..keying.strongswan import Charon, KeyingError

MAX_REQUEST = 4096
CLIENT_TIMEOUT_S = 2.0  # a client that does not send its request line in this time is dropped
LOOP_ANSWER_S = 5.0  # how long a request waits for the loop (a loop stalled longer is itself news)
COMMANDS = ("calls", "sas", "status", "drain")


class ControlError(RuntimeError):
    """One line for the operator: no controller there, or it refused the request."""


class _Request:
    def __init__(self, body: dict) -> None:
        self.body, self.answer, self.done = body, {}, threading.Event()


class ControlServer:
    def __init__(self, path: str, vici: str | None) -> None:
        self.path, self.vici = path, vici
        self.sock: socket.socket | None = None
        self.requests: queue.Queue[_Request] = queue.Queue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (0600 from the start: the umask covers the window before chmod) and serve."""
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        sock.settimeout(0.5)  # the accept loop notices a stop this often
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self.thread.start()

    def _clear_stale(self) -> None:
        """A socket file a dead controller left is removed; one a live controller answers on is an
        error (two controllers of one gateway would key every call twice)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)
            return
        finally:
            probe.close()
        raise OSError(f"another controller answers on {self.path}")

    def close(self) -> None:
        if self.stopping.is_set():
            return  # closed already (its pipe's descriptor numbers may belong to someone else by now)
        self.stopping.set()
        while not self.requests.empty():  # the loop answers none any more: told at once, not in 5 s
            r = self.requests.get_nowait()
            r.answer = {"error": "the controller is stopping"}
            r.done.set()
        if self.thread is not None:
            self.thread.join(timeout=LOOP_ANSWER_S + CLIENT_TIMEOUT_S + 1)
        if self.sock is not None:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the loop's side ---------------------------------------------------------------------

    def answer_pending(self, handle: Callable[[dict], dict]) -> None:
        """On the loop's thread: answer every queued request with ``handle`` (the core's snapshot)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 4096)
        while True:
            try:
                r = self.requests.get_nowait()
            except queue.Empty:
                return
            try:
                r.answer = handle(r.body)
            except Exception as exc:  # noqa: BLE001 - a view's bug must not stop the controller
                r.answer = {"error": f"{type(exc).__name__}: {exc}"}
            r.done.set()

    # -- the thread's side -------------------------------------------------------------------

    def _serve(self) -> None:
        assert self.sock is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._one(conn)
                except OSError:
                    pass  # the client went away: nothing to tell it

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        body = _read_line(conn)
        try:
            req = json.loads(body)
            if not isinstance(req, dict) or req.get("cmd") not in COMMANDS:
                raise ValueError(f"cmd must be one of {', '.join(COMMANDS)}")
        except ValueError as exc:
            _send(conn, {"error": f"bad request: {exc}"})
            return
        r = _Request(req)
        self.requests.put(r)
        os.write(self.wake_w, b"x")
        if not r.done.wait(LOOP_ANSWER_S):
            _send(conn, {"error": f"the controller's loop did not answer within {LOOP_ANSWER_S:.0f} s"})
            return
        answer = r.answer
        if req["cmd"] in ("calls", "sas") and "error" not in answer:
            self._add_charon(answer)
        _send(conn, answer)

    def _add_charon(self, answer: dict) -> None:
        """Charon's figures for each SA the core names (matched by CHILD_SA id), on this thread's
        own VICI session: the core and the loop's sessions are not touched."""
        if not self.vici:
            answer["charon"] = "not asked (dry run)"
            return
        try:
            charon = Charon(self.vici)
        except KeyingError as exc:
            answer["charon"] = str(exc)
            return
        try:
            children = {c.get("uniqueid"): c for c in charon.child_sas()}
        except (KeyingError, OSError) as exc:
            answer["charon"] = str(exc)
            return
        finally:
            charon.close()
        answer["charon"] = "ok"
        sas = list(answer.get("sas", []))
        for c in answer.get("calls", []):
            sas.extend(c.get("sas", []))
        for sa in sas:
            c = children.get(sa.get("sa"))
            sa["charon"] = None if c is None else {
                "state": c.get("state"), "bytes_in": _int(c.get("bytes-in")), "bytes_out": _int(c.get("bytes-out")),
                "packets_in": _int(c.get("packets-in")), "packets_out": _int(c.get("packets-out")),
                "install_time_s": _int(c.get("install-time")), "ike": c.get("ike"), "ike_id": c.get("ike-id"),
                "local_ts": c.get("local-ts"), "remote_ts": c.get("remote-ts")}
        answer["charon_sas"] = len(children)


def answer_request(ctl, req: dict, now: float) -> dict:
    """On the loop's thread: a request answered from the core's read-only snapshot (``ctl`` is the
    controller: its core, and its draining flag for the one command that changes something)."""
    core = ctl.core
    if core is None:
        return {"error": "the controller is still starting"}
    cmd = req["cmd"]
    if cmd == "drain":
        ctl.drain()
    snap = core.snapshot(now)
    head = {k: snap[k] for k in ("gateway", "backend", "time")}
    head["draining"] = bool(ctl.draining)
    if cmd == "calls":
        want = str(req.get("call") or "")
        calls = [c for c in snap["calls"] if c["call"].startswith(want)]
        if want and not calls:
            return {"error": f"no live call {want!r}"}
        return {**head, "calls": calls}
    if cmd == "sas":
        return {**head, "sas": snap["sas"]}
    return {**head, "calls": len(snap["calls"]), "sas": len(snap["sas"]),
            "keyed": len({s["call"] for s in snap["sas"]})}


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf and len(buf) <= MAX_REQUEST:
        chunk = conn.recv(1024)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0]


def _send(conn: socket.socket, answer: dict) -> None:
    conn.sendall(json.dumps(answer, default=str).encode() + b"\n")


def query(path: str, request: dict, timeout: float = LOOP_ANSWER_S + 5) -> dict:
    """Ask the controller listening on ``path``; :class:`ControlError` with one line if none does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError as exc:
        raise ControlError(f"no controller answers on {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path}: the controller's answer is not JSON") from None
    if "error" in answer:
        raise ControlError(f"{path}: {answer['error']}")
    return answer
