"""The network-namespace lab: gateways with their own charon and controller, joined by a WAN.

Everything the lab creates is written to its state file *before* the next step, so that
``down`` removes exactly what exists, also after ``up`` died halfway. Processes are stopped
by pid (checked against their start time), never by name.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..kernel.xfrm import probe_esp
from . import proc
from .wanem import LinkSettings

CHARON = "/usr/lib/ipsec/charon"
# not under /run: each charon mounts a private tmpfs over /run
BASE_DIR = os.environ.get("IPSECRTP_LAB_DIR", "/var/lib/ipsecrtp/labs")
SIP_PORT = 5060
RTP_PORTS = (10000, 10199)  # the default: room for 100 calls with separate RTCP
# ports a lab's RTP range must leave out: IKE, NAT-T and SIP would otherwise be keyed and counted as media
RESERVED_PORTS = (500, 4500, SIP_PORT)
# how long charon and a controller may take to come up: seconds here, but the real-kernel tier's
# guest runs under TCG, several times slower
START_TIMEOUT = 60.0
# each controller's Prometheus exporter, on its own gateway's loopback (each namespace has its own)
METRICS_ADDR = "127.0.0.1:9464"


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
NAT_INSIDE, NAT_OUTSIDE = "192.0.2.254/24", "203.0.113.254/24"
# Router mode: a phone behind each gateway on a LAN of its own; the gateways forward, media flows
# are the phones' and the CHILD_SAs' selectors name the phones' addresses (needs kernel ESP).
PHONES = {"gwa": ("pa", "192.0.2.10/24", "192.0.2.1/24"), "gwb": ("pb", "203.0.113.10/24", "203.0.113.1/24")}
# Router mode with a NAT in front of gwa's phone (a customer router): gwa's LAN is 192.0.2.0/25, the
# NAT's outside address on it 192.0.2.20; behind it 192.0.2.128/25 stands for a private range,
# which nothing beyond the NAT routes.
PHONE_NAT = {"lan": "192.0.2.1/25", "outside": "192.0.2.20/25", "inside": "192.0.2.129/25",
             "phone": "192.0.2.130/25", "private": "192.0.2.128/25"}


class LabError(RuntimeError):
    pass


def lab_dir(name: str) -> str:
    return os.path.join(BASE_DIR, name)


def ns_name(name: str, role: str) -> str:
    return f"irtp-{name}-{role}"


STRONGSWAN_CONF = """\
charon {{
  load = random nonce aes sha1 sha2 hmac gcm kdf curve25519 x509 pubkey pkcs1 pem openssl {backend} socket-default vici
  install_routes = yes
  retransmit_timeout = 4.0
{extra}
  filelog {{
    lab {{
      path = {dir}/charon.log
      time_format = %H:%M:%S
      default = 1
      ike = 1
      cfg = 1
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{dir}/charon.vici
    }}
    kernel-libipsec {{
      allow_peer_ts = yes
    }}
    socket-default {{
      fwmark = 0x42
    }}
    kernel-netlink {{
      fwmark = !0x42
    }}
  }}
}}
"""

NFT_NAT = """\
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "out0" masquerade
  }
}
"""

# a customer router: nothing from outside reaches the inside unless the inside started it
NFT_NAT_FIREWALL = """\
table ip fw {
  chain inbound {
    type filter hook forward priority filter; policy accept;
    iifname "out0" ct state new drop
  }
}
"""

# the kernel's SIP ALG: conntrack helper on 5060, whose NAT half rewrites Via/Contact/SDP
NFT_SIP_ALG = """\
table ip alg {
  ct helper sip5060 {
    type "sip" protocol udp;
  }
  chain pre {
    type filter hook prerouting priority filter; policy accept;
    udp dport 5060 ct helper set "sip5060"
  }
}
"""

CONTROLLER_TOML = """\
[controller]
name = "{name}"
nat_translate = {nat_translate}
nat_private = [{nat_private}]
dry_run = {dry_run}
interfaces = ["wan0"]
media_interfaces = [{media_ifs}]
sip_ports = [{sip}]
rtp_ports = "{rtp_lo}-{rtp_hi}"
vici = "unix://{dir}/charon.vici"
media_timeout = {media_timeout}
metrics = "{metrics}"
state_dir = "{dir}/state"

