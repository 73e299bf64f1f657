"""``ipsecrtp nat-check``: NAT between this gateway and its peers (charon's IKE view) and on each
call's signalling path (the controller's SIP/SDP findings), each finding with its evidence."""

from __future__ import annotations

import json

import click


@click.command("nat-check")
@click.option("--lab", "lab_name", default=None, help="check both gateways of this lab")
@click.option("--vici", default=None, help="this gateway's charon VICI socket")
@click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False), help="this gateway's controller log")
@click.option("--peer", default=None, help="only this peer")
@click.option("--all", "all_calls", is_flag=True, help="also calls that have ended")
@click.option("--json", "as_json", is_flag=True)
def nat_check(lab_name, vici, log_path, peer, all_calls, as_json) -> None:
    """Report NAT between this gateway and each peer, and on each live call, with evidence."""
    from ..netns.lab import Lab
    from ..netns.labstate import LabError
    from ..views import gateway_nat_report

    targets = []
    if lab_name:
        try:
            lab_ = Lab.load(lab_name)
        except LabError as exc:
            raise click.ClickException(str(exc)) from None
        targets = [(r, lab_.vici(r), lab_.controller_log(r)) for r in lab_.state.get("gateways", {})]
    elif vici and log_path:
        targets = [("this gateway", vici, log_path)]
    else:
        raise click.UsageError("give --lab NAME, or --vici SOCKET and --log FILE")
    reports = [gateway_nat_report(n, v, lg, peer, all_calls) for n, v, lg in targets]
    if as_json:
        click.echo(json.dumps(reports, indent=1))
        return
    for r in reports:
        click.echo(f"{r['gateway']} ({r.get('backend', 'no charon')})")
        if "error" in r:
            click.echo(f"  {r['error']}")
        for p in r["peers"]:
            click.echo(f"  peer {p['peer']} ({p['address']}): {'NAT' if p['nat'] else 'no NAT'}")
            for s in p["ike_sas"]:
                click.echo(f"    IKE_SA {s['conn']} {s['state']} seen as {s['seen_as']}; UDP encapsulation: "
                           f"{s['encapsulation']}")
                for f in s["findings"]:
                    click.echo(f"      {f['test']}: {f['evidence']}")
            if not p["ike_sas"]:
                click.echo("    no IKE_SA up")
        for c in r["calls"]:
            click.echo(f"  call {c['call']}{'' if c['live'] else ' (ended)'}:")
            for m in c["messages"]:
                for f in m["findings"]:
                    click.echo(f"    {m['message'][:40]} from {m['source']}: {f['test']}: {f['evidence']}")
            for m in c["media"]:
                state = "as keyed" if m.get("consistent") else "NOT as keyed: " + m.get("reason", "")
                click.echo(f"    media for {m.get('sdp')} came from {m.get('seen')} ({state})")
                for f in m.get("findings", []):
                    click.echo(f"      {f['test']}: {f['evidence']}")
