"""``ipsecrtp bench conference``: a conference's legs through the lab, keyed per leg and with
``legs = "shared"`` (issue 17 item 3), each in a lab of its own."""

from __future__ import annotations

import dataclasses
import json
import os

import click

from .progress import steps


@click.command()
@click.option("--n", "ns", default="2,5,10", show_default=True, help="legs per conference, comma-separated")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(min=1), help="rounds over the Ns")
@click.option("--legs", "modes", type=click.Choice(["per-leg", "shared", "both"]), default="both",
              show_default=True, help="the controllers' keying of the legs")
@click.option("--json", "as_json", is_flag=True)
def conference(ns: str, repeat: int, modes: str, as_json: bool) -> None:
    """N participants dial a bridge across the gateways: CHILD_SAs, IKE exchanges, time from the last
    answer to all legs keyed, and what the other legs see when one leaves."""
    if os.geteuid() != 0:
        raise click.ClickException("the lab benchmarks need root (network namespaces)")
    try:
        legs = [int(v) for v in ns.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of whole numbers, not {ns!r}") from None
    if not legs or min(legs) < 2 or max(legs) > 50:
        raise click.BadParameter("each N from 2 to 50 (the lab's RTP range holds 50 legs a side)")
    from ..netns.conference import measure, report, summary
    from ..netns.sharedsa import shared_report

    chosen = ["per-leg", "shared"] if modes == "both" else [modes]
    with steps("bench conference", as_json, total=len(chosen)) as progress:
        results = {}
        for m in chosen:
            results[m] = measure(legs, repeat, legs=m)
            progress(f"legs {m}: {len(results[m][0])} conferences")
    if as_json:
        click.echo(json.dumps({m: {"controller": [dataclasses.asdict(r) for r in runs],
                                   "charon_alone": [dataclasses.asdict(r) for r in alone]}
                               for m, (runs, alone) in results.items()}, indent=1))
        return
    lines = []
    for m, (runs, _) in results.items():
        lines += [f"legs = {m!r} (the controllers):", *report(runs), "", *summary(runs), ""]
    alone = next(iter(results.values()))[1]
    click.echo("\n".join([*lines, "charon alone (no controller), medians:", *shared_report(alone)]))
