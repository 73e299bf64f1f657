"""Each gateway's daemons in the lab: charon and the controller, started, stopped and restarted.

Every process is recorded in the lab's state (``LabState.track``) before it is waited for, so
that ``down`` stops it whatever happens next.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time

from ..keying.charontimers import RECOMMENDED
from ..log import read_log
from ..timescale import time_scale
from . import proc
from .labnat import nat_private, reach
from .labstate import SIP_PORT, Gateway, LabError, LabState

CHARON = "/usr/lib/ipsec/charon"
# how long charon and a controller may take to come up: seconds here, but the real-kernel tier's
# guest runs under TCG, several times slower
# how long a charon or a controller may take to start before the lab calls it hung: a hang guard, not
# a figure. A controller's imports took 84-198 s in the real-kernel tier's TCG guest on a loaded
# machine (0.3 s here), and two start together there
START_TIMEOUT = 600.0
# each controller's Prometheus exporter, on its own gateway's loopback (each namespace has its own)
METRICS_ADDR = "127.0.0.1:9464"

# the IKE timers the README recommends (issue 15 item 7): a lost IKE packet costs 0.5 s, not 4 s;
# ``charon_extra`` comes after them, and in strongswan.conf a later value of a key wins
# openssl first: charon takes each algorithm from the first plugin that offers it, and kernel-libipsec's
# ESP through the gcm and aes plugins (no AES-NI) was ~30% of a busy charon's CPU (perf, bench load);
# OpenSSL's AES-GCM cut charon's UDP 4500 receive-buffer drops about fivefold on gwa in that bench.
# threads 32: each of the controller's VICI workers (2 per IKE_SA of the pool) holds one of charon's
# threads while its initiate/terminate waits for the peer; with the default 16 and ike_pool 8 none was
# left for the IKE replies (bench load, RTT 50: 92 of 200 calls keyed with 16 threads, 200 with 32)
STRONGSWAN_CONF = """\
charon {{
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf curve25519 x509 pubkey pkcs1 pem {backend} socket-default vici
  threads = 32
  install_routes = yes
{timers}
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
{controller_extra}

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


def write_psk(lab: LabState) -> None:
    """The peers' pre-shared key, readable by root only (O_EXCL: a file already there is an error)."""
    fd = os.open(lab.psk_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


# -- charon -----------------------------------------------------------------------------------

def start_charon(lab: LabState, gw: Gateway, backend: str) -> None:
    """gw's charon with ``backend``; returns once its VICI socket is there."""
    d = lab.gw_dir(gw.role)
    os.makedirs(d, mode=0o700, exist_ok=True)
    conf = os.path.join(d, "strongswan.conf")
    timers = RECOMMENDED.scaled(time_scale())  # a far slower machine: patience with a slow peer too
    with open(conf, "w") as f:
        f.write(STRONGSWAN_CONF.format(backend=backend if backend == "kernel-netlink"
                                       else "kernel-libipsec kernel-netlink", dir=d,
                                       timers="\n".join("  " + t for t in timers.conf_lines()),
                                       extra=lab.state.get("charon_extra", "")))
    # a private /run per charon: its pid file and default paths must not collide
    pid, st = proc.spawn(lab.ns(gw.role), ["sh", "-c", f"mount -t tmpfs tmpfs /run && "
                                           f"STRONGSWAN_CONF={conf} exec {CHARON}"],
                         os.path.join(d, "charon.out"))
    lab.track(gw.role, "charon", pid, st, lab.ns(gw.role))
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(lab.vici(gw.role)):
        if not proc.alive(pid, st):
            raise LabError(f"charon in {lab.ns(gw.role)} exited: see {d}/charon.out")
        if time.monotonic() > deadline:
            raise LabError(f"charon in {lab.ns(gw.role)} did not open its VICI socket")
        time.sleep(0.05)


def kill_charon(lab: LabState, role: str, sig: int = signal.SIGKILL) -> None:
    """Stop a gateway's charon the hard way (a crash: it cannot clean up), exactly that process."""
    for p in [p for p in lab.state["procs"] if p["kind"] == "charon" and p["role"] == role]:
        if proc.alive(p["pid"], p["start"]):
            os.kill(p["pid"], sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            proc.reap(p["pid"])
            if not proc.alive(p["pid"], p["start"]):
                break
            time.sleep(0.05)
        lab.state["procs"].remove(p)
    lab.save()


def restart_charon(lab: LabState, role: str) -> None:
    """(Re)start a gateway's charon, as after a crash: a new process, knowing no peer."""
    gw = next(g for g in lab.topology if g.role == role)
    if os.path.exists(lab.vici(role)):
        os.unlink(lab.vici(role))  # the dead charon's socket: the new one's is waited for
    backend = lab.state.get("backend") or "kernel-libipsec"
    start_charon(lab, gw, "kernel-netlink" if backend == "kernel-netlink" else "kernel-libipsec")
    lab.save()


# -- the controllers --------------------------------------------------------------------------

def start_controllers(lab: LabState) -> None:
    """One controller per gateway, each keying with the other as its peer; started together (each
    spends most of its start importing), then waited for."""
    a, b = lab.topology[0], lab.topology[1]
    started = [spawn_controller(lab, gw, b if gw is a else a) for gw in lab.topology]
    for gw, (pid, st, before) in zip(lab.topology, started, strict=True):
        wait_started(lab, gw, pid, st, before)


def restart_controller(lab: LabState, role: str, down_s: float = 0.0) -> None:
    """Stop a gateway's controller as a service manager would (SIGTERM: live calls keep their
    SAs), wait ``down_s``, and start it again with the same configuration."""
    for p in [p for p in lab.state["procs"] if p["kind"] == "controller" and p["role"] == role]:
        proc.kill(p["pid"], p["start"], grace=10.0)
        proc.reap(p["pid"])
        lab.state["procs"].remove(p)
    lab.save()
    time.sleep(down_s)
    a, b = lab.topology[0], lab.topology[1]
    gw = a if a.role == role else b
    start_controller(lab, gw, b if gw is a else a)
    lab.save()


def write_controller_config(lab: LabState, gw: Gateway, peer: Gateway) -> str:
    """gw's controller.toml, keying with ``peer``, from what the lab records; returns its path."""
    d = lab.gw_dir(gw.role)
    os.makedirs(d, mode=0o700, exist_ok=True)
    cfg = os.path.join(d, "controller.toml")
    with open(cfg, "w") as f:
        f.write(CONTROLLER_TOML.format(name=gw.role, dry_run="false" if lab.state.get("keying", True) else "true",
                                       sip=SIP_PORT, rtp_lo=lab.rtp_ports[0], rtp_hi=lab.rtp_ports[1], dir=d,
                                       peer=peer.role, local=gw.addr, remote=peer.addr, psk=lab.psk_path,
                                       ike_remote=reach(lab, gw, peer),
                                       local_media=lab.state["gateways"][gw.role]["media"][0],
                                       remote_media=lab.state["gateways"][peer.role]["media"][0],
                                       nat_translate="true" if lab.state.get("nat_translate", True) else "false",
                                       nat_private=nat_private(lab),
                                       media_ifs='"lan0"' if lab.state.get("mode") == "router" else "",
                                       media_timeout=lab.state.get("media_timeout", 30.0),
                                       strategy=lab.state.get("strategy", "child-per-call"),
                                       metrics=METRICS_ADDR,
                                       # more [controller] keys (e.g. caps: max_dialogs_per_source = 100)
                                       controller_extra="\n".join(lab.state.get("controller_extra") or ())))
        protect = lab.state.get("protect") or "required"
        f.write(f'protect = "{protect}"\nike_pool = {int(lab.state.get("ike_pool") or 1)}\n')
        pki = (lab.state.get("pki") or {}).get(gw.role) if lab.state.get("auth") == "pubkey" else None
        if pki:  # certificates from the lab's CA (labpki.py); the PSK file stays for pre-keyed
            f.write(f'auth = "pubkey"\ncert_file = "{pki["cert"]}"\nkey_file = "{pki["key"]}"\n'
                    f'ca_file = "{pki["ca"]}"\n')
        for key, default in (("legs", "per-leg"), ("esp_mode", "tunnel")):
            if lab.state.get(key, default) != default:
                f.write(f'{key} = "{lab.state[key]}"\n')
        esp = lab.state.get("esp_proposals")
        if esp:  # [[peer]] is the template's last table, so a key written after it belongs to it
            f.write(f"esp_proposals = {json.dumps(esp)}\n")  # a JSON list of strings is a TOML array
        # per-peer keys a test sets (srtp, signalling, ...); pre-keyed over the lab's clear SIP needs the
        # operator's explicit override, as on a real gateway (config.check_signalling)
        extra = dict(lab.state.get("peer_extra") or {})
        if lab.state.get("strategy") == "pre-keyed":
            extra.setdefault("allow_keys_over_clear_signalling", True)
        for key, value in extra.items():
            f.write(f"{key} = {json.dumps(value)}\n")  # JSON strings and booleans are TOML ones
    return cfg


def start_controller(lab: LabState, gw: Gateway, peer: Gateway) -> None:
    """gw's controller, keying with ``peer``; returns once its log says it started."""
    wait_started(lab, gw, *spawn_controller(lab, gw, peer))


def spawn_controller(lab: LabState, gw: Gateway, peer: Gateway) -> tuple[int, int, int]:
    """Start gw's controller; (pid, start time, how many starts its log held before)."""
    cfg = write_controller_config(lab, gw, peer)
    # inside the gateway's namespace: `lab status` shows it, saved with the process below
    lab.state["gateways"][gw.role]["metrics"] = f"http://{METRICS_ADDR}/metrics"
    log = lab.controller_log(gw.role)
    before = sum(e.get("event") == "started" for e in read_log(log))  # a restart appends to the log
    pid, st = proc.spawn(lab.ns(gw.role), [sys.executable, "-m", "ipsecrtp", "run", "--config", cfg], log)
    lab.track(gw.role, "controller", pid, st, lab.ns(gw.role))
    return pid, st, before


def wait_started(lab: LabState, gw: Gateway, pid: int, st: int, before: int) -> None:
    log = lab.controller_log(gw.role)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        events = read_log(log)
        if sum(e.get("event") == "started" for e in events) > before:
            return
        proc.reap(pid)  # an exited child stays a zombie (and "alive") until reaped
        if not proc.alive(pid, st):
            last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
            raise LabError(f"controller in {lab.ns(gw.role)} exited: {last}")
        if time.monotonic() > deadline:
            raise LabError(f"controller in {lab.ns(gw.role)} did not start within {START_TIMEOUT:.0f} s")
        time.sleep(0.05)
