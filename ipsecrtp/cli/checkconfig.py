"""``ipsecrtp check-config FILE``: validate a controller configuration without starting anything."""

from __future__ import annotations

import json

import click


@click.command("check-config")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def check_config(config_path: str, as_json: bool) -> None:
    """Check FILE as `ipsecrtp run` would load it (types, values, PSK files) and refuse unknown keys;
    exit 1 with one line per problem. Starts nothing, asks nothing of charon."""
    from ..configschema import check_file

    cfg, problems = check_file(config_path)
    if as_json:
        out: dict = {"file": config_path, "ok": not problems, "problems": problems}
        if cfg is not None:
            out.update(name=cfg.name, peers=[p.name for p in cfg.peers], control_socket=cfg.control_path,
                       metrics=f"{cfg.metrics[0]}:{cfg.metrics[1]}" if cfg.metrics else None)
        click.echo(json.dumps(out, indent=1))
    elif not problems:
        assert cfg is not None
        click.echo(f"{config_path}: ok: {len(cfg.peers)} peers ({', '.join(p.name for p in cfg.peers)}), "
                   f"control socket {cfg.control_path}, metrics "
                   f"{f'{cfg.metrics[0]}:{cfg.metrics[1]}' if cfg.metrics else 'off'}")
    else:
        for p in problems:
            click.echo(p, err=True)
    if problems:
        raise SystemExit(1)
