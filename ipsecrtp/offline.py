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
    MediaChanged,
    MediaNegotiated,
    MessageRejected,
)
from .sip.message import SipParseError


def ip_packets(path: str):
    """(timestamp, raw IP bytes) for every IPv4/IPv6 packet in a pcap/pcapng file."""
    with PcapReader(path) as reader:
        for pkt in reader:
            layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if layer is not None:
                yield float(pkt.time), bytes(layer)


def replay(path: str, sip_ports: set[int]) -> dict:
    tracker = DialogTracker(media_timeout=None)
    extractor = SipExtractor(sip_ports)
    calls: dict[str, dict] = {}
    rejected = []

    def call(cid: str) -> dict:
        return calls.setdefault(cid, {"call_id": cid, "state": "trying", "flows": [], "events": [],
                                      "end_reason": None})

    events = []
    last = 0.0
    for t, data in ip_packets(path):
        last = t
        pkt = decode_ip(data)
        if pkt is None:
            continue
        for item, stream in extractor.feed(pkt):
            if isinstance(item, SipParseError):
                rejected.append({"time": t, "source": f"{pkt.src}:{pkt.sport}", "reason": str(item)})
                continue
            events.extend(tracker.receive(item, t, (pkt.src, pkt.sport), stream=stream))
    events.extend(tracker.handle_timer(last))
    for ev in events:
        if isinstance(ev, MessageRejected):
            rejected.append({"time": ev.time, "source": f"{ev.source[0]}:{ev.source[1]}" if ev.source else "",
                             "reason": ev.reason})
            continue
        c = call(ev.call_id)
        rec = {"time": ev.time, "type": type(ev).__name__}
        if isinstance(ev, DialogEarly):
            c["state"], rec["detail"] = "early", str(ev.status)
        elif isinstance(ev, DialogConfirmed):
            c["state"] = "confirmed"
        elif isinstance(ev, MediaNegotiated):
            c["flows"] = [f.to_json() for f in ev.flows]
            rec["detail"] = ev.trigger
        elif isinstance(ev, MediaChanged):
            c["flows"] = [f.to_json() for f in ev.new]
            rec["detail"] = ev.trigger
        elif isinstance(ev, DialogTerminated):
            c["state"], c["end_reason"], rec["detail"] = "terminated", ev.reason, ev.reason
        c["events"].append(rec)
    return {"calls": list(calls.values()), "rejected": rejected}
