"""``ipsecrtp sas``: each call's SAs as charon reports them and as the kernel holds them."""

from __future__ import annotations

import json

import click


def _covers(policy: dict, child: dict) -> bool:
    """A kernel policy whose selector is one of the child's (local, remote) pairs, either way round."""
    from ..kernel.view import _ts_ports

    sel = policy["selector"]
    ends = {(sel["src"].split("/")[0], sel["sport"]), (sel["dst"].split("/")[0], sel["dport"])}
    return any(ends == {_ts_ports(lt), _ts_ports(rt)} for lt in child.get("local-ts", [])
               for rt in child.get("remote-ts", []))


def gateway_sas(name: str, vici: str, log_path: str | None, ns: str | None) -> dict:
    from ..kernel.view import compare, kernel_view
    from ..keying.strongswan import Charon, KeyingError
    from ..netns import proc
    from ..netns.lab import read_log

    try:
        charon = Charon(vici)
    except KeyingError as exc:
        return {"gateway": name, "error": str(exc)}
    try:
        backend, children = charon.backend(), charon.child_sas()
    finally:
        charon.close()
    calls = {}
    for e in read_log(log_path) if log_path else []:
        if e.get("event") == "sa-up" and e.get("call"):
            calls[e.get("sa")] = e["call"]
    kernel = proc.in_netns(ns, kernel_view) if ns else kernel_view()
    by_spi = {sa["spi"]: sa for sa in kernel["sas"]}
    rows = []
    for c in children:
        spis = [int(c[k], 16) for k in ("spi-in", "spi-out") if c.get(k)]
        rows.append({"call": calls.get(c.get("uniqueid")), "child": c.get("name"), "state": c.get("state"),
                     "local_ts": c.get("local-ts"), "remote_ts": c.get("remote-ts"),
                     "charon_bytes": {"in": c.get("bytes-in"), "out": c.get("bytes-out")},
                     "kernel_sas": [by_spi[s] for s in spis if s in by_spi],
                     "kernel_policies": [p for p in kernel["policies"] if _covers(p, c)],
                     "problems": compare([c], kernel) if backend == "kernel-netlink" else []})
    return {"gateway": name, "backend": backend, "children": rows, "kernel": kernel}


@click.command()
@click.option("--lab", "lab_name", default=None, help="both gateways of this lab")
@click.option("--vici", default=None, help="this gateway's charon VICI socket (kernel: this namespace)")
@click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False), help="controller log (call ids)")
@click.option("--json", "as_json", is_flag=True)
def sas(lab_name, vici, log_path, as_json) -> None:
    """Per call: charon's CHILD_SA (selectors, bytes) next to the kernel's xfrm SAs and policies."""
    from ..netns.lab import Lab, LabError

    if lab_name:
        try:
            lab_ = Lab.load(lab_name)
        except LabError as exc:
            raise click.ClickException(str(exc)) from None
        reports = [gateway_sas(r, lab_.vici(r), lab_.controller_log(r), g["namespace"])
                   for r, g in lab_.state.get("gateways", {}).items()]
    elif vici:
        reports = [gateway_sas("this gateway", vici, log_path, None)]
    else:
        raise click.UsageError("give --lab NAME or --vici SOCKET")
    if as_json:
        click.echo(json.dumps(reports, indent=1))
        return
    for r in reports:
        if "error" in r:
            click.echo(f"{r['gateway']}: {r['error']}")
            continue
        click.echo(f"{r['gateway']} ({r['backend']}): {len(r['children'])} CHILD_SAs in charon, "
                   f"{len(r['kernel']['sas'])} SAs and {len(r['kernel']['policies'])} policies in the kernel")
        if r["backend"] == "kernel-libipsec":
            click.echo("  kernel-libipsec: ESP runs in charon's user space; the kernel holds no ESP state")
        for c in r["children"]:
            click.echo(f"  call {c['call'] or '?'}: {c['child']} {c['state']} {c['local_ts']} <-> {c['remote_ts']}"
                       f" bytes in/out {c['charon_bytes']['in']}/{c['charon_bytes']['out']}")
            for k in c["kernel_sas"]:
                click.echo(f"    kernel SA spi {k['spi']:#010x} {k['src']} -> {k['dst']}: {k['bytes']} bytes, "
                           f"{k['packets']} packets")
            for p in c["kernel_policies"]:
                sel = p["selector"]
                click.echo(f"    kernel policy dir {['in', 'out', 'fwd'][p['dir']] if p['dir'] < 3 else p['dir']} "
                           f"{sel['src']}:{sel['sport']} -> {sel['dst']}:{sel['dport']} reqid {p['reqid']}")
            for p in c["problems"]:
                click.echo(f"    MISMATCH: {p}")
