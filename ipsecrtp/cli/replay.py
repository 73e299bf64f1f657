"""``ipsecrtp calls --pcap``: a capture replayed offline through the SIP core, each dialog printed."""

from __future__ import annotations

import json

import click


def print_replay(pcap: str, sip_ports: tuple[int, ...], config_path: str | None, as_json: bool) -> None:
    """Each dialog of ``pcap`` and its media flows; with ``config_path`` also what that gateway would
    key, refuse, re-key and remove, and when."""
    from ..config import ConfigError, load
    from ..offline import decisions, replay

    try:
        cfg = load(config_path) if config_path else None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        report = replay(pcap, set(cfg.sip_ports) if cfg else set(sip_ports))
        decided = decisions(pcap, cfg) if cfg else None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{pcap}: {exc}") from None
    if decided is not None:
        for c in report["calls"]:
            c["decisions"] = decided.get(c["call_id"], [])
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"{report['messages']} SIP messages, {len(report['calls'])} calls, {len(report['rejected'])} rejected")
    for c in report["calls"]:
        click.echo(f"{c['call_id']}  {c['state']}  {c.get('end_reason') or ''}")
        t0 = c["started"]
        if t0 is not None:
            marks = [(k, c[k]) for k in ("early", "confirmed", "ended") if c[k] is not None]
            click.echo("    " + "  ".join(f"{k} +{(t - t0) * 1000:.1f} ms" for k, t in marks))
        tl = c.get("timeline", {}).get("metrics")
        if tl:
            click.echo(f"    SRD {tl['srd_ms']} ms, SDD {tl['sdd_ms']} ms, IKE {tl['ike_exchanges'] or '-'}, first ESP "
                       f"{tl['first_esp_after_answer_ms']} ms after the answer, "
                       f"{c['timeline']['clear_after_answer']} RTP/RTCP in clear before it")
        if c["retransmissions"] or c["relayed"]:
            click.echo(f"    {c['retransmissions']} retransmissions, "
                       f"{c['relayed']} messages seen again one proxy hop on")
        for f in c["flows"]:
            click.echo(f"    {f['kind']:<9} {f['offerer']} <-> {f['answerer']}")
        for n in c["notes"]:
            click.echo(f"    note: {n}")
        for e in c["events"]:
            click.echo(f"    {e['time']:.6f} {e['type']} {e.get('detail', '')}")
        for d in c.get("decisions", []):
            what = d.get("event") or d.get("action")
            extra = {k: v for k, v in d.items() if k in ("role", "child", "reason", "strategy", "flows", "local_ts",
                                                         "remote_ts", "trigger")}
            click.echo(f"    decided {d['time']:.6f} {what} {json.dumps(extra, default=str)}")
    for r in report["rejected"]:
        click.echo(f"rejected {r['time']:.6f} {r['source']}: {r['reason']}")
