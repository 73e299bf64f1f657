"""Every wait for charon is bounded (issue 15 item 4): against a VICI socket that a hung process
holds (it accepts into the kernel's backlog and never answers, as a SIGSTOPped charon does), and
one that answers the event registration of a streamed command and then nothing (the vici library
sends the unregistration from a ``finally`` and would wait once more). Real sockets, real vici
framing; the real charon's hang is the lab test (tests/lab/test_charon_hung.py)."""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
import time

import pytest

from ipsecrtp.keying.strongswan import Charon, CharonTimeout, listen

EVENT_CONFIRM = 5


@pytest.fixture
def sock_path():
    with tempfile.TemporaryDirectory() as d:
        yield os.path.join(d, "charon.vici")


def hung(path: str) -> socket.socket:
    """Listening, never accepting: connects succeed, nothing is ever read or answered."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    return s


def confirms_then_hangs(path: str, stop: threading.Event) -> socket.socket:
    """Answers each event (un)registration with a confirmation and any command with nothing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)

    def serve() -> None:
        conn, _ = s.accept()
        conn.settimeout(0.1)
        with conn:
            while not stop.is_set():
                try:
                    head = conn.recv(4)
                except TimeoutError:
                    continue
                if len(head) < 4:
                    return
                body = conn.recv(struct.unpack("!I", head)[0])
                if body[0] in (3, 4):  # EVENT_REGISTER, EVENT_UNREGISTER
                    conn.sendall(struct.pack("!IB", 1, EVENT_CONFIRM))

    threading.Thread(target=serve, daemon=True).start()
    return s


def test_a_command_to_a_hung_charon_times_out_and_the_session_is_done(sock_path):
    server = hung(sock_path)
    try:
        c = Charon(sock_path, timeout=0.3)
        with pytest.raises(CharonTimeout) as err:
            c.version()
        assert err.value.op == "version"
        assert str(err.value).startswith("charon-timeout: version")
        assert c.broken
        # a late answer would be read as the next command's: the session refuses at once, with the
        # time-out that broke it (a clean-up in a finally must not hide which command hung)
        with pytest.raises(CharonTimeout) as again:
            c.conns()
        assert (again.value.op, again.value.waited_s) == ("version", 0.3)
    finally:
        server.close()


def test_a_streamed_command_waits_once_not_twice(sock_path):
    """initiate registers for log events, sends the command and waits; after the time-out the
    library unregisters from a finally: that wait must not add a second time-out."""
    stop = threading.Event()
    server = confirms_then_hangs(sock_path, stop)
    try:
        c = Charon(sock_path, timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(CharonTimeout) as err:
            c.initiate_child("conn", "child", timeout_s=0.7)  # socket deadline: 0.7 + 1 s margin
        waited = time.monotonic() - t0
        assert err.value.op == "initiate"
        assert err.value.waited_s == pytest.approx(1.7)
        assert waited < 1.5 * err.value.waited_s  # one deadline, not one per read
    finally:
        stop.set()
        server.close()


def test_listening_to_a_hung_charon_times_out_at_registration(sock_path):
    server = hung(sock_path)
    try:
        with pytest.raises(CharonTimeout) as err:
            next(listen(sock_path, timeout=0.3))
        assert err.value.op == "listen"
    finally:
        server.close()


def test_listening_polls_once_registered(sock_path):
    stop = threading.Event()
    server = confirms_then_hangs(sock_path, stop)
    try:
        events = listen(sock_path, poll=0.1, timeout=0.3)
        polls = [next(events)[0] for _ in range(5)]  # no events: a poll each 0.1 s, for ever
        assert polls == [None] * 5
        events.close()
    finally:
        stop.set()
        server.close()
