"""``ipsecrtp sas``: each call's SAs as charon reports them and as the kernel holds them."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--lab", "lab_name", default=None, help="both gateways of this lab")
@click.option("--vici", default=None, help="this gateway's charon VICI socket (kernel: this namespace)")
@click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False), help="controller log (call ids)")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="ask the running controller of this TOML (its control socket) for the SAs it holds")
@click.option("--json", "as_json", is_flag=True)
def sas(lab_name, vici, log_path, config_path, as_json) -> None:
    """Per call: charon's CHILD_SA (selectors, bytes) next to the kernel's xfrm SAs and policies; with
    --config, the SAs the running controller holds, each with charon's state and bytes."""
    if config_path:
        from .live import ask, print_sas

        answer = ask(config_path, {"cmd": "sas"})
        if as_json:
            click.echo(json.dumps(answer, indent=1))
        else:
            print_sas(answer)
        return
    from ..netns.lab import Lab
    from ..netns.labstate import LabError
    from ..views import gateway_sas

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
        raise click.UsageError("give --config FILE (the running controller), --lab NAME or --vici SOCKET")
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
