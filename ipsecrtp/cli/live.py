"""``ipsecrtp calls`` (live, or a capture replayed), ``ipsecrtp drain``: a running controller asked
over its control socket (shell/control.py), the path taken from its configuration file."""

from __future__ import annotations

import json

import click

DEFAULT_CONFIG = "/etc/ipsecrtp/controller.toml"


def ask(config_path: str, request: dict) -> dict:
    """The running controller's answer, or a one-line error (no such file, nobody listening)."""
    from ..config import ConfigError, load
    from ..shell.control import ControlError, query

    try:
        cfg = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        return query(cfg.control_path, request)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None


def _sa_line(sa: dict) -> str:
    c = sa.get("charon") or {}
    figures = (f"charon {c.get('state')} bytes in/out {c.get('bytes_in')}/{c.get('bytes_out')} "
               f"installed {c.get('install_time_s')} s ago") if c else "charon: no such CHILD_SA"
    keyed = f" keyed in {sa['keying_ms']} ms" if sa.get("keying_ms") is not None else ""
    return (f"{'spec ' if sa['speculative'] else ''}SA {sa.get('sa') or '-'} {sa.get('child') or '(peer-named)'} "
            f"{sa['state']} peer {sa['peer']} {sa['role']}{keyed}; {figures}")


def print_calls(answer: dict) -> None:
    head = f"{answer.get('gateway') or 'gateway'} ({answer.get('backend')})"
    click.echo(f"{head}: live calls {len(answer['calls'])}{', draining' if answer.get('draining') else ''}")
    for c in answer["calls"]:
        d = c.get("dialog") or {}
        click.echo(f"{c['call']}  {d.get('state', 'adopted')}  role {c.get('role') or '-'}  "
                   f"strategy {c.get('strategy') or '-'}")
        for f in c["flows"]:
            click.echo(f"    {f['kind']:<9} {f['offerer']} <-> {f['answerer']}")
        if c.get("offered"):
            click.echo(f"    offered   {' '.join(c['offered'])}")
        t = c.get("times") or {}
        if t.get("sa_up") is not None and t.get("answer") is not None:
            click.echo(f"    SA up {1000 * (t['sa_up'] - t['answer']):+.1f} ms after the answer, "
                       f"{t['clear_after_answer']} RTP in clear before the first ESP")
        for sa in c["sas"]:
            click.echo("    " + _sa_line(sa))
            for sel in sa["selectors"]:
                click.echo(f"        {sel}")


def print_sas(answer: dict) -> None:
    click.echo(f"{answer.get('gateway') or 'gateway'} ({answer.get('backend')}): SAs held by the controller "
               f"{len(answer['sas'])}, CHILD_SAs in charon {answer.get('charon_sas', '?')}")
    for sa in answer["sas"]:
        click.echo(f"  call {sa['call']}: " + _sa_line(sa))


@click.command()
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help=f"the controller's TOML (live view; default {DEFAULT_CONFIG}); with --pcap: also show what "
                   "that gateway would decide")
@click.option("--call", "call_id", default=None, help="live: only this call (a Call-ID or its start)")
@click.option("--pcap", default=None, type=click.Path(exists=True, dir_okay=False),
              help="replay this capture offline instead of asking the running controller")
@click.option("--sip-port", "sip_ports", multiple=True, type=int, default=(5060,), show_default=True,
              help="with --pcap and no --config")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def calls(config_path: str | None, call_id: str | None, pcap: str | None, sip_ports: tuple[int, ...],
          as_json: bool) -> None:
    """The running controller's live calls (dialog, flows, role, strategy, SAs, bytes, keying times),
    or with --pcap each dialog of a capture replayed through the SIP core."""
    if pcap is not None:
        from .replay import print_replay

        print_replay(pcap, sip_ports, config_path, as_json)
        return
    answer = ask(config_path or DEFAULT_CONFIG, {"cmd": "calls", "call": call_id})
    if as_json:
        click.echo(json.dumps(answer, indent=1))
    else:
        print_calls(answer)


@click.command()
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False), help="the controller's TOML")
@click.option("--json", "as_json", is_flag=True)
def drain(config_path: str, as_json: bool) -> None:
    """Key no new call; the controller stops once its live calls have ended (their SAs removed)."""
    answer = ask(config_path, {"cmd": "drain"})
    if as_json:
        click.echo(json.dumps(answer, indent=1))
    else:
        click.echo(f"{answer.get('gateway') or 'controller'} draining: {answer['keyed']} keyed calls "
                   f"({answer['sas']} SAs) left; it stops when none is")
