"""A bigger receive buffer for a running charon's IKE sockets, for a lab measurement.

strongSwan's socket-default plugin has no receive-buffer setting: its sockets get the namespace's
``net.core.rmem_default``, which a network namespace cannot change (read-only there on this kernel)
and which on the host would change every other socket too. With kernel-libipsec the NAT-T socket
(4500/udp) carries IKE and every call's ESP, so a burst of media while charon waits for a CPU fills
it and IKE messages are dropped with the media. A bench can instead take a duplicate of charon's
socket (pidfd_getfd, Linux 5.6+, needs root) and set SO_RCVBUFFORCE on it: the duplicate is the
same socket, so charon's buffer grows; our copy is closed at once.
"""

from __future__ import annotations

import ctypes
import os
import socket

SYS_PIDFD_GETFD = 438  # x86_64 and the generic syscall table alike
SO_RCVBUFFORCE = 33  # like SO_RCVBUF, past net.core.rmem_max (CAP_NET_ADMIN)
_libc = ctypes.CDLL(None, use_errno=True)


def udp_inodes(pid: int, ports: tuple[int, ...]) -> set[str]:
    """Socket inodes of the UDP sockets bound to ``ports`` in pid's network namespace."""
    out = set()
    for table in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                for ln in f.readlines()[1:]:
                    cols = ln.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) in ports:
                        out.add(cols[9])
        except FileNotFoundError:
            continue
    return out


def grow_rcvbuf(pid: int, size: int, ports: tuple[int, ...] = (500, 4500)) -> dict[int, int]:
    """Set a receive buffer of ``size`` bytes on pid's UDP sockets bound to ``ports``; returns
    {fd in pid: the buffer the kernel now reports} (it doubles what is asked, for its overhead)."""
    inodes = udp_inodes(pid, ports)
    done = {}
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue  # closed meanwhile
            if not (link.startswith("socket:[") and link[8:-1] in inodes):
                continue
            fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd of fd {name} in {pid}")
            s = socket.socket(fileno=fd)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                done[int(name)] = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            finally:
                s.close()  # our duplicate only: charon's descriptor stays open
    finally:
        os.close(pidfd)
    return done
