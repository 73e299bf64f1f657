"""What the kernel holds (xfrm SAs and policies) next to what charon reports, per CHILD_SA."""

from __future__ import annotations

from dataclasses import asdict

from .xfrm import XfrmSocket, dump_policies, dump_sas


def kernel_view() -> dict:
    """The current network namespace's xfrm SAs and policies, as plain data."""
    sock = XfrmSocket()
    try:
        sas = [asdict(sa) for sa in dump_sas(sock)]
        pols = [dict(asdict(p), selector=asdict(p.selector)) for p in dump_policies(sock)]
    finally:
        sock.close()
    return {"sas": sas, "policies": pols}


def _ts_ports(ts: str) -> tuple[str, int]:
    net, _, rest = ts.partition("[")
    port = rest.rstrip("]").partition("/")[2]
    return net.split("/")[0], int(port) if port.isdigit() else 0


def compare(children: list[dict], kernel: dict) -> list[str]:
    """Discrepancies between charon's CHILD_SAs and the kernel's state: each child's two SPIs must be
    kernel SAs, and each (local, remote) selector pair must have an outbound kernel policy."""
    problems = []
    spis = {sa["spi"] for sa in kernel["sas"]}
    outs = {(p["selector"]["src"].split("/")[0], p["selector"]["sport"], p["selector"]["dst"].split("/")[0],
             p["selector"]["dport"]) for p in kernel["policies"] if p["dir"] == 1}
    for c in children:
        for k in ("spi-in", "spi-out"):
            if c.get(k) and int(c[k], 16) not in spis:
                problems.append(f"{c.get('name')}: {k} {c[k]} not in the kernel")
        for lt in c.get("local-ts", []):
            for rt in c.get("remote-ts", []):
                (la, lp), (ra, rp) = _ts_ports(lt), _ts_ports(rt)
                if (la, lp, ra, rp) not in outs:
                    problems.append(f"{c.get('name')}: no outbound kernel policy {lt} -> {rt}")
    return problems
