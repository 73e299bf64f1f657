"""Offline replay of a capture (pcap or pcapng) through the same sans-I/O core."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields, replace

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader

from .config import ControllerConfig
from .gateway.actions import Action, Log
from .gateway.core import GatewayCore
from .gateway.simulate import SimulatedCharon
from .packet import SipExtractor, classify, decode_ip, ike_port
from .sip.dialog import DialogTracker
from .sip.errors import SipParseError
from .sip.events import (
    DialogConfirmed,
    DialogEarly,
    DialogTerminated,
    ExtraDialog,
    MediaChanged,
    MediaNegotiated,
    MediaOffered,
    MediaRenegotiated,
    MessageRejected,
    Relayed,
    Retransmission,
    SipSeen,
)
from .timing import CallTimeline, IkePacket, parse_ike, update_timeline


def ip_packets(path: str):
    """(timestamp, raw IP bytes) for every IPv4/IPv6 packet in a pcap/pcapng file."""
    with PcapReader(path) as reader:
        for pkt in reader:
            layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if layer is not None:
                yield float(pkt.time), bytes(layer)


def _media(pkt, kind: str, t: float, timelines: dict, flow_calls: dict, ike: list) -> None:
    """IKE, ESP and negotiated RTP/RTCP in the capture, for the calls' timelines."""
    if kind == "ike":
        p = parse_ike(pkt.payload, ike_port(pkt), t, pkt.src)
        if p is not None:
            ike.append(p)
        return
    if kind == "esp":
        # ESP-in-UDP: the capture cannot tell whose without the SPIs; the first after a call's
        # answer is that call's first protected packet, as good as a capture alone can say
        for tl in timelines.values():
            if tl.answer_sdp is not None and tl.first_esp is None and t >= tl.answer_sdp and tl.ended is None:
                tl.first_esp = t
        return
    cid = flow_calls.get((pkt.src, pkt.sport, pkt.dst, pkt.dport))
    tl = timelines.get(cid) if cid else None
    if tl is not None and tl.answer_sdp is not None and t >= tl.answer_sdp:
        tl.first_rtp = tl.first_rtp or t
        if tl.first_esp is None:
            tl.clear_after_answer += 1


def _source(src) -> str:
    if not src:
        return ""
    host = f"[{src[0]}]" if ":" in src[0] else src[0]
    return f"{host}:{src[1]}"


def replay(path: str, sip_ports: set[int]) -> dict:
    """Every dialog of a capture with its state, timestamps, flows and events, and what was rejected."""
    return _report(path, _read(path, sip_ports))


@dataclass
class _Pass:
    """What one pass over a capture gathered, in capture order, for the report built after it."""

    tracker: DialogTracker
    calls: dict[str, dict] = field(default_factory=dict)  # call_id -> its report entry, from its INVITE on
    events: list = field(default_factory=list)  # the tracker's, and ("invite", call_id, time, source) tuples
    timelines: dict[str, CallTimeline] = field(default_factory=dict)
    ike: list[IkePacket] = field(default_factory=list)
    messages: int = 0


def _call(calls: dict[str, dict], cid: str) -> dict:
    return calls.setdefault(cid, {
        "call_id": cid, "state": "trying", "started": None, "early": None, "confirmed": None,
        "ended": None, "end_reason": None, "to_tag": None, "offered": [], "flows": [], "notes": [],
        "retransmissions": 0, "relayed": 0,
        "events": [],
    })


def _read(path: str, sip_ports: set[int]) -> _Pass:
    """Every packet of the capture through a dialog tracker (SIP) and into the calls' timelines (the rest)."""
    seen = _Pass(DialogTracker(media_timeout=None, report_messages=True))
    tracker, events = seen.tracker, seen.events
    extractor = SipExtractor(sip_ports)
    last = 0.0
    flow_calls: dict[tuple, str] = {}  # (src, sport, dst, dport) of every negotiated flow -> call
    for t, data in ip_packets(path):
        last = t
        pkt = decode_ip(data)
        if pkt is None:
            continue
        kind = classify(pkt, extractor.is_sip(pkt))
        if kind != "sip":
            if kind in ("ike", "esp", "media"):
                _media(pkt, kind, t, seen.timelines, flow_calls, seen.ike)
            continue
        for item, stream in extractor.feed(pkt):
            src = (pkt.src, pkt.sport)
            if isinstance(item, SipParseError):
                events.append(MessageRejected("", t, str(item), src))
                continue
            seen.messages += 1
            before = len(tracker.dialogs)
            for ev in tracker.receive(item, t, src, stream=stream):
                update_timeline(seen.timelines, ev)
                if isinstance(ev, (MediaNegotiated, MediaChanged)):
                    for f in ev.flows if isinstance(ev, MediaNegotiated) else ev.new:
                        a, b = f.offerer, f.answerer
                        flow_calls[(a.address, a.port, b.address, b.port)] = ev.call_id
                        flow_calls[(b.address, b.port, a.address, a.port)] = ev.call_id
                if isinstance(ev, MediaOffered):
                    # what an unanswered, cancelled or rejected call would have keyed on the offerer's side
                    _call(seen.calls, ev.call_id)["offered"] = [str(ep) for ep in ev.endpoints]
                elif not isinstance(ev, SipSeen):
                    events.append(ev)
            if len(tracker.dialogs) > before:  # a new INVITE: the call starts here
                cid = next(reversed(tracker.dialogs))
                _call(seen.calls, cid)["started"] = t
                events.append(("invite", cid, t, src))
    events.extend(tracker.handle_timer(last))
    return seen


