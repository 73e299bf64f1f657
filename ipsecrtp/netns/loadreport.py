"""What a load run (``ipsecrtp bench load``) measured, from sources independent of each other:
the controllers' JSON logs (keying decisions and times), a capture of the WAN (what crossed in
clear), and the kernel and charon after the run. Pure functions over those, and the text report.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from .loadprofile import format_profile

IKE_PORTS = (500, 4500)


def percentile(xs: list[float | None], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of xs (None values left out), None for no data."""
    s = sorted(x for x in xs if x is not None)
    if not s:
        return None
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def pcts(xs: list[float]) -> dict[str, float | None]:
    return {f"p{int(q * 100)}": _r(percentile(xs, q)) for q in (0.5, 0.9, 0.99)}


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


# -- the capture ------------------------------------------------------------------------------

def pcap_udp(path: str) -> Iterator[tuple[float, str, int, str, int, bytes]]:
    """(time, src, sport, dst, dport, first payload bytes) of each IPv4 UDP packet in a classic pcap
    of an Ethernet interface, as ``tcpdump -w`` writes it. Hand-rolled: a load run's capture holds
    hundreds of thousands of packets, and scapy reads a few ten thousand a second."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        if len(hdr) < 24:
            return
        magic = struct.unpack("<I", hdr[:4])[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        nano = struct.unpack(endian + "I", hdr[:4])[0] == 0xA1B23C4D
        rec = struct.Struct(endian + "IIII")
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                return
            sec, frac, incl, _orig = rec.unpack(rh)
            data = f.read(incl)
            off = 14
            etype = struct.unpack_from("!H", data, 12)[0] if len(data) >= 14 else 0
            if etype == 0x8100 and len(data) >= 18:
                etype, off = struct.unpack_from("!H", data, 16)[0], 18
            if etype != 0x0800 or len(data) < off + 28 or data[off + 9] != 17:
                continue
            if struct.unpack_from("!H", data, off + 6)[0] & 0x1FFF:
                continue  # a later fragment: no UDP header
            ihl = (data[off] & 0x0F) * 4
            u = off + ihl
            if len(data) < u + 8:
                continue
            sport, dport = struct.unpack_from("!HH", data, u)
            src = ".".join(str(b) for b in data[off + 12:off + 16])
            dst = ".".join(str(b) for b in data[off + 16:off + 20])
            yield sec + frac / (1e9 if nano else 1e6), src, sport, dst, dport, data[u + 8:u + 12]


@dataclass
class Wire:
    rtp_clear: int = 0
    esp: int = 0
    ike: int = 0
    sip: int = 0
    clear_by_call: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # call -> (time, source)
    clear_unattributed: int = 0


def wire_counts(path: str, rtp_ports: tuple[int, int], flows: dict[frozenset, list[tuple[float, str]]],
                sip_port: int = 5060) -> Wire:
    """Count the capture's UDP: IKE, ESP-in-UDP, SIP, and media on the RTP range in clear, each clear
    packet given to the call whose keyed flow it is (the latest call on that port pair answered before
    it: sipp reuses ports after 2,500 calls)."""
    lo, hi = rtp_ports
    w = Wire()
    for t, src, sport, dst, dport, head in pcap_udp(path):
        if 4500 in (sport, dport):
            if head[:4] == b"\0\0\0\0":
                w.ike += 1  # the non-ESP marker: IKE on the NAT-T port
            else:
                w.esp += 1
        elif 500 in (sport, dport):
            w.ike += 1
        elif sip_port in (sport, dport):
            w.sip += 1
        elif lo <= sport <= hi + 1 or lo <= dport <= hi + 1:
            w.rtp_clear += 1
            cands = flows.get(frozenset(((src, sport), (dst, dport))), [])
            call = next((c for ta, c in reversed(cands) if ta <= t + 1.0), None)
            if call is None:
                w.clear_unattributed += 1
            else:
                w.clear_by_call.setdefault(call, []).append((t, src))
    return w


PHASES = ("before_sa", "while_keyed", "after_sa")


def clear_phases(records: list[dict], clear_by_call: dict[str, list[tuple[float, str]]],
                 roles: dict[str, str]) -> dict[str, dict[str, int]]:
    """Each call's media in clear, by when it left relative to the sending gateway's CHILD_SA of
    the call: before it was up (the post-answer gap), while it was up (the SA was there and the
    packet still went around it: a data-plane fault), after it was removed (trailing media).
    ``roles``: gateway address -> gateway. Times: the controllers' log times of sa-up/sa-down
    against the capture's kernel timestamps, both wall clock on one machine."""
    out = {}
    for r in records:
        counts = dict.fromkeys(PHASES, 0)
        for t, src in clear_by_call.get(r["call"], []):
            role = roles.get(src)
            up, down = r["sa_up"].get(role), r["sa_down"].get(role)
            if up is None or t < up:
                counts["before_sa"] += 1
            elif down is None or t < down:
                counts["while_keyed"] += 1
            else:
                counts["after_sa"] += 1
        out[r["call"]] = counts
    return out


