"""The lab's topology: a namespace per gateway and the WAN link between them (a veth, through the
NAT router, or through the user-space link emulator), addressed."""

from __future__ import annotations

import os
import signal
import sys
import time

from . import proc
from .labnat import NAT_INSIDE, build_nat
from .labstate import Gateway, LabError, LabState
from .wanem import LinkSettings


def build(lab: LabState, nat: str | None, sip_alg: bool, wan: LinkSettings | None) -> None:
    """The gateways' namespaces and their WAN link; ``lab.state["gateways"]`` describes them after."""
    for gw in lab.topology:
        ns = lab.add_ns(gw.role)
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
            proc.run(ns, "sysctl", "-qw", f"{key}=0")
    a, b = lab.topology[0], lab.topology[1]
    if nat == "between":
        build_nat(lab, a, b, sip_alg)
    elif wan is None:
        proc.run(None, "ip", "-n", lab.ns(a.role), "link", "add", "wan0", "type", "veth",
                 "peer", "name", "wan0", "netns", lab.ns(b.role))
    else:
        _build_wan(lab, a, b, wan)
    for gw in lab.topology:
        ns = lab.ns(gw.role)
        # IPv6 without duplicate address detection: the address is usable at once, not seconds later
        proc.run(ns, "ip", "addr", "add", gw.wan, "dev", "wan0", *(("nodad",) if ":" in gw.wan else ()))
        proc.run(ns, "ip", "link", "set", "wan0", "up")
        if nat == "between" and gw is a:  # the inside gateway reaches the world through the NAT
            proc.run(ns, "ip", "route", "add", "default", "via", NAT_INSIDE.split("/")[0])
        lab.state["gateways"][gw.role] = {"namespace": ns, "wan_if": "wan0", "wan": gw.wan,
                                          "media": [f"{gw.addr}/{128 if ':' in gw.addr else 32}"],
                                          "user": gw.user}


# -- the emulated WAN -------------------------------------------------------------------------

def _build_wan(lab: LabState, a: Gateway, b: Gateway, settings: LinkSettings) -> None:
    ns = lab.add_ns("wan")
    proc.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    proc.run(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
    for gw, side in ((a, "a0"), (b, "b0")):
        proc.run(None, "ip", "-n", lab.ns(gw.role), "link", "add", "wan0", "type", "veth",
                 "peer", "name", side, "netns", ns)
        proc.run(ns, "ip", "link", "set", side, "promisc", "on", "up")
    settings.save(lab.wan_config)
    pid, st = proc.spawn(ns, [sys.executable, "-m", "ipsecrtp.netns.wanem", "--config", lab.wan_config,
                              "a0", "b0"], os.path.join(lab.dir, "wanem.out"))
    lab.track("wan", "wanem", pid, st, ns)
    lab.state["wan"] = {"namespace": ns, "settings": settings.__dict__}
    lab.save()


def set_wan(lab: LabState, settings: LinkSettings) -> None:
    """Change the emulated link in place (the emulator re-reads its file on SIGHUP)."""
    p = next((p for p in lab.state.get("procs", []) if p["kind"] == "wanem"), None)
    if p is None or not proc.alive(p["pid"], p["start"]):
        raise LabError("this lab has no running WAN emulator (lab up --rtt/--loss builds one)")
    settings.save(lab.wan_config)
    os.kill(p["pid"], signal.SIGHUP)
    lab.state["wan"]["settings"] = settings.__dict__
    lab.save()
    time.sleep(0.6)  # the emulator notices at its next wake-up (at most 0.5 s)
