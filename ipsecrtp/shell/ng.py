"""The ng control endpoint's socket: UDP datagrams from a SIP proxy in, replies out.

Only the configured source prefixes are served; a datagram from anywhere else is dropped unread
and counted, with one log line per source a minute at most (a flood cannot flood the log). The
parsing is ``ng/protocol.py``'s, the decisions the core's (``GatewayCore.control``): this module
only moves bytes. A retransmitted request (the proxy re-sends after its time-out, same cookie)
gets the reply the first one got, without running the command twice (as rtpengine does).
"""

from __future__ import annotations

import collections
import ipaddress
import socket
import time
from collections.abc import Callable

from ..gateway.actions import Action
from ..gateway.control import ControlRequest
from ..log import DecisionLog
from ..ng.protocol import NgError, encode_reply, error_reply, parse

BATCH = 64  # datagrams read per wake-up at most: the capture's sockets get their turn between batches
REPLAY = 1024  # replies remembered by cookie, for retransmissions
REPLAY_S = 30.0
REFUSED_LOG_S = 60.0
MAX_REPLY = 65000  # what one UDP datagram carries (65507 over IPv4), with room to spare

Handler = Callable[[ControlRequest], tuple[dict, list[Action]]]


class NgServer:
    def __init__(self, listen: tuple[str, int], allow: tuple[str, ...], log: DecisionLog) -> None:
        self.listen, self.log = listen, log
        self.allow = tuple(ipaddress.ip_network(a) for a in allow)
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind(listen)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.refused = 0  # datagrams from sources not allowed
        self.rejected = 0  # datagrams that were not a valid command
        self._refused_logged: dict[str, float] = {}
        self._replies: collections.OrderedDict[tuple[str, bytes], tuple[float, bytes]] = collections.OrderedDict()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def allowed(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow)

    def serve(self, handler: Handler) -> list[Action]:
        """Read what is waiting (a batch), answer each command; the actions to dispatch, in order.
        The reply goes out before the actions are carried out: the proxy is not kept waiting for charon."""
        actions: list[Action] = []
        for _ in range(BATCH):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. an ICMP error for an earlier reply: not fatal
                self.log("ng-socket-error", reason=str(exc))
                continue
            if not self.allowed(addr[0]):
                self._refuse(addr[0])
                continue
            actions.extend(self._one(data, (addr[0], addr[1]), handler))
        return actions

    def _one(self, data: bytes, src: tuple[str, int], handler: Handler) -> list[Action]:
        now = time.monotonic()
        try:
            cookie, req = parse(data, src)
        except NgError as exc:
            self.rejected += 1
            self.log("ng-rejected", reason=str(exc), source=f"{src[0]}:{src[1]}", rejected=self.rejected)
            if exc.cookie is not None:
                self._send(error_reply(exc.cookie, str(exc)), src)
            return []
        seen = self._replies.get((src[0], cookie))
        if seen is not None and now - seen[0] < REPLAY_S:
            self._send(seen[1], src)  # the proxy re-sent it: the same reply, the command not run again
            return []
        reply, actions = handler(req)
        out = encode_reply(cookie, reply)
        if len(out) > MAX_REPLY:  # e.g. a list of many calls: say so rather than send nothing
            out = error_reply(cookie, f"reply of {len(out)} bytes does not fit a datagram: ask with a lower limit")
        self._replies[(src[0], cookie)] = (now, out)
        while len(self._replies) > REPLAY:
            self._replies.popitem(last=False)
        self._send(out, src)
        return actions

    def _send(self, data: bytes, dst: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, dst)
        except OSError as exc:  # too big for a datagram, or no route: the proxy times out and says so
            self.log("ng-socket-error", reason=f"reply to {dst[0]}:{dst[1]}: {exc}")

    def _refuse(self, addr: str) -> None:
        self.refused += 1
        now = time.monotonic()
        last = self._refused_logged.get(addr)
        if last is None or now - last >= REFUSED_LOG_S:
            if len(self._refused_logged) > REPLAY:
                self._refused_logged.clear()
            self._refused_logged[addr] = now
            self.log("ng-source-refused", source=addr, refused_total=self.refused,
                     reason="not in controller.ng_allow: dropped unread")
