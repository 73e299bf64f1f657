"""Destination rewrite for media whose SDP address is not where the flow really is: addressed to a
peer's NAT address (an ALG rewrote the SDP), it is sent to the peer's own (inside) address; addressed
to a phone's private address behind a NAT (nothing rewrote the SDP), to the NAT's address. Either
way to where the CHILD_SA's selectors and routing catch it.

Four nftables base chains per call in this gateway's table ``ipsecrtp``: output hook for what this
host sends (host mode), prerouting for what it forwards (router mode), each pair one chain that
untracks the flow and one that rewrites it statelessly. Removing the call removes its chains;
shutdown removes the table if this process made it. IPv4 only.
"""

from __future__ import annotations

import subprocess

TABLE = "ipsecrtp"


class DnatError(RuntimeError):
    pass


def _nft(script: str) -> None:
    r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        raise DnatError(f"nft: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def chain_name(call_tag: str) -> str:
    return "dnat-" + call_tag


def add(call_tag: str, rules: list[tuple[str, int, str, int]]) -> None:
    """rules: (address, port, real address, port) for UDP sent from this host or forwarded by it."""
    # Stateless: a route-type chain rewrites the destination of what this host sends (and the kernel
    # routes again, so the CHILD_SA's per-flow rule catches it), a prerouting chain that of what it
    # forwards (before the route and xfrm policy lookups); both untracked so that conntrack never
    # remaps the source port (the peer's tunnelled RTP, arriving first, would make our translated
    # flow a clash).
    c = chain_name(call_tag)
    lines = [f"add table ip {TABLE}",
             f"add chain ip {TABLE} {c}-raw {{ type filter hook output priority raw; policy accept; }}",
             f"add chain ip {TABLE} {c} {{ type route hook output priority mangle; policy accept; }}",
             f"add chain ip {TABLE} {c}-fraw {{ type filter hook prerouting priority raw; policy accept; }}",
             f"add chain ip {TABLE} {c}-fwd {{ type filter hook prerouting priority mangle; policy accept; }}"]
    for nat_addr, port, inside, iport in rules:
        match = f"ip daddr {nat_addr} udp dport {port}"
        for raw, rewrite in ((f"{c}-raw", c), (f"{c}-fraw", f"{c}-fwd")):
            lines.append(f"add rule ip {TABLE} {raw} {match} notrack")
            lines.append(f"add rule ip {TABLE} {rewrite} {match} ip daddr set {inside} udp dport set {iport}")
    _nft("\n".join(lines) + "\n")


def delete(call_tag: str) -> None:
    for c in (chain_name(call_tag) + suffix for suffix in ("", "-raw", "-fwd", "-fraw")):
        try:
            _nft(f"delete chain ip {TABLE} {c}\n")
        except DnatError:
            pass  # already gone


def drop_table() -> None:
    subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True, text=True)
