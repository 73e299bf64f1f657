"""What a running gateway holds, for an operator: each call's CHILD_SA next to the kernel's xfrm
state (``ipsecrtp sas``), and NAT between the gateways and on each call's path (``nat-check``).
Library functions: the CLI prints them, the lab tests read them."""

from __future__ import annotations

from .kernel.view import compare, kernel_view
from .keying.strongswan import Charon, KeyingError
from .log import read_log
from .nat import ike_encapsulation, ike_findings
from .netns import proc
from .selectors import ts_endpoint


def covers(policy: dict, child: dict) -> bool:
    """A kernel policy whose selector is one of the child's (local, remote) pairs, either way round."""
    sel = policy["selector"]
    ends = {(sel["src"].split("/")[0], sel["sport"]), (sel["dst"].split("/")[0], sel["dport"])}
    return any(ends == {ts_endpoint(lt), ts_endpoint(rt)} for lt in child.get("local-ts", [])
               for rt in child.get("remote-ts", []))


def gateway_sas(name: str, vici: str, log_path: str | None, ns: str | None) -> dict:
    try:
        charon = Charon(vici)
    except KeyingError as exc:
        return {"gateway": name, "error": str(exc)}
    try:
        backend, children = charon.backend(), charon.child_sas()
    finally:
        charon.close()
    calls = {}
    for e in read_log(log_path) if log_path else []:
        if e.get("event") == "sa-up" and e.get("call"):
            calls[e.get("sa")] = e["call"]
    kernel = proc.in_netns(ns, kernel_view) if ns else kernel_view()
    by_spi = {sa["spi"]: sa for sa in kernel["sas"]}
    rows = []
    for c in children:
        spis = [int(c[k], 16) for k in ("spi-in", "spi-out") if c.get(k)]
        rows.append({"call": calls.get(c.get("uniqueid")), "child": c.get("name"), "state": c.get("state"),
                     "local_ts": c.get("local-ts"), "remote_ts": c.get("remote-ts"),
                     "charon_bytes": {"in": c.get("bytes-in"), "out": c.get("bytes-out")},
                     "kernel_sas": [by_spi[s] for s in spis if s in by_spi],
                     "kernel_policies": [p for p in kernel["policies"] if covers(p, c)],
                     "problems": compare([c], kernel) if backend == "kernel-netlink" else []})
    return {"gateway": name, "backend": backend, "children": rows, "kernel": kernel}


def gateway_nat_report(name: str, vici: str, log_path: str, peer: str | None, all_calls: bool) -> dict:
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
            sas = charon.list_sas()
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
