"""baresip as a real SIP user agent in a lab namespace, driven over its ctrl_tcp module."""

from __future__ import annotations

import json
import os
import time

from .proc import connect_tcp

CONFIG = """\
poll_method epoll
sip_listen {host}:5060
audio_player aubridge,nil
audio_source ausine,440
audio_alert aubridge,nil
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
auplay_channels 2
rtp_ports {rtp_lo}-{rtp_hi}
rtcp_mux no
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aubridge.so
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl}
{extra}"""


def write_config(path: str, addr: str, accounts: list[str], rtp: tuple[int, int], ctrl: int = 4444,
                 extra: str = "") -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config"), "w") as f:
        # over IPv6: the address in brackets, and IPv6 preferred for the SDP's own address
        extra = "net_prefer_ipv6 yes\n" + extra if ":" in addr else extra
        f.write(CONFIG.format(host=hostport(addr), rtp_lo=rtp[0], rtp_hi=rtp[1], ctrl=ctrl, extra=extra))
    with open(os.path.join(path, "accounts"), "w") as f:
        for a in accounts:
            f.write(a + "\n")
    open(os.path.join(path, "contacts"), "w").close()


def hostport(addr: str) -> str:
    """An address as a SIP URI's host: an IPv6 one in brackets (RFC 3261, 19.1.1)."""
    return f"[{addr}]" if ":" in addr else addr


def account(user: str, addr: str, answermode: str) -> str:
    return f"<sip:{user}@{hostport(addr)}>;answermode={answermode};audio_codecs=PCMU;regint=0"


class BaresipControl:
    """netstring-framed JSON over ctrl_tcp; events are collected while waiting for responses."""

    def __init__(self, ns: str, port: int = 4444, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = connect_tcp(ns, ("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self.events: list[dict] = []
        self._token = 0

    def close(self) -> None:
        self.sock.close()

    def _read_one(self, timeout: float) -> dict | None:
        self.sock.settimeout(timeout)
        while True:
            colon = self.buf.find(b":")
            if colon > 0:
                n = int(self.buf[:colon])
                if len(self.buf) >= colon + 1 + n + 1:
                    body = self.buf[colon + 1:colon + 1 + n]
                    self.buf = self.buf[colon + 2 + n:]
                    return json.loads(body)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("baresip closed its control connection")
            self.buf += chunk

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._read_one(max(0.01, deadline - time.monotonic()))
            if msg is None:
                break
            if msg.get("response") and msg.get("token") == token:
                return msg
            if msg.get("event"):
                self.events.append(msg)
        raise TimeoutError(f"baresip did not answer {command!r}")

    def wait_event(self, types: set[str], timeout: float, match=None) -> dict:
        """Wait for an event whose type is in types (already received ones count)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("type") in types and (match is None or match(ev)):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no baresip event {sorted(types)} within {timeout}s; saw "
                                   f"{[e.get('type') for e in self.events]}")
            msg = self._read_one(min(left, 0.5))
            if msg is not None and msg.get("event"):
                self.events.append(msg)
