"""Offline replay of a capture (pcap or pcapng) through the same sans-I/O core."""

from __future__ import annotations

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader

from .packet import SipExtractor, decode_ip
from .sip.dialog import (
    DialogConfirmed,
    DialogEarly,
    DialogTerminated,
    DialogTracker,
    ExtraDialog,
    MediaChanged,
    MediaNegotiated,
    MediaRenegotiated,
    MessageRejected,
    Relayed,
    Retransmission,
)
from .sip.message import SipParseError


def ip_packets(path: str):
    """(timestamp, raw IP bytes) for every IPv4/IPv6 packet in a pcap/pcapng file."""
    with PcapReader(path) as reader:
        for pkt in reader:
            layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if layer is not None:
                yield float(pkt.time), bytes(layer)


def _source(src) -> str:
    if not src:
        return ""
    host = f"[{src[0]}]" if ":" in src[0] else src[0]
    return f"{host}:{src[1]}"


def replay(path: str, sip_ports: set[int]) -> dict:
    """Every dialog of a capture with its state, timestamps, flows and events, and what was rejected."""
    tracker = DialogTracker(media_timeout=None)
    extractor = SipExtractor(sip_ports)
    calls: dict[str, dict] = {}
    rejected = []
    messages = 0

    def call(cid: str) -> dict:
        return calls.setdefault(cid, {
            "call_id": cid, "state": "trying", "started": None, "early": None, "confirmed": None,
            "ended": None, "end_reason": None, "to_tag": None, "flows": [], "notes": [],
            "retransmissions": 0, "relayed": 0,
            "events": [],
        })

    events = []
    last = 0.0
    for t, data in ip_packets(path):
        last = t
        pkt = decode_ip(data)
        if pkt is None:
            continue
        for item, stream in extractor.feed(pkt):
            src = (pkt.src, pkt.sport)
            if isinstance(item, SipParseError):
                events.append(MessageRejected("", t, str(item), src))
                continue
            messages += 1
            before = len(tracker.dialogs)
            events.extend(tracker.receive(item, t, src, stream=stream))
            if len(tracker.dialogs) > before:  # a new INVITE: the call starts here
                cid = next(reversed(tracker.dialogs))
                call(cid)["started"] = t
                events.append(("invite", cid, t, src))
    events.extend(tracker.handle_timer(last))
    for ev in events:
        if isinstance(ev, tuple):
            _, cid, t, src = ev
            call(cid)["events"].append({"time": t, "type": "Invite", "detail": f"from {_source(src)}"})
            continue
        if isinstance(ev, MessageRejected):
            rejected.append({"time": ev.time, "source": _source(ev.source), "call_id": ev.call_id or None,
                             "reason": ev.reason})
            continue
        c = call(ev.call_id)
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
        c["events"].append(rec)
    for cid, d in tracker.dialogs.items():
        if cid in calls:
            calls[cid]["session_expires"] = d.session_expires
    return {"file": path, "messages": messages, "calls": list(calls.values()), "rejected": rejected}
