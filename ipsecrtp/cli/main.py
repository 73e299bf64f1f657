"""The ipsecrtp command. Thin: parse options, call the library, print one line on failure."""

from __future__ import annotations

import json
import sys

import click

from .bench import bench
from .checkconfig import check_config
from .doctor import doctor
from .lab import lab
from .live import calls, drain
from .natcheck import nat_check
from .overhead import overhead
from .sas import sas


@click.group()
def main() -> None:
    """Per-call IPsec keying of RTP/RTCP between VoIP gateways."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="controller TOML file")
@click.option("--flush", is_flag=True,
              help="at stop, remove live calls' SAs, the data plane and the journal (kept by default: a restart "
                   "adopts the calls, and media stays fail-closed meanwhile)")
def run(config_path: str, flush: bool) -> None:
    """Watch SIP on this gateway and key each call's media through charon."""
    from ..config import ConfigError, load
    from ..controller import Controller, ControllerError
    from ..log import DecisionLog
    from ..service import Service

    try:
        cfg = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    ctl = Controller(cfg, DecisionLog())
    ctl.flush = flush
    try:
        ctl.start()
    except ControllerError as exc:
        ctl.shutdown()  # undoes only what start() did; a failure before loading changes nothing
        raise click.ClickException(str(exc)) from None
    # systemd's notify protocol (readiness now, the watchdog from the loop), SIGHUP, draining
    service = Service(ctl, config_path)
    service.install_signals()
    service.run()


@main.command()
@click.argument("call")
@click.option("--lab", "lab_name", default=None, help="read the controllers' logs of this lab")
@click.option("--log", "logs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a controller's JSON-lines log (repeatable)")
@click.option("--rtt", type=float, default=None, help="RTT for the what-if table (default: measured IKE RTT)")
@click.option("--svg", "svg_path", default=None, type=click.Path(dir_okay=False),
              help="also draw the call's ladder diagram (SIP, IKE, SA, media on a time axis) into this SVG file")
@click.option("--json", "as_json", is_flag=True)
def report(call: str, lab_name: str | None, logs: tuple[str, ...], rtt: float | None, svg_path: str | None,
           as_json: bool) -> None:
    """A call's timeline on each gateway: SIP, IKE, SA, media; SRD/SDD; budget verdict; what-if."""
    from ..log import read_log
    from ..netns.lab import Lab
    from ..netns.labstate import LabError
    from ..timing import BUDGETS, format_timeline, what_if

    paths = list(logs)
    if lab_name:
        try:
            lab_ = Lab.load(lab_name)
        except LabError as exc:
            raise click.ClickException(str(exc)) from None
        paths += [lab_.controller_log(r) for r in lab_.state.get("gateways", {})]
    if not paths:
        raise click.UsageError("give --lab NAME or --log FILE")
    found = [e for p in paths for e in read_log(p)
             if e.get("event") == "timeline" and str(e.get("call", "")).startswith(call)]
    if not found:
        raise click.ClickException(f"no timeline for a call {call!r} in {', '.join(paths)} (logged when the call ends)")
    if len({e["call"] for e in found}) > 1:
        raise click.ClickException(f"{call!r} matches several calls: {sorted({e['call'] for e in found})}")
    if svg_path:
        from ..ladder import write_svg

        drawn = write_svg(found, svg_path)
        click.echo(f"wrote {svg_path}: {len(drawn)} messages and marks", err=as_json)
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    click.echo(f"call {found[0]['call']}")
    for tl in sorted(found, key=lambda e: e.get("gateway", "")):
        for line in format_timeline(tl):
            click.echo(line)
    init = next((e for e in found if e.get("role") == "initiator"), found[0])
    rtts = init.get("metrics", {}).get("ike_rtts_ms") or []
    basis = rtt if rtt is not None else (sorted(rtts)[len(rtts) // 2] if rtts else None)
    if basis is not None:
        budget = BUDGETS[(init.get("verdict") or {}).get("budget", "e721-toll")]
        click.echo(f"what-if at {basis:.1f} ms RTT ({'given' if rtt is not None else 'median IKE RTT measured'}),"
                   f" post-answer budget {budget.gap_ms:.0f} ms:")
        for w in what_if(basis, budget):
            click.echo(f"  {w['scheme']:<45} {w['rtts']:>4} RTT {w['cost_ms']:>8.1f} ms  "
                       f"{'fits' if w['fits_at_answer'] else 'over budget'}")


main.add_command(lab)
main.add_command(bench)
main.add_command(nat_check)
main.add_command(sas)
main.add_command(calls)
main.add_command(drain)
main.add_command(check_config)
main.add_command(doctor)
main.add_command(overhead)

if __name__ == "__main__":
    sys.exit(main())
