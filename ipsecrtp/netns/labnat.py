"""The lab's NAT routers and phone LANs: a NAT between the gateways, or (router mode) a phone on a
LAN behind each gateway, gwa's optionally behind a customer router's NAT."""

from __future__ import annotations

import ipaddress
import os

from . import proc
from .labstate import Gateway, LabState

# the router between the gateways of NAT_TOPOLOGY: gwa routes through NAT_INSIDE, gwb sees NAT_OUTSIDE
NAT_INSIDE, NAT_OUTSIDE = "192.0.2.254/24", "203.0.113.254/24"
# Router mode: a phone behind each gateway on a LAN of its own; the gateways forward, media flows
# are the phones' and the CHILD_SAs' selectors name the phones' addresses (needs kernel ESP).
PHONES = {"gwa": ("pa", "192.0.2.10/24", "192.0.2.1/24"), "gwb": ("pb", "203.0.113.10/24", "203.0.113.1/24")}
# Router mode with a NAT in front of gwa's phone (a customer router): gwa's LAN is 192.0.2.0/25, the
# NAT's outside address on it 192.0.2.20; behind it 192.0.2.128/25 stands for a private range,
# which nothing beyond the NAT routes.
PHONE_NAT = {"lan": "192.0.2.1/25", "outside": "192.0.2.20/25", "inside": "192.0.2.129/25",
             "phone": "192.0.2.130/25", "private": "192.0.2.128/25"}

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


def nat_private(lab: LabState) -> str:
    """The prefix the controllers' NAT tests take as private (the lab has documentation addresses only)."""
    return {"between": '"192.0.2.0/24"', "phone": f'"{PHONE_NAT["private"]}"'}.get(lab.nat_topology, "")


def reach(lab: LabState, gw: Gateway, peer: Gateway) -> str:
    """The address gw reaches peer's IKE at: behind the NAT router, its public address."""
    if lab.nat_topology == "between" and gw.role == "gwb":
        return lab.state["nat_router"]["public"]
    return peer.addr


# -- the NAT router ---------------------------------------------------------------------------

def run_nat_router(lab: LabState, ns: str, sides: tuple[tuple[str, str], ...], rules: str) -> None:
    """Address the NAT router's interfaces, let it forward, load its nftables rules (kept in
    the lab's directory, for reading)."""
    for side, addr in sides:
        proc.run(ns, "ip", "addr", "add", addr, "dev", side)
        proc.run(ns, "ip", "link", "set", side, "up")
    proc.run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    path = os.path.join(lab.dir, "nat.nft")
    with open(path, "w") as f:
        f.write(rules)
    proc.run(ns, "nft", "-f", path)


def build_nat(lab: LabState, a: Gateway, b: Gateway, sip_alg: bool) -> None:
    """gwa.wan0 -- in0 [NAT] out0 -- gwb.wan0: the gateways' WAN link through the NAT router."""
    ns = lab.add_ns("nat")
    for gw, side in ((a, "in0"), (b, "out0")):
        proc.run(None, "ip", "-n", lab.ns(gw.role), "link", "add", "wan0", "type", "veth",
                 "peer", "name", side, "netns", ns)
    run_nat_router(lab, ns, (("in0", NAT_INSIDE), ("out0", NAT_OUTSIDE)),
                   NFT_NAT + (NFT_SIP_ALG if sip_alg else ""))
    lab.state["nat_router"] = {"namespace": ns, "public": NAT_OUTSIDE.split("/")[0],
                               "inside": NAT_INSIDE.split("/")[0], "sip_alg": sip_alg}
    lab.save()


# -- router mode: the phones' LANs ------------------------------------------------------------

def _lan(gw: Gateway, phone_nat: bool) -> tuple[str, str]:
    """(gateway's LAN address, what the other gateway routes to it) for gw's LAN."""
    if phone_nat and gw.role == "gwa":
        lan = PHONE_NAT["lan"]
    else:
        lan = PHONES[gw.role][2]
    return lan, str(ipaddress.ip_network(lan, strict=False))


def build_lans(lab: LabState, a: Gateway, b: Gateway, phone_nat: bool = False, sip_alg: bool = False,
               random_ports: bool = False) -> None:
    for gw, peer in ((a, b), (b, a)):
        role, addr, _ = PHONES[gw.role]
        gw_addr, net = _lan(gw, phone_nat)
        gns = lab.ns(gw.role)
        if phone_nat and gw is a:
            ns, addr = _build_phone_nat(lab, gns, role, sip_alg, random_ports)
        else:
            ns = lab.add_ns(role)
            proc.run(None, "ip", "-n", gns, "link", "add", "lan0", "type", "veth",
                     "peer", "name", "lan0", "netns", ns)
            proc.run(ns, "ip", "addr", "add", addr, "dev", "lan0")
            proc.run(ns, "ip", "link", "set", "lan0", "up")
            proc.run(ns, "ip", "route", "add", "default", "via", gw_addr.split("/")[0])
        proc.run(gns, "ip", "addr", "add", gw_addr, "dev", "lan0")
        proc.run(gns, "ip", "link", "set", "lan0", "up")
        proc.run(gns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        proc.run(lab.ns(peer.role), "ip", "route", "add", net, "via", gw.addr)
        lab.state["gateways"][gw.role]["media"] = [net]
        lab.state["gateways"][gw.role]["phone"] = {"namespace": ns, "address": addr.split("/")[0]}
    lab.save()


def _build_phone_nat(lab: LabState, gns: str, phone_role: str, sip_alg: bool,
                     random_ports: bool) -> tuple[str, str]:
    """gwa.lan0 -- out0 [NAT] in0 -- lan0 phone; returns the phone's namespace and address."""
    nat = lab.add_ns("nat")
    proc.run(None, "ip", "-n", gns, "link", "add", "lan0", "type", "veth", "peer", "name", "out0", "netns", nat)
    ns = lab.add_ns(phone_role)
    proc.run(None, "ip", "-n", nat, "link", "add", "in0", "type", "veth", "peer", "name", "lan0", "netns", ns)
    nat_rules = NFT_NAT.replace("masquerade", "masquerade random") if random_ports else NFT_NAT
    run_nat_router(lab, nat, (("out0", PHONE_NAT["outside"]), ("in0", PHONE_NAT["inside"])),
                   nat_rules + NFT_NAT_FIREWALL + (NFT_SIP_ALG if sip_alg else ""))
    proc.run(nat, "ip", "route", "add", "default", "via", PHONE_NAT["lan"].split("/")[0])
    addr = PHONE_NAT["phone"]
    proc.run(ns, "ip", "addr", "add", addr, "dev", "lan0")
    proc.run(ns, "ip", "link", "set", "lan0", "up")
    proc.run(ns, "ip", "route", "add", "default", "via", PHONE_NAT["inside"].split("/")[0])
    lab.state["nat_router"] = {"namespace": nat, "public": PHONE_NAT["outside"].split("/")[0],
                               "inside": PHONE_NAT["inside"].split("/")[0], "sip_alg": sip_alg,
                               "random_ports": random_ports}
    lab.save()
    return ns, addr