[[peer]]
name = "{peer}"
ike_local = "{local}"
ike_remote = "{ike_remote}"
ike_remote_id = "{remote}"
local_media = ["{local_media}"]
remote_media = ["{remote_media}"]
psk_file = "{psk}"
strategy = "{strategy}"
"""


class Lab:
    def __init__(self, name: str, topology: tuple[Gateway, ...] = DEFAULT_TOPOLOGY) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 24:
            raise LabError(f"lab name {name!r}: letters, digits and '-' only, at most 24")
        self.name = name
        self.topology = topology
        self.dir = lab_dir(name)
        self.state_path = os.path.join(self.dir, "state.json")
        self.state: dict = {"name": name, "namespaces": [], "procs": [], "backend": None, "gateways": {}}
        self.owned = False  # set once up() created the directory or load() read it: down() touches nothing else

    # -- state ------------------------------------------------------------------------------

    def _save(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.state_path)

    @classmethod
    def load(cls, name: str) -> Lab:
        lab = cls(name)
        try:
            with open(lab.state_path) as f:
                lab.state = json.load(f)
            lab.owned = True
            if lab.nat_topology == "between":
                lab.topology = NAT_TOPOLOGY
        except FileNotFoundError:
            raise LabError(f"no lab named {name!r} (no {lab.state_path})") from None
        return lab

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

    def _add_ns(self, role: str) -> str:
        """Create this lab's namespace for ``role``, recorded before anything is put in it, lo up."""
        ns = self.ns(role)
        proc.run(None, "ip", "netns", "add", ns)
        self.state["namespaces"].append({"name": ns, "role": role})
        self._save()
        proc.run(ns, "ip", "link", "set", "lo", "up")
        return ns

    def track(self, role: str, kind: str, pid: int, st: int, ns: str) -> None:
        """Record a process started for this lab (before anything else happens), so that ``down``
        stops it by pid and start time whatever happens to the caller."""
        self.state["procs"].append({"role": role, "kind": kind, "pid": pid, "start": st, "ns": ns})
        self._save()

    _track = track  # the name older callers use

    # -- up ---------------------------------------------------------------------------------

    def up(self, media_timeout: float = 30.0, wan: LinkSettings | None = None,
           strategy: str = "child-per-call", charon_extra: str = "", keying: bool = True,
           controllers: bool = True, nat: str | None = None, sip_alg: bool = False,
           nat_translate: bool = True, mode: str = "host", nat_random_ports: bool = False,
           rtp_ports: tuple[int, int] = RTP_PORTS, esp_proposals: tuple[str, ...] | None = None,
           protect: str | None = None, ike_pool: int = 1) -> None:
        """Build the lab. ``wan``: route the WAN through the user-space link emulator
        (delay, jitter, loss, rate); ``strategy``: the controllers' keying strategy;
        ``charon_extra``: lines added to each charon's strongswan.conf (e.g. retransmit timers);
        ``esp_proposals``: the peers' ESP proposals in charon's syntax (e.g. ``("aes256gcm16",)``),
        None for the controllers' default;
        ``keying=False``: no charon; the controllers only observe (a baseline for what keying costs);
        ``nat="between"``: a NAT router (nftables masquerade) between the gateways, with the kernel's
        SIP ALG (nf_conntrack_sip / nf_nat_sip) when ``sip_alg``; ``nat="phone"`` (router mode): a NAT
        (a customer router) between gwa's phone and gwa. ``mode="router"``: phones behind the
        gateways; keyed only with kernel ESP, observe-only (``keying=False``) on any kernel.
        ``nat_random_ports``: the NAT picks random source ports (``masquerade random``), as some
        carrier NATs do, instead of keeping the phone's. ``rtp_ports``: the media port range (both
        ends inclusive) the controllers key and the user agents use; a load run needs thousands.
        ``controllers=False``: charons only; ``start_controllers()`` can start them later."""
        check_rtp_ports(rtp_ports)
        if mode not in ("host", "router"):
            raise LabError(f"unknown mode {mode!r} (host or router)")
        if nat not in (None, "between", "phone"):
            raise LabError(f"unknown NAT topology {nat!r} (known: between, phone)")
        if mode == "router" and (nat == "between" or wan):
            raise LabError("router mode does not combine with the NAT-between-gateways or WAN-emulation topologies yet")
        if nat == "phone" and mode != "router":
            raise LabError("a NAT in front of a phone needs router mode (--mode router): in host mode the "
                           "gateway is the phone")
        self.state["mode"] = mode
        if nat is not None and wan is not None:
            raise LabError("the NAT topology and the emulated WAN do not combine yet")
        if nat == "between":
            self.topology = NAT_TOPOLOGY
        self.state["nat"] = {"topology": nat, "sip_alg": sip_alg} if nat else None
        self.state["nat_translate"] = nat_translate
        self.state["strategy"] = strategy
        self.state["charon_extra"] = charon_extra
        self.state["esp_proposals"] = list(esp_proposals) if esp_proposals else None
        # protect: None = the controllers' default (required) where the backend enforces it
        # (kernel-libipsec), opportunistic with kernel ESP (not enforced there yet)
        self.state["protect"], self.state["ike_pool"] = protect, ike_pool
        self.state["rtp_ports"] = list(rtp_ports)
        self.state["media_timeout"] = media_timeout
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veth, charon)")
        if not os.path.exists(CHARON):
            raise LabError(f"{CHARON} not found: install strongswan-charon")
        if os.path.exists(self.state_path):
            raise LabError(f"lab {self.name!r} exists already ({self.state_path}): run 'ipsecrtp lab down'")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.owned = True
        self._save()
        for gw in self.topology:
            ns = self._add_ns(gw.role)
            for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
                proc.run(ns, "sysctl", "-qw", f"{key}=0")
        a, b = self.topology[0], self.topology[1]
        if nat == "between":
            self._build_nat(a, b, sip_alg)
        elif wan is None:
            proc.run(None, "ip", "-n", self.ns(a.role), "link", "add", "wan0", "type", "veth",
                     "peer", "name", "wan0", "netns", self.ns(b.role))
        else:
            self._build_wan(a, b, wan)
        for gw in self.topology:
            ns = self.ns(gw.role)
            proc.run(ns, "ip", "addr", "add", gw.wan, "dev", "wan0")
            proc.run(ns, "ip", "link", "set", "wan0", "up")
            if nat == "between" and gw is a:  # the inside gateway reaches the world through the NAT
                proc.run(ns, "ip", "route", "add", "default", "via", NAT_INSIDE.split("/")[0])
            self.state["gateways"][gw.role] = {"namespace": ns, "wan_if": "wan0", "wan": gw.wan,
                                               "media": [f"{gw.addr}/32"], "user": gw.user}
        probe = proc.in_netns(self.ns(a.role), probe_esp)
        backend = "kernel-netlink" if probe.supported else "kernel-libipsec"
        if mode == "router":
            if not probe.supported and keying:
                raise LabError("router mode needs kernel ESP (charon's kernel-netlink); this kernel has none: "
                               "run it in the real-kernel tier (ipsecrtp lab vm), or observe only (--no-keying)")
            self._build_lans(a, b, phone_nat=nat == "phone", sip_alg=sip_alg, random_ports=nat_random_ports)
        self.state["backend"] = backend if keying else f"none (observe only; {backend} would key here)"
        self.state["esp_probe"] = probe.detail
        self._save()
        fd = os.open(self.psk_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        for gw in self.topology if keying else ():
            self._start_charon(gw, backend)
        self.state["keying"] = keying
        if controllers:
            self.start_controllers()
        self.state["up_at"] = time.time()
        self._save()

    @property
    def psk_path(self) -> str:
        return os.path.join(self.dir, "psk")

    @property
    def rtp_ports(self) -> tuple[int, int]:
        """This lab's media port range (labs from before the option have the old fixed one)."""
        lo, hi = self.state.get("rtp_ports") or RTP_PORTS
        return int(lo), int(hi)

    def start_controllers(self) -> None:
        """One controller per gateway. Separate from ``up`` so that a benchmark can first measure the
        charons alone (``up(controllers=False)``), then add the controllers to the same lab."""
        a, b = self.topology[0], self.topology[1]
        for gw in self.topology:
            self._start_controller(gw, b if gw is a else a, self.psk_path, self.state.get("media_timeout", 30.0))

    def restart_controller(self, role: str, down_s: float = 0.0) -> None:
        """Stop a gateway's controller as a service manager would (SIGTERM: live calls keep their
        SAs), wait ``down_s``, and start it again with the same configuration."""
        for p in [p for p in self.state["procs"] if p["kind"] == "controller" and p["role"] == role]:
            proc.kill(p["pid"], p["start"], grace=10.0)
            proc.reap(p["pid"])
            self.state["procs"].remove(p)
        self._save()
        time.sleep(down_s)
        a, b = self.topology[0], self.topology[1]
        gw = a if a.role == role else b
        self._start_controller(gw, b if gw is a else a, self.psk_path, self.state.get("media_timeout", 30.0))
        self._save()

    def _start_charon(self, gw: Gateway, backend: str) -> None:
        d = self.gw_dir(gw.role)
        os.makedirs(d, mode=0o700, exist_ok=True)
        conf = os.path.join(d, "strongswan.conf")
        with open(conf, "w") as f:
            f.write(STRONGSWAN_CONF.format(backend=backend if backend == "kernel-netlink"
                                           else "kernel-libipsec kernel-netlink", dir=d,
                                           extra=self.state.get("charon_extra", "")))
        # a private /run per charon: its pid file and default paths must not collide
        pid, st = proc.spawn(self.ns(gw.role), ["sh", "-c", f"mount -t tmpfs tmpfs /run && "
                                                f"STRONGSWAN_CONF={conf} exec {CHARON}"],
                             os.path.join(d, "charon.out"))
        self._track(gw.role, "charon", pid, st, self.ns(gw.role))
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.vici(gw.role)):
            if not proc.alive(pid, st):
                raise LabError(f"charon in {self.ns(gw.role)} exited: see {d}/charon.out")
            if time.monotonic() > deadline:
                raise LabError(f"charon in {self.ns(gw.role)} did not open its VICI socket")
            time.sleep(0.05)

    def kill_charon(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Stop a gateway's charon the hard way (a crash: it cannot clean up), exactly that process."""
        for p in [p for p in self.state["procs"] if p["kind"] == "charon" and p["role"] == role]:
            if proc.alive(p["pid"], p["start"]):
                os.kill(p["pid"], sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                proc.reap(p["pid"])
                if not proc.alive(p["pid"], p["start"]):
                    break
                time.sleep(0.05)
            self.state["procs"].remove(p)
        self._save()

    def start_charon(self, role: str) -> None:
        """(Re)start a gateway's charon, as after a crash: a new process, knowing no peer."""
        gw = next(g for g in self.topology if g.role == role)
        if os.path.exists(self.vici(role)):
            os.unlink(self.vici(role))  # the dead charon's socket: the new one's is waited for
        backend = self.state.get("backend") or "kernel-libipsec"
        self._start_charon(gw, "kernel-netlink" if backend == "kernel-netlink" else "kernel-libipsec")
        self._save()

    def _reach(self, gw: Gateway, peer: Gateway) -> str:
        """The address gw reaches peer's IKE at: behind the NAT router, its public address."""
        if self.nat_topology == "between" and gw.role == "gwb":
            return self.state["nat_router"]["public"]
        return peer.addr

    def _start_controller(self, gw: Gateway, peer: Gateway, psk: str, media_timeout: float) -> None:
        d = self.gw_dir(gw.role)
        os.makedirs(d, mode=0o700, exist_ok=True)
        cfg = os.path.join(d, "controller.toml")
        with open(cfg, "w") as f:
            f.write(CONTROLLER_TOML.format(name=gw.role, dry_run="false" if self.state.get("keying", True) else "true",
                                           sip=SIP_PORT, rtp_lo=self.rtp_ports[0], rtp_hi=self.rtp_ports[1], dir=d,
                                           peer=peer.role, local=gw.addr, remote=peer.addr, psk=psk,
                                           ike_remote=self._reach(gw, peer),
                                           local_media=self.state["gateways"][gw.role]["media"][0],
                                           remote_media=self.state["gateways"][peer.role]["media"][0],
                                           nat_translate="true" if self.state.get("nat_translate", True) else "false",
                                           nat_private=self._nat_private(),
                                           media_ifs='"lan0"' if self.state.get("mode") == "router" else "",
                                           media_timeout=media_timeout,
                                           strategy=self.state.get("strategy", "child-per-call"),
                                           metrics=METRICS_ADDR))
            protect = self.state.get("protect") or \
                ("opportunistic" if self.state.get("backend") == "kernel-netlink" else "required")
            f.write(f'protect = "{protect}"\nike_pool = {int(self.state.get("ike_pool") or 1)}\n')
            esp = self.state.get("esp_proposals")
            if esp:  # [[peer]] is the template's last table, so a key written after it belongs to it
                f.write(f"esp_proposals = {json.dumps(esp)}\n")  # a JSON list of strings is a TOML array
        # inside the gateway's namespace: `lab status` shows it, saved with the process below
        self.state["gateways"][gw.role]["metrics"] = f"http://{METRICS_ADDR}/metrics"
        log = self.controller_log(gw.role)
        before = sum(e.get("event") == "started" for e in read_log(log))  # a restart appends to the log
        pid, st = proc.spawn(self.ns(gw.role), [sys.executable, "-m", "ipsecrtp", "run", "--config", cfg], log)
        self._track(gw.role, "controller", pid, st, self.ns(gw.role))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            events = read_log(log)
            if sum(e.get("event") == "started" for e in events) > before:
                return
            proc.reap(pid)  # an exited child stays a zombie (and "alive") until reaped
            if not proc.alive(pid, st):
                last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
                raise LabError(f"controller in {self.ns(gw.role)} exited: {last}")
            if time.monotonic() > deadline:
                raise LabError(f"controller in {self.ns(gw.role)} did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def start_uas(self) -> None:
        """One baresip per gateway (host mode: the gateway is the media endpoint)."""
        from .baresip import account, write_config

        for gw in self.topology:
            d = os.path.join(self.gw_dir(gw.role), "baresip")
            addr = self.ua_addr(gw.role)
            accounts = [account(gw.user, addr, "auto"), account("ring-" + gw.user, addr, "manual")]
            write_config(d, addr, accounts, self.rtp_ports)
            ns = self.ua_ns(gw.role)
            pid, st = proc.spawn(ns, ["baresip", "-f", d], os.path.join(d, "baresip.out"))
            self._track(gw.role, "baresip", pid, st, ns)

    # -- router mode ------------------------------------------------------------------------

    def _nat_private(self) -> str:
        """The prefix the controllers' NAT tests take as private (the lab has documentation addresses only)."""
        return {"between": '"192.0.2.0/24"', "phone": f'"{PHONE_NAT["private"]}"'}.get(self.nat_topology, "")

    def _lan(self, gw: Gateway, phone_nat: bool) -> tuple[str, str]:
        """(gateway's LAN address, what the other gateway routes to it) for gw's LAN."""
        if phone_nat and gw.role == "gwa":
            lan = PHONE_NAT["lan"]
        else:
            lan = PHONES[gw.role][2]
        return lan, str(ipaddress.ip_network(lan, strict=False))

    def _build_lans(self, a: Gateway, b: Gateway, phone_nat: bool = False, sip_alg: bool = False,
                    random_ports: bool = False) -> None:
        for gw, peer in ((a, b), (b, a)):
            role, addr, _ = PHONES[gw.role]
            gw_addr, net = self._lan(gw, phone_nat)
            gns = self.ns(gw.role)
            if phone_nat and gw is a:
                ns, addr = self._build_phone_nat(gns, role, sip_alg, random_ports)
            else:
                ns = self._add_ns(role)
                proc.run(None, "ip", "-n", gns, "link", "add", "lan0", "type", "veth",
                         "peer", "name", "lan0", "netns", ns)
                proc.run(ns, "ip", "addr", "add", addr, "dev", "lan0")
                proc.run(ns, "ip", "link", "set", "lan0", "up")
                proc.run(ns, "ip", "route", "add", "default", "via", gw_addr.split("/")[0])
            proc.run(gns, "ip", "addr", "add", gw_addr, "dev", "lan0")
            proc.run(gns, "ip", "link", "set", "lan0", "up")
            proc.run(gns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            proc.run(self.ns(peer.role), "ip", "route", "add", net, "via", gw.addr)
            self.state["gateways"][gw.role]["media"] = [net]
            self.state["gateways"][gw.role]["phone"] = {"namespace": ns, "address": addr.split("/")[0]}
        self._save()

    def _build_phone_nat(self, gns: str, phone_role: str, sip_alg: bool, random_ports: bool) -> tuple[str, str]:
        """gwa.lan0 -- out0 [NAT] in0 -- lan0 phone; returns the phone's namespace and address."""
        nat = self._add_ns("nat")
        proc.run(None, "ip", "-n", gns, "link", "add", "lan0", "type", "veth", "peer", "name", "out0", "netns", nat)
        ns = self._add_ns(phone_role)
        proc.run(None, "ip", "-n", nat, "link", "add", "in0", "type", "veth", "peer", "name", "lan0", "netns", ns)
        nat_rules = NFT_NAT.replace("masquerade", "masquerade random") if random_ports else NFT_NAT
        self._run_nat_router(nat, (("out0", PHONE_NAT["outside"]), ("in0", PHONE_NAT["inside"])),
                             nat_rules + NFT_NAT_FIREWALL + (NFT_SIP_ALG if sip_alg else ""))
        proc.run(nat, "ip", "route", "add", "default", "via", PHONE_NAT["lan"].split("/")[0])
        addr = PHONE_NAT["phone"]
        proc.run(ns, "ip", "addr", "add", addr, "dev", "lan0")
        proc.run(ns, "ip", "link", "set", "lan0", "up")
        proc.run(ns, "ip", "route", "add", "default", "via", PHONE_NAT["inside"].split("/")[0])
        self.state["nat_router"] = {"namespace": nat, "public": PHONE_NAT["outside"].split("/")[0],
                                    "inside": PHONE_NAT["inside"].split("/")[0], "sip_alg": sip_alg,
                                    "random_ports": random_ports}
        self._save()
        return ns, addr

    def ua_ns(self, role: str) -> str:
        """Where a gateway's user agent runs: the gateway itself (host mode) or its phone (router mode)."""
        phone = self.state.get("gateways", {}).get(role, {}).get("phone")
        return phone["namespace"] if phone else self.ns(role)

    def ua_addr(self, role: str) -> str:
        phone = self.state.get("gateways", {}).get(role, {}).get("phone")
        return phone["address"] if phone else self.state["gateways"][role]["wan"].split("/")[0]

    # -- the NAT router --------------------------------------------------------------------

    def _run_nat_router(self, ns: str, sides: tuple[tuple[str, str], ...], rules: str) -> None:
        """Address the NAT router's interfaces, let it forward, load its nftables rules (kept in
        the lab's directory, for reading)."""
        for side, addr in sides:
            proc.run(ns, "ip", "addr", "add", addr, "dev", side)
            proc.run(ns, "ip", "link", "set", side, "up")
        proc.run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        path = os.path.join(self.dir, "nat.nft")
        with open(path, "w") as f:
            f.write(rules)
        proc.run(ns, "nft", "-f", path)

    def _build_nat(self, a: Gateway, b: Gateway, sip_alg: bool) -> None:
        ns = self._add_ns("nat")
        for gw, side in ((a, "in0"), (b, "out0")):
            proc.run(None, "ip", "-n", self.ns(gw.role), "link", "add", "wan0", "type", "veth",
                     "peer", "name", side, "netns", ns)
        self._run_nat_router(ns, (("in0", NAT_INSIDE), ("out0", NAT_OUTSIDE)),
                             NFT_NAT + (NFT_SIP_ALG if sip_alg else ""))
        self.state["nat_router"] = {"namespace": ns, "public": NAT_OUTSIDE.split("/")[0],
                                    "inside": NAT_INSIDE.split("/")[0], "sip_alg": sip_alg}
        self._save()

    # -- the emulated WAN -------------------------------------------------------------------

    @property
    def wan_config(self) -> str:
        return os.path.join(self.dir, "wan.json")

    def _build_wan(self, a: Gateway, b: Gateway, settings: LinkSettings) -> None:
        ns = self._add_ns("wan")
        proc.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        proc.run(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        for gw, side in ((a, "a0"), (b, "b0")):
            proc.run(None, "ip", "-n", self.ns(gw.role), "link", "add", "wan0", "type", "veth",
                     "peer", "name", side, "netns", ns)
            proc.run(ns, "ip", "link", "set", side, "promisc", "on", "up")
        settings.save(self.wan_config)
        pid, st = proc.spawn(ns, [sys.executable, "-m", "ipsecrtp.netns.wanem", "--config", self.wan_config,
                                  "a0", "b0"], os.path.join(self.dir, "wanem.out"))
        self._track("wan", "wanem", pid, st, ns)
        self.state["wan"] = {"namespace": ns, "settings": settings.__dict__}
        self._save()

    def set_wan(self, settings: LinkSettings) -> None:
        """Change the emulated link in place (the emulator re-reads its file on SIGHUP)."""
        p = next((p for p in self.state.get("procs", []) if p["kind"] == "wanem"), None)
        if p is None or not proc.alive(p["pid"], p["start"]):
            raise LabError("this lab has no running WAN emulator (lab up --rtt/--loss builds one)")
        settings.save(self.wan_config)
        os.kill(p["pid"], signal.SIGHUP)
        self.state["wan"]["settings"] = settings.__dict__
        self._save()
        time.sleep(0.6)  # the emulator notices at its next wake-up (at most 0.5 s)

    # -- status / down ----------------------------------------------------------------------

    def status(self) -> dict:
        out = {"name": self.name, "dir": self.dir, "backend": self.state.get("backend"),
               "esp_probe": self.state.get("esp_probe"), "mode": self.state.get("mode", "host"), "gateways": {},
               "processes": []}
        existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
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
        existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
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
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in (BASE_DIR, os.path.dirname(BASE_DIR)):
            try:
                os.rmdir(d)  # only when empty: another lab may still be there
            except OSError:
                break
        return removed


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


def read_log(path: str) -> list[dict]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except FileNotFoundError:
        pass
    return out
