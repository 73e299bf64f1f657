"""A lab's bookkeeping: its names, its directory and its state file, and ``down``.

Everything the lab creates is written to its state file *before* the next step, so that
``down`` removes exactly what exists, also after ``up`` died halfway. Processes are stopped
by pid (checked against their start time), never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Self

from . import proc

# not under /run: each charon mounts a private tmpfs over /run
BASE_DIR = os.environ.get("IPSECRTP_LAB_DIR", "/var/lib/ipsecrtp/labs")
# where ``down`` copies each gateway's logs before removing the lab (unset: nowhere): the real-kernel
# tier sets it, so that a failure in its guest can be read after the guest is gone
KEEP_LOGS = "IPSECRTP_LAB_KEEP_LOGS"
SIP_PORT = 5060
RTP_PORTS = (10000, 10199)  # the default: room for 100 calls with separate RTCP
# ports a lab's RTP range must leave out: IKE, NAT-T and SIP would otherwise be keyed and counted as media
RESERVED_PORTS = (500, 4500, SIP_PORT)


@dataclass(frozen=True)
class Gateway:
    role: str
    wan: str  # address/prefix on the WAN link
    user: str  # the SIP user the gateway's UA answers as (host mode: the gateway is the endpoint)

    @property
    def addr(self) -> str:
        return self.wan.split("/")[0]


# The embedded default topology: host mode, two gateways anchoring media, one WAN link.
DEFAULT_TOPOLOGY = (Gateway("gwa", "198.51.100.1/24", "alice"), Gateway("gwb", "198.51.100.2/24", "bob"))
# A NAT router between the gateways: gwa inside (192.0.2.0/24 stands for a private range: the lab
# uses documentation addresses only), gwb outside, the router masquerading as 203.0.113.254.
NAT_TOPOLOGY = (Gateway("gwa", "192.0.2.1/24", "alice"), Gateway("gwb", "203.0.113.2/24", "bob"))
# The default topology over IPv6 (``lab up --ipv6``): the documentation prefix 2001:db8::/32 (RFC 3849).
IPV6_TOPOLOGY = (Gateway("gwa", "2001:db8::1/64", "alice"), Gateway("gwb", "2001:db8::2/64", "bob"))


class LabError(RuntimeError):
    pass


def lab_dir(name: str) -> str:
    return os.path.join(BASE_DIR, name)


def ns_name(name: str, role: str) -> str:
    return f"irtp-{name}-{role}"


def check_rtp_ports(ports: tuple[int, int]) -> None:
    """A usable media range: unprivileged ports, low to high, clear of IKE, NAT-T and SIP."""
    lo, hi = ports
    if not 1024 <= lo <= hi <= 65535:
        raise LabError(f"RTP ports {lo}-{hi}: need 1024 <= LO <= HI <= 65535")
    clash = [p for p in RESERVED_PORTS if lo <= p <= hi + 1]  # +1: RTCP on the last RTP port + 1
    if clash:
        raise LabError(f"RTP ports {lo}-{hi} include {clash[0]} (IKE, NAT-T or SIP)")


def parse_port_range(text: str) -> tuple[int, int]:
    """'10000-19999' -> (10000, 19999), checked as ``check_rtp_ports`` does."""
    lo, sep, hi = text.partition("-")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
        raise LabError(f"port range {text!r}: expected LO-HI, e.g. 10000-19999")
    ports = (int(lo), int(hi))
    check_rtp_ports(ports)
    return ports


def _namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


class LabState:
    """What a lab is and has: the parts that build it (``labnet``, ``labnat``, ``labdaemons``) record
    here what they create, and ``down`` removes what is recorded."""

    def __init__(self, name: str, topology: tuple[Gateway, ...] = DEFAULT_TOPOLOGY) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 24:
            raise LabError(f"lab name {name!r}: letters, digits and '-' only, at most 24")
        self.name = name
        self.topology = topology
        self.dir = lab_dir(name)
        self.state_path = os.path.join(self.dir, "state.json")
        self.state: dict = {"name": name, "namespaces": [], "procs": [], "backend": None, "gateways": {}}
        self.owned = False  # set once up() created the directory or load() read it: down() touches nothing else

    def save(self) -> None:
        # written aside and renamed: a reader (or a `down` after a crash) never sees half a file
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.state_path)

    @classmethod
    def load(cls, name: str) -> Self:
        lab = cls(name)
        try:
            with open(lab.state_path) as f:
                lab.state = json.load(f)
            lab.owned = True
            if lab.nat_topology == "between":
                lab.topology = NAT_TOPOLOGY
            elif lab.state.get("ipv6"):
                lab.topology = IPV6_TOPOLOGY
        except FileNotFoundError:
            raise LabError(f"no lab named {name!r} (no {lab.state_path})") from None
        return lab

    # -- names and paths --------------------------------------------------------------------

    @property
    def nat_topology(self) -> str | None:
        """between, phone, or None: where this lab's NAT router sits."""
        return (self.state.get("nat") or {}).get("topology")

    def ns(self, role: str) -> str:
        return ns_name(self.name, role)

    def gw_dir(self, role: str) -> str:
        return os.path.join(self.dir, role)

    def vici(self, role: str) -> str:
        return os.path.join(self.gw_dir(role), "charon.vici")

    def controller_log(self, role: str) -> str:
        return os.path.join(self.gw_dir(role), "controller.log")

    @property
    def psk_path(self) -> str:
        return os.path.join(self.dir, "psk")

    @property
    def wan_config(self) -> str:
        return os.path.join(self.dir, "wan.json")

    @property
    def rtp_ports(self) -> tuple[int, int]:
        """This lab's media port range (labs from before the option have the old fixed one)."""
        lo, hi = self.state.get("rtp_ports") or RTP_PORTS
        return int(lo), int(hi)

    def ua_ns(self, role: str) -> str:
        """Where a gateway's user agent runs: the gateway itself (host mode) or its phone (router mode)."""
        phone = self.state.get("gateways", {}).get(role, {}).get("phone")
        return phone["namespace"] if phone else self.ns(role)

    def ua_addr(self, role: str) -> str:
        phone = self.state.get("gateways", {}).get(role, {}).get("phone")
        return phone["address"] if phone else self.state["gateways"][role]["wan"].split("/")[0]

    # -- recording what exists --------------------------------------------------------------

    def add_ns(self, role: str) -> str:
        """Create this lab's namespace for ``role``, recorded before anything is put in it, lo up."""
        ns = self.ns(role)
        proc.run(None, "ip", "netns", "add", ns)
        self.state["namespaces"].append({"name": ns, "role": role})
        self.save()
        proc.run(ns, "ip", "link", "set", "lo", "up")
        return ns

    def track(self, role: str, kind: str, pid: int, st: int, ns: str) -> None:
        """Record a process started for this lab (before anything else happens), so that ``down``
        stops it by pid and start time whatever happens to the caller."""
        self.state["procs"].append({"role": role, "kind": kind, "pid": pid, "start": st, "ns": ns})
        self.save()

    # -- status / down ----------------------------------------------------------------------

    def status(self) -> dict:
        out = {"name": self.name, "dir": self.dir, "backend": self.state.get("backend"),
               "esp_probe": self.state.get("esp_probe"), "mode": self.state.get("mode", "host"), "gateways": {},
               "processes": []}
        existing = _namespaces()
        for role, gw in self.state.get("gateways", {}).items():
            g = dict(gw)
            g["role"] = "gateway"
            g["vici"] = self.vici(role)
            g["exists"] = gw["namespace"] in existing
            g["interfaces"] = []
            if g["exists"]:
                r = proc.run(gw["namespace"], "ip", "-j", "addr", "show", check=False)
                for link in json.loads(r.stdout or "[]"):
                    g["interfaces"].append({"name": link["ifname"], "state": link.get("operstate"),
                                            "addresses": [f"{a['local']}/{a['prefixlen']}"
                                                          for a in link.get("addr_info", [])]})
            g["capture_hint"] = f"ip netns exec {gw['namespace']} tcpdump -ni {gw['wan_if']}"
            out["gateways"][role] = g
        for p in self.state.get("procs", []):
            out["processes"].append(dict(p, alive=proc.alive(p["pid"], p["start"])))
        return out

    def _keep_logs(self) -> None:
        keep = os.environ.get(KEEP_LOGS)
        if not keep or not os.path.isdir(self.dir):
            return
        for role in sorted(os.listdir(self.dir)):
            src = os.path.join(self.dir, role)
            for name in ("controller.log", "charon.log", "charon.out") if os.path.isdir(src) else ():
                if os.path.exists(os.path.join(src, name)):
                    dst = os.path.join(keep, self.name, role)
                    os.makedirs(dst, exist_ok=True)
                    shutil.copy(os.path.join(src, name), dst)

    def down(self) -> list[str]:
        """Remove what the state file records. Returns what was removed."""
        removed: list[str] = []
        if not self.owned:
            return removed  # an up() that stopped before creating anything (another lab by that name)
        order = {"controller": 0, "baresip": 1, "charon": 2, "wanem": 3}
        for p in sorted(self.state.get("procs", []), key=lambda p: order.get(p["kind"], 9)):
            if proc.alive(p["pid"], p["start"]):
                proc.kill(p["pid"], p["start"], grace=8.0 if p["kind"] == "controller" else 3.0)
                removed.append(f"{p['kind']} pid {p['pid']}")
        existing = _namespaces()
        for n in self.state.get("namespaces", []):
            ns = n["name"]
            if ns not in existing:
                continue
            # anything still inside a namespace this lab created is this lab's
            for pid in proc.ns_pids(ns):
                st = proc.start_time(pid)
                if st is not None:
                    proc.kill(pid, st, grace=1.0)
                    removed.append(f"stray pid {pid} in {ns}")
            proc.run(None, "ip", "netns", "del", ns, check=False)
            removed.append(f"namespace {ns}")
        self._keep_logs()
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in (BASE_DIR, os.path.dirname(BASE_DIR)):
            try:
                os.rmdir(d)  # only when empty: another lab may still be there
            except OSError:
                break
        return removed
