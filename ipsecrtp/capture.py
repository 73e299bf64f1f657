"""Live capture at the edge: AF_PACKET sockets on the gateway's interfaces."""

from __future__ import annotations

import os
import socket
import struct
import time

from . import bpf

ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TS = struct.Struct("@qq")


class CaptureError(RuntimeError):
    pass


class Capture:
    """Layer-3 capture (SOCK_DGRAM strips link headers) on named interfaces, both directions.

    With ``sip_ports``, each of ``interfaces`` gets two sockets: one that a kernel filter gives only
    SIP (``sip_socks``: read first, and never full of media however much there is) and one for
    everything else; ``media_interfaces`` get one socket (media only is looked at there)."""

    def __init__(self, interfaces: list[str], sip_ports: list[int] | None = None,
                 media_interfaces: list[str] | None = None) -> None:
        self.socks: list[socket.socket] = []
        self.sip_socks: set[socket.socket] = set()
        self.interface_of: dict[socket.socket, str] = {}
        try:
            for ifname in [*interfaces, *(media_interfaces or [])]:
                if not os.path.exists(f"/sys/class/net/{ifname}"):
                    raise CaptureError(f"no interface named {ifname!r} in this network namespace")
                split = bool(sip_ports) and ifname in interfaces
                for want_sip in ((True, False) if split else (None,)):
                    s = self._open(ifname, 4 << 20)
                    if want_sip is not None:
                        assert sip_ports is not None
                        bpf.attach(s, bpf.sip_program(sip_ports, want_sip))
                        if want_sip:
                            self.sip_socks.add(s)
                    self.socks.append(s)
                    self.interface_of[s] = ifname
        except PermissionError:
            self.close()
            raise CaptureError("capturing needs CAP_NET_RAW (run as root)") from None
        except OSError as exc:
            self.close()
            if isinstance(exc, CaptureError):
                raise
            raise CaptureError(f"cannot capture on {interfaces}: {exc.strerror or exc}") from None

    @staticmethod
    def _open(ifname: str, rcvbuf: int) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # the kernel's receive timestamp, as tcpdump records it: timelines must agree with a capture
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
        return s

    def fileno_list(self) -> list[socket.socket]:
        return self.socks

    def read(self, s: socket.socket, limit: int = 256) -> list[tuple[float, bytes]]:
        """(kernel receive time, IP packet) for what is waiting on one socket."""
        out = []
        for _ in range(limit):
            try:
                data, anc, _flags, addr = s.recvmsg(65535, 64)
            except BlockingIOError:
                break
            if addr[1] not in (ETH_P_IP, ETH_P_IPV6):
                continue
            t = None
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TS.size:
                    sec, nsec = _TS.unpack_from(raw)
                    t = sec + nsec / 1e9
            out.append((t if t is not None else time.time(), data))
        return out

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
