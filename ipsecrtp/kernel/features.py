"""Which kernel features ipsecrtp needs are there, probed in a throwaway network namespace.

Each probe really does the thing (creates a veth pair, a TUN device, an ESP SA, an nftables
table, a per-port policy-routing rule) because a configuration file or a module list can say yes
where the kernel says no. The probes run in a forked child that has unshared its network
namespace: whatever they create vanishes with it, and nothing on the host is touched.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import socket
import struct
import subprocess
from collections.abc import Callable

from ..keying.routing import FlowRule, PolicyRouting
from .xfrm import XfrmSocket, dump_sas, probe_esp

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
NETNS, ESP = "netns", "esp"


def _veth() -> str:
    from pyroute2.iproute import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="irtpdoc0", kind="veth", peer="irtpdoc1")
    return "created a veth pair"


def _af_packet() -> str:
    # the controller and the WAN emulator capture with AF_PACKET raw sockets
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)).close()
    return "opened an AF_PACKET socket"


def _xfrm() -> str:
    sock = XfrmSocket()
    try:
        dump_sas(sock)
    finally:
        sock.close()
    return "NETLINK_XFRM answers"


def _esp() -> str:
    probe = probe_esp()
    # not an error either way: without ESP charon runs kernel-libipsec (README: kernel backends)
    return ("yes (charon can use kernel-netlink): " if probe.supported else
            "no (charon uses kernel-libipsec): ") + probe.detail


def _tun() -> str:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"irtpdoc-tun", IFF_TUN | IFF_NO_PI))
    finally:
        os.close(fd)
    return "created a TUN device"


def _nftables() -> str:
    r = subprocess.run(["nft", "add", "table", "ip", "irtp_doctor"], capture_output=True, text=True,
                       timeout=20)
    if r.returncode != 0:
        raise OSError((r.stderr or r.stdout).strip().splitlines()[-1:] or ["nft failed"])
    return "created an nftables table"


def _port_rules() -> str:
    # kernel-libipsec's per-flow routing needs fib rules with ip_proto and port ranges (Linux 4.17)
    pr = PolicyRouting()
    try:
        pr.add(FlowRule("0.0.0.0", "192.0.2.1", 10000, 10002))
    finally:
        pr.close()
    return "added a per-port policy-routing rule"


def _realtime() -> str:
    # the lab's WAN emulator asks for SCHED_FIFO so that a busy machine does not delay its frames
    # (netns/wanem.py); a container's cgroup may have no real-time budget
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return "SCHED_FIFO allowed"


PROBES: dict[str, tuple[str, Callable[[], str]]] = {
    "veth": ("veth pairs (the lab's links)", _veth),
    "af_packet": ("AF_PACKET sockets (SIP capture, WAN emulator)", _af_packet),
    "xfrm": ("XFRM over netlink (backend probe, kernel view)", _xfrm),
    ESP: ("ESP in the kernel (kernel-netlink backend; without it kernel-libipsec)", _esp),
    "tun": ("TUN devices (/dev/net/tun: kernel-libipsec's ipsec0)", _tun),
    "nftables": ("nftables (DNAT behind a SIP ALG, lab NAT routers)", _nftables),
    "port_rules": ("policy-routing rules with ports (kernel-libipsec per-flow routing)", _port_rules),
    "realtime": ("real-time scheduling (the lab's WAN emulator keeps its delays on a busy machine)", _realtime),
}


def _child(w: int) -> None:
    out: dict[str, tuple[bool, str]] = {}
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        out[NETNS] = (False, f"unshare(CLONE_NEWNET): {os.strerror(err)}"
                      + (" (needs root)" if os.geteuid() != 0 else ""))
    else:
        out[NETNS] = (True, "created a network namespace")
        for key, (_what, fn) in PROBES.items():
            try:
                out[key] = (True, fn())
            except Exception as exc:  # noqa: BLE001 - every failure is a finding, reported as text
                out[key] = (False, f"{type(exc).__name__}: {exc}")
    os.write(w, json.dumps(out).encode())


def probe() -> dict[str, tuple[bool, str]]:
    """{feature: (present, detail)} for netns and every key of PROBES (absent keys: not probed,
    because no namespace could be made)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            os.close(r)
            _child(w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        raw = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raw = {}
    if NETNS not in raw:
        return {NETNS: (False, "the probe process died")}
    return {k: (bool(v[0]), str(v[1])) for k, v in raw.items()}
