"""The control socket's server and client over a real Unix socket: mode 0600 from the bind, answers
made only on the thread that plays the loop, one-line errors, a live second server refused, a dead
one's file replaced, nothing left after close."""

from __future__ import annotations

import os
import select
import socket
import stat
import threading
import time

import pytest

from ipsecrtp.shell.control import ControlError, ControlServer, query


class Loop:
    """The controller's loop as far as the server sees it: select on its wake-up pipe, answer."""

    def __init__(self, server: ControlServer) -> None:
        self.server, self.threads = server, set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def handle(self, req: dict) -> dict:
        self.threads.add(threading.get_ident())
        if req["cmd"] == "status":
            return {"calls": 3, "asked": req}
        raise ValueError("a view's bug")

    def run(self) -> None:
        while not self.stop.is_set():
            r, _, _ = select.select([self.server.wake_r], [], [], 0.1)
            if r:
                self.server.answer_pending(self.handle)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def server(tmp_path):
    s = ControlServer(str(tmp_path / "run" / "ctl.sock"), None)
    s.start()
    loop = Loop(s)
    yield s, loop
    loop.close()
    s.close()


def test_socket_is_private_and_answers_from_the_loop_thread_only(server):
    s, loop = server
    st = os.stat(s.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert query(s.path, {"cmd": "status", "x": 1}) == {"calls": 3, "asked": {"cmd": "status", "x": 1}}
    assert loop.threads == {loop.thread.ident}  # not the server's accept thread, not the client's


def test_bad_requests_and_failing_views_get_one_line(server):
    s, _ = server
    with pytest.raises(ControlError, match="bad request: cmd must be one of"):
        query(s.path, {"cmd": "reboot"})
    with pytest.raises(ControlError, match="ValueError: a view's bug"):
        query(s.path, {"cmd": "drain"})
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(s.path)
    raw.sendall(b"not json\n")
    assert b"bad request" in raw.recv(4096)
    raw.close()
    assert query(s.path, {"cmd": "status"})["calls"] == 3  # and it still serves


def test_a_second_server_is_refused_a_dead_ones_file_replaced_and_close_removes_it(server, tmp_path):
    s, _ = server
    with pytest.raises(OSError, match="another controller answers"):
        ControlServer(s.path, None).start()
    stale = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(stale)
    dead.close()  # the file stays, nobody listens: what a killed controller leaves
    again = ControlServer(stale, None)
    again.start()
    again.close()
    again.close()  # twice is harmless
    assert not os.path.exists(stale)
    with pytest.raises(ControlError, match="no controller answers on"):
        query(stale, {"cmd": "status"})


def test_a_stopped_loop_is_reported_not_waited_for_forever(tmp_path, monkeypatch):
    monkeypatch.setattr("ipsecrtp.shell.control.LOOP_ANSWER_S", 0.3)
    s = ControlServer(str(tmp_path / "c.sock"), None)
    s.start()
    try:
        with pytest.raises(ControlError, match="loop did not answer"):
            query(s.path, {"cmd": "status"})
    finally:
        s.close()


def test_a_request_queued_at_the_stop_is_told_at_once(tmp_path):
    s = ControlServer(str(tmp_path / "c.sock"), None)
    s.start()
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(r=_ask(s.path)))
    t.start()
    while s.requests.empty():  # queued: the loop (none here) would answer it
        time.sleep(0.01)
    s.close()
    t.join()
    assert got["r"] == "the controller is stopping"  # told by close(), not by the loop's time-out


def _ask(path: str) -> str:
    try:
        query(path, {"cmd": "status"})
    except ControlError as exc:
        return str(exc).split(": ", 1)[1]
    return "answered"
