"""``ipsecrtp doctor``: options and output only; the checks live in ``ipsecrtp/doctor.py``."""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="a JSON list of checks (name, ok, required, what, detail, fix)")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="check this machine as a gateway running this controller TOML")
@click.option("--quiet", "-q", is_flag=True, help="print only what is not ok, and the summary")
def doctor(as_json: bool, config_path: str | None, quiet: bool) -> None:
    """Check the programs, charon plugins and kernel features ipsecrtp needs; say what installs them.

    Exits 0 only if nothing required is missing."""
    from ..doctor import failed, format_line, run_checks

    checks = run_checks(config_path)
    bad = failed(checks)
    if as_json:
        click.echo(json.dumps([c.to_json() for c in checks], indent=1))
    else:
        for c in checks:
            if not (quiet and c.ok):
                click.echo(format_line(c))
        role = "a gateway" if config_path else "a lab and test machine"
        click.echo(f"{len(checks)} checks as {role}: " + (
            "nothing required is missing" if not bad else
            f"{len(bad)} required missing: {', '.join(c.name for c in bad)}"))
    sys.exit(1 if bad else 0)
