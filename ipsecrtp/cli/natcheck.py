"""``ipsecrtp nat-check``: NAT between this gateway and its peers (charon's IKE view) and on each
call's signalling path (the controller's SIP/SDP findings), each finding with its evidence."""

from __future__ import annotations

import json

import click


def gateway_report(name: str, vici: str, log_path: str, peer: str | None, all_calls: bool) -> dict:
    from ..keying.strongswan import Charon, KeyingError, _decode
    from ..nat import ike_encapsulation, ike_findings
    from ..netns.lab import read_log

    events = read_log(log_path)
    peers = {e["peer"]: e for e in events if e.get("event") == "peer-loaded"}
    out: dict = {"gateway": name, "peers": [], "calls": []}
    sas: list = []
    backend = "none"
    try:
        charon = Charon(vici)
    except KeyingError as exc:
        out["error"] = str(exc)  # the SIP and media findings below come from the log alone
        peers = {}
    else:
        try:
            backend = charon.backend()
            out["backend"] = backend
            sas = [_decode(x) for x in charon.session.list_sas()]
        finally:
            charon.close()
    for pname, p in peers.items():
        if peer and pname != peer:
            continue
        entry = {"peer": pname, "address": p.get("remote_id") or p.get("ike_remote"), "ike_sas": []}
        for sa in sas:
            for conn, ike in sa.items():
                if conn != p["conn"] and not conn.startswith("call-"):
                    continue
                found = ike_findings(ike, entry["address"], backend)
                entry["ike_sas"].append({"conn": conn, "state": ike.get("state"),
                                         "seen_as": f"{ike.get('remote-host')}:{ike.get('remote-port')}",
                                         "encapsulation": ike_encapsulation(ike, backend),
                                         "findings": [f.to_json() for f in found]})
        entry["nat"] = any(s["findings"] for s in entry["ike_sas"])
        out["peers"].append(entry)
    ended = {e.get("call") for e in events if e.get("event") in ("unkeying", "dialog-ended", "timeline")}
    calls: dict[str, dict] = {}
    for e in events:
        if e.get("event") not in ("nat-sip", "nat-media") or not (all_calls or e.get("call") not in ended):
            continue
        c = calls.setdefault(e["call"], {"call": e["call"], "live": e["call"] not in ended, "messages": [],
                                         "media": []})
        if e["event"] == "nat-sip":
            c["messages"].append({"message": e.get("message"), "source": e.get("source"),
                                  "findings": e.get("findings", [])})
        else:  # latching: where the phone's media really came from, against the SDP and the keyed flow
            c["media"].append({k: e.get(k) for k in ("sdp", "seen", "keyed", "consistent", "findings", "reason")
                               if e.get(k) is not None})
    out["calls"] = list(calls.values())
    return out


@click.command("nat-check")
@click.option("--lab", "lab_name", default=None, help="check both gateways of this lab")
@click.option("--vici", default=None, help="this gateway's charon VICI socket")
@click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False), help="this gateway's controller log")
@click.option("--peer", default=None, help="only this peer")
@click.option("--all", "all_calls", is_flag=True, help="also calls that have ended")
@click.option("--json", "as_json", is_flag=True)
def nat_check(lab_name, vici, log_path, peer, all_calls, as_json) -> None:
    """Report NAT between this gateway and each peer, and on each live call, with evidence."""
    from ..netns.lab import Lab, LabError

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
    reports = [gateway_report(n, v, lg, peer, all_calls) for n, v, lg in targets]
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