def _endpoint(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def call_flows(records: list[dict]) -> dict[frozenset, list[tuple[float, str]]]:
    out: dict[frozenset, list[tuple[float, str]]] = {}
    for r in records:
        for f in r["flows"]:
            key = frozenset((_endpoint(f["offerer"]), _endpoint(f["answerer"])))
            out.setdefault(key, []).append((r["answer_t"], r["call"]))
    for v in out.values():
        v.sort()
    return out


# -- the controllers' logs --------------------------------------------------------------------

def call_records(logs: dict[str, list[dict]]) -> list[dict]:
    """One record per call the controllers saw answered, in the order of the answers."""
    calls: dict[str, dict] = {}

    def rec(cid: str) -> dict:
        return calls.setdefault(cid, {"call": cid, "answer_t": None, "initiator": None, "flows": [],
                                      "keyed": False, "keying_ms": None, "after_answer_ms": None,
                                      "keyed_ts": None, "failures": [], "sa_up": {}, "sa_down": {},
                                      "removed": False, "ended_t": None, "sa_up_only": False,
                                      "controller_clear": {}, "dropped": {}, "dropped_after_end": {}})

    for role, events in logs.items():
        for e in events:
            cid = e.get("call")
            if not cid:
                continue
            ev = e.get("event")
            if ev == "keying":
                r = rec(cid)
                if e.get("t") is not None:
                    r["answer_t"] = min(r["answer_t"] or e["t"], e["t"])
                if e.get("role") in ("initiator", "both"):
                    r["initiator"] = role
                if e.get("flows") and not r["flows"]:
                    r["flows"] = e["flows"]
            elif ev == "sa-initiated":
                r = rec(cid)
                r.update(keyed=True, keying_ms=e.get("keying_ms"), after_answer_ms=e.get("after_answer_ms"),
                         keyed_ts=e.get("ts"))
            elif ev == "keying-failed":
                rec(cid)["failures"].append(e.get("reason"))
            elif ev == "sa-up":
                rec(cid)["sa_up"].setdefault(role, e.get("ts"))
            elif ev in ("unkeying", "dialog-ended") and e.get("t") is not None:
                r = rec(cid)
                r["ended_t"] = min(r["ended_t"] or e["t"], e["t"])
            elif ev == "sa-down":
                rec(cid)["sa_down"][role] = e.get("ts")
            elif ev == "sa-removed":
                rec(cid)["removed"] = True
            elif ev == "timeline":
                m, r = e.get("metrics") or {}, rec(cid)
                r["controller_clear"][role] = m.get("clear_rtp_after_answer")
                # media the fail-closed data plane kept from the WAN (protect = required), as this gateway counted it
                r["dropped"][role] = m.get("rtp_dropped_before_protection")
                r["dropped_after_end"][role] = m.get("rtp_dropped_after_end")
    out = [r for r in calls.values() if r["answer_t"] is not None]
    for r in out:
        up = r["sa_up"].get(r["initiator"]) if r["initiator"] else None
        if not r["keyed"] and up is not None:
            # an SA set up for a call that had already ended: the gateway core forgets the call at
            # its BYE and logs no sa-initiated for it, but charon still set it up (an install queued
            # behind others); its initiator's sa-up says when, and it counts as late
            r.update(keyed=True, keyed_ts=up, after_answer_ms=round((up - r["answer_t"]) * 1000, 3),
                     sa_up_only=True)
        # keyed means protected while the call lasted: an SA that comes up after the BYE (a backlog
        # the controller only reached later) protects nothing
        r["late"] = r["keyed"] and r["ended_t"] is not None and (r["keyed_ts"] or 0) > r["ended_t"]
        r["keyed_live"] = r["keyed"] and not r["late"]
    out.sort(key=lambda r: r["answer_t"])
    return out


def kept_from_wan(records: list[dict]) -> dict[str, int]:
    """What the data plane dropped instead of sending in clear, summed over both gateways' timeline
    lines: before the call's SA was up (or without one), after the call's end (trailing media), and
    the calls with a timeline line carrying the count (older controllers log none)."""
    out = {"before_protection": 0, "after_end": 0, "calls_counted": 0}
    for r in records:
        before = [v for v in r["dropped"].values() if v is not None]
        out["before_protection"] += sum(before)
        out["after_end"] += sum(v for v in r["dropped_after_end"].values() if v is not None)
        out["calls_counted"] += bool(before)
    return out


def _dropped(r: dict) -> int:
    return sum(v for v in r["dropped"].values() if v is not None)


def tenths(records: list[dict], clear: dict[str, dict[str, int]], parts: int = 10) -> list[dict]:
    """The calls in order of answer, cut into ``parts`` groups: keying figures per group, so that
    growth with the number of live calls shows."""
    rows = []
    n = len(records)
    for i in range(min(parts, n)):
        group = records[i * n // parts:(i + 1) * n // parts]
        initiated = [r for r in group if r["keyed"]]  # the delays of late SAs too: they show the backlog
        rows.append({"tenth": i + 1, "calls": len(group), "keyed": sum(r["keyed_live"] for r in group),
                     "late": sum(r["late"] for r in group),
                     "after_answer_ms": pcts([r["after_answer_ms"] for r in initiated]),
                     "keying_ms": pcts([r["keying_ms"] for r in initiated]),
                     "dropped": sum(_dropped(r) for r in group),
                     **{f"clear_{k}": sum(clear.get(r["call"], {}).get(k, 0) for r in group) for k in PHASES}})
    return rows


def rate(times: list[float]) -> float | None:
    """Events per second over the span of their times."""
    times = sorted(t for t in times if t is not None)
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return round((len(times) - 1) / (times[-1] - times[0]), 1)


# -- the text report --------------------------------------------------------------------------

def _f(v, w: int, nd: int = 1) -> str:
    if v is None:
        return f"{'-':>{w}}"
    return f"{v:>{w}.{nd}f}" if isinstance(v, float) else f"{v:>{w}}"


def format_text(rep: dict) -> str:
    p, c, raw = rep["params"], rep["calls"], rep["raw_charon"]
    lines = [f"bench load {rep['date']} on {rep['machine']['cpu']} ({rep['machine']['nproc']} cores), kernel "
             f"{rep['machine']['kernel']}, charon backend {rep['backend']}",
             f"offered {p['rate']} calls/s, {p['calls']} calls held {p['hold']} s, RTT {p['rtt_ms']} ms, strategy "
             f"{p['strategy']}, IKE_SA pool {p.get('ike_pool', 1)}, RTP ports {p['rtp_ports'][0]}-{p['rtp_ports'][1]}, "
             f"one RTP packet every {p['ptime_ms']} ms each way"
             + (f"; charon tuned: {', '.join(p['charon'])}" if p.get("charon") else ""),
             f"raw charon (same charons over VICI, no controller, {raw['children']} children on one IKE_SA, "
             f"sequential): {_f(raw['create_per_s'], 0)} CREATE_CHILD_SA/s (p50 {raw['create_ms']['p50']} ms), "
             f"{_f(raw['cycle_per_s'], 0)} create+delete/s",
             f"calls: offered {c['offered']} (sipp: {c['sipp_successful']} successful, {c['sipp_failed']} failed), "
             f"answers the controllers decided on {c['seen']}, keyed while the call lasted {c['keyed']}, not keyed "
             f"{c['not_keyed']} (of which SA up only after the call's end: {c['keyed_late']}), SA up on both "
             f"gateways {c['sa_up_both']}, calls with keying failures logged {c['keying_failed']}",
             f"rates: answers decided on {_f(c['seen_per_s'], 0)} calls/s, keyed {_f(c['keyed_per_s'], 0)} calls/s = "
             f"{_f(c['keyed_vs_raw'], 0, 3)} x raw create rate; concurrent calls at most ~{c['concurrent_est']}; "
             f"machine load average {c['loadavg_at_start']} at the first call, {c['loadavg_at_end']} at the last",
             "", "per tenth of the calls the controllers decided on (by answer time); RTP in clear: before the "
             "call's SA was up at the sending gateway / while it was up / after it went; late: SA up only after "
             "the call ended (its delays are in the percentiles); dropped: media the data plane kept from the WAN "
             "before the call's SA (protect = required; both gateways' timeline lines)",
             f"{'tenth':>5} {'calls':>5} {'keyed':>5} {'late':>4} {'after_answer_ms p50':>19} {'p90':>8} {'p99':>8} "
             f"{'keying_ms p50':>13} {'p90':>8} {'p99':>8} {'clear: before':>13} {'while':>6} {'after':>6} "
             f"{'dropped':>8}"]

    def row(label, n, k, late, a, kk, clear, dropped) -> str:
        return (f"{label:>5} {n:>5} {k:>5} {late:>4} {_f(a['p50'], 19)} {_f(a['p90'], 8)} {_f(a['p99'], 8)} "
                f"{_f(kk['p50'], 13)} {_f(kk['p90'], 8)} {_f(kk['p99'], 8)} {clear['before_sa']:>13} "
                f"{clear['while_keyed']:>6} {clear['after_sa']:>6} {_f(dropped, 8)}")

    for t in rep["tenths"]:
        lines.append(row(t["tenth"], t["calls"], t["keyed"], t["late"], t["after_answer_ms"], t["keying_ms"],
                         {k: t[f"clear_{k}"] for k in PHASES}, t.get("dropped")))
    w, m = rep["wire"], rep["media"]
    kept = w.get("kept_from_wan") or {}
    lines.append(row("all", c["seen"], c["keyed"], c["keyed_late"], rep["after_answer_ms"], rep["keying_ms"],
                     w["clear"], kept.get("before_protection")))
    lines += ["", f"WAN (capture on gwa): {w['rtp_clear']} RTP packets in clear ({w['calls_with_clear']} calls; "
              f"{w['clear_unattributed']} not matched to a call), {w['esp']} ESP-in-UDP, {w['ike']} IKE, "
              f"{w['sip']} SIP; capture dropped {w['capture_dropped']}"]
    if kept:
        lines.append(f"kept from the WAN by the data plane (controllers' timelines, both gateways): "
                     f"{kept['before_protection']} RTP/RTCP before the call's SA, {kept['after_end']} after the "
                     f"call's end; {kept['calls_counted']} calls' timelines carried the count")
    lines.append(f"RTP senders: {m['sent']} sent, {m['received']} received, {m['streams']} streams, "
                 f"{m['send_errors']} send errors, {m['bind_errors']} bind errors")
    drops = rep.get("udp_drops") or {}
    if drops:
        lines.append("UDP datagrams the kernel dropped during the calls (receive buffer full): " + "; ".join(
            f"{r}: {d['ike_socket_drops']} on charon's IKE/NAT-T sockets ({d['udp_rcvbuf_errors']} in the namespace)"
            for r, d in drops.items()))
    lines.append("resources during the calls (CPU seconds; peak RSS since start, MB):")
    for role, r in rep["resources"].items():
        ctl, ch = r["controller"], r["charon"]
        lines.append(f"  {role}: controller {_f(ctl['cpu_s'], 6, 2)} s CPU ({_f(ctl['cpu_ms_per_call'], 0, 1)} "
                     f"ms/call), {_f(ctl['peak_rss_mb'], 0)} MB; charon {_f(ch['cpu_s'], 6, 2)} s CPU "
                     f"({_f(ch['cpu_ms_per_call'], 0, 1)} ms/call), {_f(ch['peak_rss_mb'], 0)} MB")
    lines.append(f"after the run (settled in {rep['settle_s']} s{'' if rep['settled'] else ', NOT settled'}), "
                 "left vs before the calls:")
    for role, lk in rep["leaks"].items():
        lines.append("  " + role + ": " + ", ".join(f"{k} {v:+d}" if isinstance(v, int) else f"{k} {v}"
                                                  for k, v in lk.items()))
    return "\n".join(lines) + "\n" + format_profile(rep.get("profiles") or {})
