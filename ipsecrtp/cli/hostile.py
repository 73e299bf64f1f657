"""``ipsecrtp bench hostile``: the controller's cost per hostile message, in-process (no lab, no root)."""

from __future__ import annotations

import datetime
import json
import os

import click

from .progress import steps


def _results_path(day: str) -> str | None:
    """bench/results/hostile-DAY.txt of the checkout this package runs from (None when installed elsewhere)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = os.path.join(root, "bench", "results")
    return os.path.join(results, f"hostile-{day}.txt") if os.path.isdir(results) else None


@click.command()
@click.option("--messages", default=2000, show_default=True,
              help="hostile messages per class (the INVITE flood sends 20000: beyond the dialog caps)")
@click.option("--class", "classes", multiple=True, help="only this input class (repeatable); default: all")
@click.option("--strategy", default="child-per-call", show_default=True,
              help="the gateway's keying strategy (speculative keys every offer: the dearest for a flood)")
@click.option("--out", default=None, help="append the text report here [default: bench/results/hostile-DATE.txt "
                                          "of the checkout, if there is one]")
@click.option("--json", "as_json", is_flag=True)
def hostile(messages: int, classes: tuple[str, ...], strategy: str, out: str | None, as_json: bool) -> None:
    """Each class of hostile SIP (port count 65000, 1000 m= lines, 500 Vias, huge headers, RFC 4475,
    fuzz mutants, an INVITE flood, ...) through a gateway core, legitimate calls placed meanwhile:
    CPU per message p50/p99/max, timer batches, memory, caps hit. Goal: p99 <= 1 ms, max <= 5 ms."""
    from ..config import STRATEGIES
    from ..hostile import format_text, run
    from ..hostile_inputs import CLASSES

    bad = [c for c in classes if c not in CLASSES]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not one of {', '.join(CLASSES)}", param_hint="--class")
    strategy = STRATEGIES.get(strategy, strategy)
    if strategy not in STRATEGIES.values():
        raise click.BadParameter(f"{strategy!r} is not one of {', '.join(STRATEGIES.values())}")
    with steps("bench hostile", as_json) as progress:
        report = run(list(classes) or None, messages, strategy, progress=progress)
    text = format_text(report)
    click.echo(json.dumps(report, indent=1) if as_json else text)
    path = out or _results_path(datetime.date.today().isoformat())
    if path:
        with open(path, "a") as f:
            f.write(text + "\n\n")
        if not as_json:
            click.echo(f"(appended to {path})")
