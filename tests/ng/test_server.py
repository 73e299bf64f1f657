"""The ng endpoint's socket (shell/ng.py) on real UDP sockets over loopback: allowed sources get
replies, others are dropped unread with one log line and a counter, a retransmitted request gets
the first reply without its command running twice."""

from __future__ import annotations

import io
import json
import socket

import fastbencode
import pytest

from ipsecrtp.gateway.control import ControlRequest
from ipsecrtp.log import DecisionLog
from ipsecrtp.shell.ng import NgServer


@pytest.fixture
def server():
    stream = io.StringIO()
    srv = NgServer(("127.0.0.1", 0), ("127.0.0.1/32",), DecisionLog(stream))
    srv.calls: list[ControlRequest] = []

    def handler(req: ControlRequest):
        srv.calls.append(req)
        return ({"result": "pong"} if req.command == "ping" else {"result": "ok", "n": len(srv.calls)}), []

    srv.handler = handler
    srv.stream = stream
    yield srv
    srv.close()


def client(addr: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    s.settimeout(0.5)
    return s


def exchange(srv: NgServer, c: socket.socket, data: bytes) -> bytes | None:
    c.sendto(data, srv.sock.getsockname())
    # the datagram is in the server's queue once sendto returned (loopback): serve it now
    srv.serve(srv.handler)
    try:
        return c.recv(65535)
    except TimeoutError:
        return None


def logs(srv: NgServer, event: str) -> list[dict]:
    return [r for r in map(json.loads, srv.stream.getvalue().splitlines()) if r["event"] == event]


def test_ping_from_an_allowed_source(server):
    with client() as c:
        out = exchange(server, c, b"abc " + fastbencode.bencode({b"command": b"ping"}))
    assert out == b"abc d6:result4:ponge"


def test_an_unconfigured_source_is_dropped_unread_with_one_log_line_and_a_counter(server):
    with client("127.0.0.2") as c:
        for i in range(5):
            assert exchange(server, c, b"x%d " % i + fastbencode.bencode({b"command": b"ping"})) is None
    assert server.calls == [] and server.refused == 5
    (line,) = logs(server, "ng-source-refused")
    assert line["source"] == "127.0.0.2" and line["refused_total"] == 1


def test_a_retransmission_gets_the_same_reply_and_runs_once(server):
    data = b"k1 " + fastbencode.bencode({b"command": b"query", b"call-id": b"c"})
    with client() as c:
        first = exchange(server, c, data)
        second = exchange(server, c, data)
        third = exchange(server, c, b"k2" + data[2:])
    assert first == second and len(server.calls) == 2 and third != first


def test_malformed_input_gets_an_error_reply_and_a_log_line(server):
    with client() as c:
        out = exchange(server, c, b"k9 d7:command6:reboote")
        none = exchange(server, c, b"nocookie")
    assert out.startswith(b"k9 ")
    reply = fastbencode.bdecode(out[3:])
    assert reply[b"result"] == b"error" and b"unknown command" in reply[b"error-reason"]
    assert none is None and server.calls == [] and server.rejected == 2
    assert len(logs(server, "ng-rejected")) == 2


def test_a_reply_too_large_for_a_datagram_becomes_an_error_reply(server):
    big = ({"result": "ok", "calls": ["x" * 1000] * 100}, [])
    with client() as c:
        c.sendto(b"k5 " + fastbencode.bencode({b"command": b"list"}), server.sock.getsockname())
        server.serve(lambda req: big)
        out = c.recv(65535)
    reply = fastbencode.bdecode(out.partition(b" ")[2])
    assert reply[b"result"] == b"error" and b"lower limit" in reply[b"error-reason"]
