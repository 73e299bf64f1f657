"""Local destination rewrite for flows an ALG rewrote: media addressed to a peer's NAT address is
sent to the peer's own (inside) address instead, where the CHILD_SA's selectors and routing catch it.

Two nftables base chains per call in this gateway's table ``ipsecrtp`` (output hook: one untracks
the flow, one rewrites it statelessly and has the kernel route it again). Removing the call removes
its chains; shutdown removes the table if this process made it. IPv4 only.
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
    """rules: (NAT address, port, inside address, port) for UDP leaving this host."""
    # Stateless: a route-type chain rewrites the destination (and the kernel routes again, so the
    # CHILD_SA's per-flow rule catches it), untracked so that conntrack never remaps the source
    # port (the peer's tunnelled RTP, arriving first, would make our translated flow a clash).
    c = chain_name(call_tag)
    lines = [f"add table ip {TABLE}",
             f"add chain ip {TABLE} {c}-raw {{ type filter hook output priority raw; policy accept; }}",
             f"add chain ip {TABLE} {c} {{ type route hook output priority mangle; policy accept; }}"]
    for nat_addr, port, inside, iport in rules:
        lines.append(f"add rule ip {TABLE} {c}-raw ip daddr {nat_addr} udp dport {port} notrack")
        lines.append(f"add rule ip {TABLE} {c} ip daddr {nat_addr} udp dport {port} "
                     f"ip daddr set {inside} udp dport set {iport}")
    _nft("\n".join(lines) + "\n")


def delete(call_tag: str) -> None:
    for c in (chain_name(call_tag), chain_name(call_tag) + "-raw"):
        try:
            _nft(f"delete chain ip {TABLE} {c}\n")
        except DnatError:
            pass  # already gone


def drop_table() -> None:
    subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True, text=True)