def _report(path: str, seen: _Pass) -> dict:
    """The calls and the rejected messages of one pass, each call with its events and timeline."""
    calls, rejected = seen.calls, []
    for ev in seen.events:
        if isinstance(ev, tuple):
            _, cid, t, src = ev
            _call(calls, cid)["events"].append({"time": t, "type": "Invite", "detail": f"from {_source(src)}",
                                                "offered": _call(calls, cid)["offered"]})
        elif isinstance(ev, MessageRejected):
            rejected.append({"time": ev.time, "source": _source(ev.source), "call_id": ev.call_id or None,
                             "reason": ev.reason})
        else:
            c = _call(calls, ev.call_id)
            c["events"].append(_record(c, ev))
    for cid, d in seen.tracker.dialogs.items():
        if cid in calls:
            calls[cid]["session_expires"] = d.session_expires
    for cid, tl in seen.timelines.items():
        if cid in calls:
            end = tl.first_esp if tl.first_esp is not None else tl.answer_sdp
            if tl.invite is not None and end is not None:
                tl.ike = [p for p in seen.ike if tl.invite <= p.time <= end]
            calls[cid]["timeline"] = tl.to_json()
    return {"file": path, "messages": seen.messages, "calls": list(calls.values()), "rejected": rejected}


def _record(c: dict, ev) -> dict:
    """One dialog event as a line of its call's report; the call's summary (state, flows, ...) follows it."""
    rec = {"time": ev.time, "type": type(ev).__name__}
    if isinstance(ev, DialogEarly):
        c["state"], rec["detail"] = "early", f"{ev.status} to-tag {ev.to_tag}"
        c["early"] = c["early"] or ev.time
    elif isinstance(ev, DialogConfirmed):
        c["state"], c["confirmed"], c["to_tag"] = "confirmed", ev.time, ev.to_tag
        rec["detail"] = f"{ev.trigger} to-tag {ev.to_tag}"
    elif isinstance(ev, (MediaNegotiated, MediaChanged)):
        new = ev.flows if isinstance(ev, MediaNegotiated) else ev.new
        c["flows"], c["notes"] = [f.to_json() for f in new], list(ev.notes)
        rec["detail"] = f"{ev.trigger} from {_source(ev.answer_source)}: {len(new)} flows"
        rec["flows"] = c["flows"]
        if isinstance(ev, MediaChanged):
            rec["old_flows"] = [f.to_json() for f in ev.old]
    elif isinstance(ev, DialogTerminated):
        c["state"], c["end_reason"], c["ended"] = "terminated", ev.reason, ev.time
        rec["detail"] = ev.reason + (f" ({ev.trigger})" if ev.trigger else "")
    elif isinstance(ev, Retransmission):
        c["retransmissions"] += 1
        rec["detail"] = ev.trigger
    elif isinstance(ev, Relayed):
        c["relayed"] += 1
        rec["detail"] = ev.trigger
    elif isinstance(ev, MediaRenegotiated):
        c["notes"] = list(ev.notes)
        rec["detail"] = f"{ev.trigger}: flows unchanged"
    elif isinstance(ev, ExtraDialog):
        rec["detail"] = f"{ev.trigger} to-tag {ev.to_tag} (extra fork, not keyed)"
    return rec


def _describe(t: float, action: Action) -> dict:
    """An action as a report line: its kind and fields, never key material (pre-keyed keys)."""
    if isinstance(action, Log):
        return {"time": t, "event": action.event, **action.fields}
    rec: dict = {"time": t, "action": type(action).__name__}
    for f in fields(action):  # type: ignore[arg-type]
        if f.name == "keys":
            rec["spis"] = [f"{k.spi:08x}" for k in action.keys]
            continue
        v = getattr(action, f.name)
        rec[f.name] = [str(x) for x in v] if f.name == "pairs" else (str(v) if f.name == "rule" else v)
    return rec


def decisions(path: str, cfg: ControllerConfig, interface: str = "") -> dict[str, list[dict]]:
    """What a gateway with this configuration would have done on this capture, call by call and
    when: the same core as the live controller, every action recorded, charon played by a stand-in
    that says yes (so that removals, re-keys and teardown delays follow, at capture times)."""
    cfg = replace(cfg, media_timeout=None, dry_run=True)  # media is judged from the capture, not timed out
    core = GatewayCore(cfg, "offline")
    charon = SimulatedCharon({p.name: p.conn for p in cfg.peers})
    iface = interface or (cfg.interfaces[0] if cfg.interfaces else "")
    per_call: dict[str, list[dict]] = {}

    def run(now: float, actions: list[Action]) -> None:
        todo = deque(actions)
        while todo:
            a = todo.popleft()
            rec = _describe(now, a)
            call = rec.get("call") or rec.get("call_id")
            if call:
                per_call.setdefault(call, []).append(rec)
            for inp in charon.outcomes(a, now):
                todo.extend(core.receive(now, inp))

    last = None
    for t, data in ip_packets(path):
        if last is None:
            run(t, core.start(t))
        last = t
        while (nt := core.next_timer()) is not None and nt <= t:
            run(nt, core.handle_timer(nt))
        run(t, core.receive_packet(t, data, iface))
    if last is not None:  # what was still due: teardown delays, confirmations
        end = last + cfg.teardown_delay + 5.0
        while (nt := core.next_timer()) is not None and nt <= end:
            run(nt, core.handle_timer(nt))
    return per_call
