"""The controller: capture -> dialog tracker -> keying decisions -> charon. All I/O lives here.

Threads, each with its own VICI session (VICI has no request ids):
- main: capture, SIP tracking, timers, decisions;
- keying worker: load-conn / initiate / terminate, in order, so that one call's teardown
  never overtakes its setup and one IKE exchange at a time runs per IKE_SA;
- listener: charon's child-updown events, which drive the per-flow policy routing that
  kernel-libipsec needs, on both the initiating and the responding gateway.

Initiator rule (deterministic, both gateways agree without talking): the gateway whose
local media prefixes hold the *answerer's* media address initiates the call's CHILD_SA.
That gateway sees (or sends) the answer first, so keying starts as early as possible.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import queue
import select
import struct
import threading
import time
from dataclasses import dataclass, field

from .capture import Capture
from .config import ControllerConfig
from .kernel.xfrm import XfrmSocket, probe_esp
from .keying import prekeyed
from .keying.dnat import DnatError
from .keying.dnat import add as dnat_add
from .keying.dnat import delete as dnat_delete
from .keying.dnat import drop_table as dnat_drop_table
from .keying.routing import FlowRule, PolicyRouting, rules_for_child
from .keying.strongswan import Charon, KeyingError, PeerConfig, listen, ts
from .log import DecisionLog
from .media import Endpoint, Flow, MediaPolicy
from .nat import (
    NatFinding,
    ike_encapsulation,
    ike_findings,
    media_finding,
    nated_media,
    sdp_findings,
    sdp_leftover_findings,
    sip_findings,
)
from .packet import UDP, SipExtractor, decode_ip
from .sip.dialog import (
    DialogConfirmed,
    DialogEarly,
    DialogTerminated,
    DialogTracker,
    Event,
    MediaChanged,
    MediaNegotiated,
    MediaOffered,
    MessageRejected,
    SipSeen,
)
from .sip.message import SipParseError
from .sip.sdp import SdpError, parse_sdp
from .timing import BUDGETS, CallTimeline, IkePacket, parse_ike, update_timeline, verdict

NAT_T_PORT = 4500
IKE_PORT = 500


class ControllerError(RuntimeError):
    """Start-up failure; ``str(err)`` is the one line printed before exiting non-zero."""


@dataclass
class CallKeying:
    call_id: str
    peer: PeerConfig
    role: str  # initiator or responder
    flows: tuple[Flow, ...]
    rules: frozenset[FlowRule]
    child: str | None = None
    generation: int = 0
    uniqueid: str | None = None
    answered_at: float = 0.0
    terminated: bool = False
    sa_up_at: float | None = None
    speculative: bool = False  # strategy c: keyed from the offer, before any answer
    spec: CallKeying | None = None  # the speculative SA this exact one replaces once up
    own_conn: bool = False  # strategy a: the child has a connection (and IKE_SA) of its own
    done: threading.Event = field(default_factory=threading.Event)  # its install job has finished
    dnat: str | None = None  # the nftables chain translating a NAT address back (keying/dnat.py)
    prekeyed: tuple | None = None  # (keys, policies) installed directly with xfrm (strategy pre-keyed)
    permit: bool = False  # responder: a child config of its own for the call (a port outside the template's)


def child_name(call_id: str, generation: int) -> str:
    return f"call-{hashlib.sha256(call_id.encode()).hexdigest()[:12]}-{generation}"


@dataclass
class _Shared:
    """State the listener thread updates and the main thread reads (dict ops are atomic)."""

    spi_calls: dict[int, str] = field(default_factory=dict)
    rule_calls: dict[FlowRule, str] = field(default_factory=dict)
    routed: set[FlowRule] = field(default_factory=set)
    nat_public: dict[str, str] = field(default_factory=dict)  # a peer's NAT address as IKE sees it -> peer
    # where a call's media should come from, for latching: (remote address, port) -> (call, SDP
    # endpoint, keyed endpoint) of the local side's flow to it
    latch: dict[tuple[str, int], tuple[str, Endpoint, Endpoint]] = field(default_factory=dict)
    # the far side of it: (local address, port) -> (call, keyed remote endpoint) where the remote
    # endpoint is a NAT's address taken for a hidden one (its port is the SDP's, a guess)
    far_latch: dict[tuple[str, int], tuple[str, Endpoint]] = field(default_factory=dict)


class Controller:
    def __init__(self, cfg: ControllerConfig, log: DecisionLog) -> None:
        self.cfg, self.log = cfg, log
        self.tracker = DialogTracker(media_timeout=cfg.media_timeout, report_messages=True)
        self.extractor = SipExtractor(set(cfg.sip_ports))
        self.policies = [(p, MediaPolicy.build(list(p.local_media), list(p.remote_media), p.rtp_ports))
                         for p in cfg.peers]
        self.calls: dict[str, CallKeying] = {}
        self.children: dict[str, dict[str, tuple[list[str], list[str]]]] = {p.name: {} for p in cfg.peers}
        self.jobs: queue.Queue = queue.Queue()
        # removals have their own worker: a DELETE costs a round trip, and the next call's set-up
        # must not wait behind the last call's teardown in our queue (charon may still serialise
        # the two exchanges on one IKE_SA; that wait is real and shows in the timeline)
        self.removal_jobs: queue.Queue = queue.Queue()
        self._conf_lock = threading.Lock()  # self.children and the load-conn that mirrors it
        self.stop = threading.Event()
        self.shared = _Shared()
        self.routing: PolicyRouting | None = None
        self.backend = "unknown"
        self.capture: Capture | None = None
        self.charon: Charon | None = None
        self._threads: list[threading.Thread] = []
        self._loaded: list[PeerConfig] = []  # peers this instance loaded into charon, and so unloads
        self.removals: list[tuple[float, CallKeying, str]] = []  # (due, call, reason)
        self._dnat_used = False
        self.pending_dnat: dict[str, str] = {}  # call -> chain made at the offer, not yet owned by a CallKeying
        # per-call timelines; the keying and event threads only set single attributes on them
        self.timelines: dict[str, CallTimeline] = {}
        self.ike_seen: collections.deque[IkePacket] = collections.deque(maxlen=4096)
        self.budget = BUDGETS[cfg.budget]
        # addresses that count as private for NAT tests beyond RFC 1918/6598 (a lab's inside range)
        self.private = tuple(ipaddress.ip_network(p) for p in cfg.nat_private)
        self.media_nets = tuple(ipaddress.ip_network(n) for p in cfg.peers for n in (*p.local_media, *p.remote_media))
        # per call: SDP addresses a NAT in front of a phone hid -> the NAT's address (nathelper's fix)
        self.nated: dict[str, dict[str, str]] = {}
        self.latched: set[tuple[str, str, int]] = set()  # (call, address, port) already reported
        # per call: a NAT's endpoint keyed with the SDP's port -> the port its media really came from
        self.relatched: dict[str, dict[Endpoint, Endpoint]] = {}
        self.relatch_due: dict[str, float] = {}  # call -> when to re-key it with what latching saw
        self.sdp_flows: dict[str, tuple[Flow, ...]] = {}  # call -> flows as the SDP said, before any NAT fix
        # the last UDP packet from the phones' side to each destination (10 s), for flows keyed after
        # their first packet (an RTCP sent at answer time, before the answer is processed, comes again
        # seconds later)
        self.lan_last: collections.OrderedDict[tuple[str, int], tuple[str, int, float]] = collections.OrderedDict()
        self.media_socks: set = set()

    # -- start / stop ------------------------------------------------------------------------

    def start(self) -> None:
        if self.cfg.dry_run:
            # observe only: SIP, decisions and timelines, nothing asked of charon (a baseline, or a
            # check of what would be keyed before turning keying on)
            self._open_capture()
            self.backend = "none (dry run)"
            self.log("started", interfaces=self.cfg.interfaces, sip_ports=sorted(self.cfg.sip_ports),
                     backend=self.backend, dry_run=True)
            return
        try:
            self.charon = Charon(self.cfg.vici)
            version = self.charon.version()
            self.backend = self.charon.backend()
        except KeyingError as exc:
            raise ControllerError(str(exc)) from None
        probe = probe_esp()
        self.log("backend", kernel_esp=probe.supported, probe=probe.detail, charon_backend=self.backend,
                 charon=f"{version.get('daemon')} {version.get('version')}")
        if self.cfg.backend != "auto" and self.cfg.backend != self.backend:
            raise ControllerError(f"configured backend {self.cfg.backend} but charon runs {self.backend}")
        if self.backend == "kernel-netlink" and not probe.supported:
            raise ControllerError("charon uses kernel-netlink but this kernel has no ESP: "
                                  "load charon's kernel-libipsec plugin instead")
        if self.backend == "unknown":
            raise ControllerError("charon has neither kernel-netlink nor kernel-libipsec loaded")
        if not probe.supported and any(p.strategy == "pre-keyed" for p in self.cfg.peers):
            raise ControllerError("strategy pre-keyed installs ESP SAs in the kernel, which has no ESP here: "
                                  "use an IKE strategy (a, b, c) or a kernel with ESP")
        self._open_capture()
        try:
            for peer in self.cfg.peers:
                self.charon.load_secret(peer)
                self.charon.load_peer(peer, {})
                self._loaded.append(peer)
                self.log("peer-loaded", peer=peer.name, conn=peer.conn, ike_local=peer.ike_local,
                         ike_remote=peer.ike_remote, remote_id=peer.remote_id, local_media=peer.local_media,
                         remote_media=peer.remote_media, rtp_ports=peer.rtp_ports)
        except KeyingError as exc:
            self.capture.close()
            raise ControllerError(str(exc)) from None
        for peer in self.cfg.peers:
            # b and c reuse one IKE_SA per peer: set it up now, not on the first call's path. One side
            # (the lower address) initiates, so that the two gateways do not build two.
            if peer.strategy in ("child-per-call", "speculative") and ipaddress.ip_address(peer.ike_local) < \
                    ipaddress.ip_address(peer.remote_id):
                self.jobs.put(("ike", peer))
        if self.backend == "kernel-libipsec":
            self.routing = PolicyRouting()
            removed = self.routing.remove_blanket()
            self.log("routing-narrowed", removed_blanket_rules=removed, table=self.routing.table)
        ready = threading.Event()
        self._threads = [threading.Thread(target=self._worker, name="keying", daemon=True),
                         threading.Thread(target=self._worker, args=(self.removal_jobs,), name="unkeying",
                                          daemon=True),
                         threading.Thread(target=self._listener, args=(ready,), name="events", daemon=True)]
        for t in self._threads:
            t.start()
        ready.wait(5)
        self.log("started", interfaces=self.cfg.interfaces, sip_ports=sorted(self.cfg.sip_ports),
                 backend=self.backend)

    def _open_capture(self) -> None:
        try:
            self.capture = Capture([*self.cfg.interfaces, *self.cfg.media_interfaces])
        except Exception as exc:  # CaptureError; its message is the one line
            raise ControllerError(str(exc)) from None
        self.media_socks = set(self.capture.fileno_list()[len(self.cfg.interfaces):])

    def shutdown(self) -> None:
        self.stop.set()
        if self.timelines:
            self._finish_timelines(time.time(), force=True)
        self.jobs.put(None)
        self.removal_jobs.put(None)
        for t in self._threads:
            t.join(timeout=15)
        if self.charon is not None:
            for _due, st, reason in self.removals:
                self._remove(st, reason)
            self.removals.clear()
            for st in list(self.calls.values()):
                if st.role == "initiator" and (st.uniqueid or st.prekeyed) and not st.terminated:
                    self._remove(st, "controller-stopped")
            for peer in self._loaded:
                try:
                    for child in self.charon.child_sas(peer.conn):
                        self.charon.terminate_child(child["uniqueid"])
                    self.charon.unload_peer(peer)
                except KeyingError:
                    pass
            self.charon.close()
        if self._dnat_used:
            dnat_drop_table()  # this process made it: its per-call chains go with it
        if self.routing is not None:
            for rule in list(self.shared.routed):
                self.routing.delete(rule)
            self.shared.routed.clear()
            self.routing.close()
        if self.capture is not None:
            self.capture.close()
        self.log("stopped")

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> None:
        assert self.capture is not None
        socks = self.capture.fileno_list()
        while not self.stop.is_set():
            timers = [t for t in [self.tracker.next_timer(), *(r[0] for r in self.removals),
                                  *self.relatch_due.values()] if t is not None]
            timeout = min([0.5, *(max(0.0, t - time.time()) for t in timers)])
            readable, _, _ = select.select(socks, [], [], timeout)
            for s in readable:
                media_only = s in self.media_socks
                for t, data in self.capture.read(s):
                    self.on_packet(t, data, media_only)
            now = time.time()
            self.handle_due(now)
            nt = self.tracker.next_timer()
            if nt is not None and nt <= now:
                for ev in self.tracker.handle_timer(now):
                    self.on_event(ev)
            if self.timelines:
                self._finish_timelines(now)

    def handle_due(self, now: float) -> None:
        """SA removals and latching re-keys whose time has come."""
        for item in [r for r in self.removals if r[0] <= now]:
            self.removals.remove(item)
            self._submit(("remove", item[1], item[2]))
        for call in [c for c, due in self.relatch_due.items() if due <= now]:
            del self.relatch_due[call]
            if call in self.calls and call in self.sdp_flows:
                self.rekey(call, self.sdp_flows[call], now, "media latching")

    def on_packet(self, t: float, data: bytes, media_only: bool = False) -> None:
        pkt = decode_ip(data)
        if pkt is None:
            return
        if media_only:
            # the phones' side: what their media really comes from (SIP and IKE are taken on the WAN,
            # once; this side's RTP is in clear by design, so it does not count in the timeline)
            if pkt.proto == UDP:
                self.lan_last[(pkt.dst, pkt.dport)] = (pkt.src, pkt.sport, t)
                self.lan_last.move_to_end((pkt.dst, pkt.dport))
                while len(self.lan_last) > 4096 or next(iter(self.lan_last.values()))[2] < t - 10:
                    self.lan_last.popitem(last=False)
                self._latch(pkt.src, pkt.sport, pkt.dst, pkt.dport, t)
            return
        if self.extractor.is_sip(pkt):
            for item, stream in self.extractor.feed(pkt):
                if isinstance(item, SipParseError):
                    self.log("sip-rejected", reason=str(item), source=f"{pkt.src}:{pkt.sport}")
                    continue
                for ev in self.tracker.receive(item, t, (pkt.src, pkt.sport), stream=stream,
                                               destination=(pkt.dst, pkt.dport)):
                    self.on_event(ev)
            return
        if pkt.proto != UDP:
            return
        call = None
        esp = False
        if IKE_PORT in (pkt.sport, pkt.dport) or (NAT_T_PORT in (pkt.sport, pkt.dport) and
                                                  pkt.payload[:4] == b"\0\0\0\0"):
            ike = parse_ike(pkt.payload, NAT_T_PORT if NAT_T_PORT in (pkt.sport, pkt.dport) else IKE_PORT, t,
                            pkt.src)
            if ike is not None:
                self.ike_seen.append(ike)
            return
        if NAT_T_PORT in (pkt.sport, pkt.dport) and len(pkt.payload) >= 8:
            spi = struct.unpack_from("!I", pkt.payload)[0]
            call, esp = self.shared.spi_calls.get(spi), True
        else:
            call = self.shared.rule_calls.get(FlowRule(pkt.src, pkt.dst, pkt.sport, pkt.dport)) or \
                self.shared.rule_calls.get(FlowRule(pkt.dst, pkt.src, pkt.dport, pkt.sport))
            if call is None and self.shared.far_latch:
                self._latch_far(pkt.src, pkt.sport, pkt.dst, pkt.dport, t)
        if call is not None:
            self.tracker.media_activity(call, t)
            tl = self.timelines.get(call)
            if tl is not None and tl.answer_sdp is not None:
                if esp:
                    if tl.first_esp is None:
                        tl.first_esp = t
                else:
                    if tl.first_rtp is None:
                        tl.first_rtp = t
                    if tl.first_esp is None:  # until the first protected packet (the gap)
                        tl.clear_after_answer += 1

    def _latch(self, src: str, sport: int, dst: str, dport: int, t: float) -> None:
        """The first RTP of a keyed flow from the local side: does it come from where it was keyed?"""
        entry = self.shared.latch.get((dst, dport))
        if entry is None:
            return
        call, sdp_ep, keyed = entry
        if (call, keyed.address, keyed.port) in self.latched:
            return
        self.latched.add((call, keyed.address, keyed.port))
        self.tracker.media_activity(call, t)
        finding = media_finding(sdp_ep.address, sdp_ep.port, src, sport)
        consistent = ipaddress.ip_address(src) == ipaddress.ip_address(keyed.address) and sport == keyed.port
        extra = {} if consistent else self._relatch(call, keyed, Endpoint(src, sport), sdp_ep, t)
        self.log("nat-media", call=call, t=t, sdp=str(sdp_ep), keyed=str(keyed), seen=f"{src}:{sport}",
                 nat=finding is not None, consistent=consistent,
                 findings=[finding.to_json()] if finding else [], **extra)

    def _latch_far(self, src: str, sport: int, dst: str, dport: int, t: float) -> None:
        """Clear media on the WAN to one of our keyed endpoints, from the NAT address the far phone
        was keyed at but another port: the far NAT changed the port (this side's half of latching)."""
        entry = self.shared.far_latch.get((dst, dport))
        if entry is None:
            return
        call, keyed = entry
        if src != keyed.address or sport == keyed.port or (call, keyed.address, keyed.port) in self.latched:
            return
        self.latched.add((call, keyed.address, keyed.port))
        extra = self._relatch(call, keyed, Endpoint(src, sport), keyed, t)
        self.log("nat-media", call=call, t=t, sdp=str(keyed), keyed=str(keyed), seen=f"{src}:{sport}", nat=True,
                 consistent=False, far=True,
                 findings=[NatFinding("media-latching", "media",
                                      f"keyed {keyed} (a NAT's address, the SDP's port), RTP came from "
                                      f"{src}:{sport}").to_json()], **extra)

    def _relatch(self, call: str, keyed: Endpoint, seen: Endpoint, sdp_ep: Endpoint, t: float) -> dict:
        """Re-key a flow keyed at a NAT's address with the port its media really comes from; a flow
        from another address entirely is not re-keyed (that is not a port a NAT chose)."""
        reason = (f"RTP to the call comes from {seen}, the CHILD_SA holds {keyed}: a NAT changed the port, the "
                  "flow cannot be keyed from the SDP consistently")
        hidden = self.nated.get(call, {})
        if not self.cfg.nat_translate or seen.address != keyed.address or \
                (sdp_ep.address not in hidden and keyed.address not in hidden.values()):
            return {"reason": reason + " (it stays outside the SA)"}
        self.relatched.setdefault(call, {})[keyed] = seen
        # one re-key for RTP and RTCP, whose first packets come close together; the initiator waits
        # longer, so that the responder's child config for the new ports is there when asked
        st = self.calls.get(call)
        self.relatch_due.setdefault(call, t + (0.5 if st is not None and st.role == "initiator" else 0.1))
        return {"reason": reason + ": re-keying with the port seen (latching)", "relatched": str(seen)}

    def _timeline(self, ev: Event) -> None:
        update_timeline(self.timelines, ev, self.cfg.name)
        if isinstance(ev, SipSeen):
            self._sip_nat(ev)

    def _finish_timelines(self, now: float, force: bool = False) -> None:
        """Log each ended call's timeline once its SA is gone (or never came)."""
        for cid, tl in list(self.timelines.items()):
            if tl.ended is None and not force:
                continue
            settled = (tl.sa_up is None or tl.sa_down is not None) and (tl.bye is None or tl.bye_response is not None)
            late = tl.ended is not None and now > tl.ended + self.cfg.teardown_delay + 10.0
            if not (settled or late or force):
                continue
            lo = tl.keying_started if tl.keying_started is not None else tl.answer_sdp
            if lo is not None and tl.sa_up is not None:
                tl.ike = [p for p in self.ike_seen if lo - 0.001 <= p.time <= tl.sa_up + 0.001]
            d = tl.to_json()
            d["verdict"] = verdict(d["metrics"], self.budget)
            self.log("timeline", call=cid, **{k: v for k, v in d.items() if k != "call_id"})
            del self.timelines[cid]

    def on_event(self, ev: Event) -> None:
        self._timeline(ev)
        if isinstance(ev, MessageRejected):
            self.log("sip-rejected", call=ev.call_id or None, reason=ev.reason,
                     source=f"{ev.source[0]}:{ev.source[1]}" if ev.source else None)
        elif isinstance(ev, DialogEarly):
            self.log("dialog-early", call=ev.call_id, status=ev.status, t=ev.time)
        elif isinstance(ev, DialogConfirmed):
            self.log("dialog-confirmed", call=ev.call_id, t=ev.time)
        elif isinstance(ev, MediaOffered):
            self._offer_dnat(ev)
            self.speculate(ev)
        elif isinstance(ev, MediaNegotiated):
            self.key(ev.call_id, ev.flows, ev.time, ev.trigger)
        elif isinstance(ev, MediaChanged):
            self.rekey(ev.call_id, ev.new, ev.time, ev.trigger)
        elif isinstance(ev, DialogTerminated):
            self.unkey(ev.call_id, ev.reason, ev.time)

    # -- decisions ---------------------------------------------------------------------------

    def _authorise(self, call_id: str, flows: tuple[Flow, ...], t: float, trigger: str):
        if not flows:
            self.log("no-flows", call=call_id, t=t, trigger=trigger,
                     reason="every stream rejected (port 0) or on hold (0.0.0.0)")
            return None
        reasons = []
        for peer, pol in self.policies:
            problems = [r for r in (pol.check(f) for f in flows) if r]
            if not problems:
                return peer, pol
            reasons.append(f"{peer.name}: {problems[0]}")
        natted = sorted({ep.address for f in flows for ep in f.endpoints() if ep.address in self.shared.nat_public})
        if natted:
            reasons.insert(0, f"{', '.join(natted)} is where peer {self.shared.nat_public[natted[0]]} is seen through "
                              "a NAT: a SIP ALG rewrote the SDP to the NAT's address, while tunnel selectors need the "
                              "peer's own media address (turn the ALG off, or let the controller key without it)")
        nated = self.nated.get(call_id, {})
        hidden = sorted({ep.address for f in flows for ep in f.endpoints() if ep.address in nated})
        if hidden:
            reasons.insert(0, f"{', '.join(hidden)} is a phone's private address behind a NAT (its signalling came "
                              f"from {nated[hidden[0]]}) and no ALG rewrote the SDP: the flow on the "
                              "wire uses the NAT's address (nat_translate = false: not keyed as seen)")
        self.log("refused", call=call_id, t=t, trigger=trigger, flows=[f.to_json() for f in flows],
                 reason="; ".join(reasons))
        return None

    def _offer_dnat(self, ev: MediaOffered) -> None:
        """An offer naming a peer's NAT address (ALG): translate before the answer, so that the phone's
        first RTP already gets the translation (conntrack decides NAT on a flow's first packet)."""
        if not (self.shared.nat_public or self.nated.get(ev.call_id)) or not self.cfg.nat_translate or \
                self.cfg.dry_run:
            return
        flows = tuple(Flow(0, "rtp", ep, ep) for ep in ev.endpoints)
        _, rules = self._translate(ev.call_id, flows)
        if not rules or ev.call_id in self.pending_dnat:
            return
        tag = child_name(ev.call_id, 0)[5:]
        try:
            dnat_add(tag, sorted(set(rules)))
        except DnatError as exc:
            self.log("nat-translate-failed", call=ev.call_id, reason=str(exc))
            return
        self._dnat_used = True
        self.pending_dnat[ev.call_id] = tag
        self.log("nat-translated", call=ev.call_id, rules=[f"{a}:{p} -> {b}:{q}" for a, p, b, q in sorted(set(rules))],
                 reason=self._translate_reason(ev.call_id))

    def speculate(self, ev: MediaOffered) -> None:
        """Strategy c: key the offerer's endpoints to the peer's media range before any answer."""
        eps = ev.endpoints
        if not eps or ev.call_id in self.calls:
            return
        for peer, pol in self.policies:
            if peer.strategy != "speculative":
                continue
            sides = {pol.side(ep) for ep in eps}
            in_range = all(pol.port_min <= ep.port <= pol.port_max for ep in eps)
            if not in_range or len(sides) != 1 or None in sides:
                continue
            lo, hi = peer.rtp_ports
            ranged_remote = [f"{p}[udp/{lo}-{hi}]" for p in peer.remote_media]
            if sides == {"local"}:
                dest = ev.destination[0] if ev.destination else None
                if dest is not None and dest != peer.ike_remote and pol.side(Endpoint(dest, lo)) != "remote":
                    continue  # this INVITE goes elsewhere
                local_ts, remote_ts, role = sorted({ts(ep) for ep in eps}), ranged_remote, "initiator"
            else:
                local_ts = [f"{p}[udp/{lo}-{hi}]" for p in peer.local_media]
                remote_ts, role = sorted({ts(ep) for ep in eps}), "responder"
            rules = frozenset(rules_for_child(local_ts, remote_ts))
            st = CallKeying(ev.call_id, peer, role, (), rules, answered_at=ev.time, speculative=True)
            self.calls[ev.call_id] = st
            for r in rules:
                self.shared.rule_calls[r] = ev.call_id
            tl = self.timelines.get(ev.call_id)
            if tl is not None:
                tl.role, tl.strategy = role, peer.strategy
                if role == "responder":
                    tl.keying_started = ev.time
            if role == "initiator":
                st.child = "spec-" + child_name(ev.call_id, 0)[5:]
                self._submit(("install", st, local_ts, remote_ts))
            self.log("keying-speculative", call=ev.call_id, t=ev.time, role=role, peer=peer.name, child=st.child,
                     local_ts=local_ts, remote_ts=remote_ts)
            return

    def _translate_reason(self, call_id: str) -> str:
        if self.nated.get(call_id):
            return ("the SDP names a phone's private address behind a NAT that did not rewrite it: media is keyed "
                    "and sent to the NAT's address, where the phone's media really is")
        return ("the SDP names the peer's NAT address (SIP ALG): media is sent to the peer's own address, "
                "which the CHILD_SA's selectors hold")

    def _translate(self, call_id: str, flows: tuple[Flow, ...]) -> tuple[tuple[Flow, ...], list]:
        """Flows keyed with the addresses really on the wire, the port kept (a NAT or ALG keeps it when
        it can; latching checks it): naming a peer's NAT address (a SIP ALG rewrote the SDP), the
        peer's own address instead; naming a phone's private address a NAT hid, the NAT's address.
        Plus the DNAT rules that send media addressed as in the SDP there."""
        if not self.cfg.nat_translate:
            return flows, []
        inside = {nat: p.remote_id for nat, name in self.shared.nat_public.items()
                  for p in self.cfg.peers if p.name == name}
        inside.update(self.nated.get(call_id, {}))
        relatched = self.relatched.get(call_id, {})
        if not inside:
            return flows, []
        out, rules = [], []
        for f in flows:
            eps = []
            for ep in f.endpoints():
                if ep.address in inside:
                    real = Endpoint(inside[ep.address], ep.port)
                    real = relatched.get(real, real)  # the port the NAT really chose, once latching saw it
                    rules.append((ep.address, ep.port, real.address, real.port))
                    ep = real
                eps.append(ep)
            out.append(Flow(f.stream, f.kind, eps[0], eps[1]))
        return tuple(out), sorted(set(rules))

    def key(self, call_id: str, flows: tuple[Flow, ...], t: float, trigger: str, generation: int = 0) -> None:
        prev = self.calls.get(call_id)
        spec = prev if prev is not None and prev.speculative else None
        sdp_flows = flows
        flows, dnat = self._translate(call_id, flows)
        # the policy (media ranges, RTP ports) judges what the phones asked for; a port a NAT chose
        # for the phone (latching) lies anywhere, and replaces the SDP's only at the NAT's address
        back = {seen: keyed for keyed, seen in self.relatched.get(call_id, {}).items()}
        asked = tuple(Flow(f.stream, f.kind, back.get(f.offerer, f.offerer), back.get(f.answerer, f.answerer))
                      for f in flows) if back else flows
        ok = self._authorise(call_id, asked, t, trigger)
        if ok is None:
            if spec is not None:
                self.unkey(call_id, "answer-refused", t)
            return
        peer, pol = ok
        if peer.strategy == "speculative":
            # the offerer's gateway keyed speculatively, so it also fits the SA to the answer
            role = "initiator" if pol.side(flows[0].offerer) == "local" else "responder"
        else:
            role = "initiator" if pol.side(flows[0].answerer) == "local" else "responder"
        oriented = [pol.orient(f) for f in flows]
        rules = frozenset(FlowRule(lo.address, re.address, lo.port, re.port) for lo, re in oriented)
        st = CallKeying(call_id, peer, role, flows, rules, generation=generation, answered_at=t, spec=spec,
                        own_conn=peer.strategy == "ike-per-call")
        self.calls[call_id] = st
        pending = self.pending_dnat.pop(call_id, None)
        if pending is not None:
            st.dnat = pending  # installed at the offer already
        elif dnat and not self.cfg.dry_run:
            tag = child_name(call_id, generation)[5:]
            try:
                dnat_add(tag, dnat)
                st.dnat = tag
                self._dnat_used = True
                self.log("nat-translated", call=call_id, rules=[f"{a}:{p} -> {b}:{q}" for a, p, b, q in dnat],
                         reason=self._translate_reason(call_id))
            except DnatError as exc:
                self.log("nat-translate-failed", call=call_id, reason=str(exc))
        for r in rules:
            self.shared.rule_calls[r] = call_id
        self.sdp_flows[call_id] = sdp_flows
        for sf, f, (lo, re) in zip(sdp_flows, flows, oriented, strict=True):
            self.shared.latch[(re.address, re.port)] = (call_id, sf.offerer if f.offerer == lo else sf.answerer, lo)
            if re.address in self.nated.get(call_id, {}).values():  # the far phone's NAT: its port is a guess
                self.shared.far_latch[(lo.address, lo.port)] = (call_id, re)
            early = self.lan_last.get((re.address, re.port))
            if early is not None:
                self._latch(early[0], early[1], re.address, re.port, early[2])
        tl = self.timelines.get(call_id)
        if tl is not None and not tl.role:
            tl.role, tl.strategy = role, peer.strategy
            if role == "responder":
                tl.keying_started = t
        if peer.strategy == "pre-keyed":
            self.log("keying", call=call_id, t=t, trigger=trigger, role="both", peer=peer.name, child=None,
                     flows=[f.to_json() for f in flows], strategy=peer.strategy)
            self._prekey(st, oriented)
            return
        local_ts = sorted({ts(lo) for lo, _ in oriented})
        remote_ts = sorted({ts(re) for _, re in oriented})
        if role == "initiator":
            st.child = child_name(call_id, generation)
            self._submit(("install", st, local_ts, remote_ts))
        elif self.relatched.get(call_id):
            # the responder's template child holds the RTP port range; a port a NAT chose is outside
            # it, so the peer's CREATE_CHILD_SA needs a child config with exactly these flows
            st.child, st.permit = child_name(call_id, generation), True
            self._submit(("permit", st, local_ts, remote_ts))
        self.log("keying", call=call_id, t=t, trigger=trigger, role=role, peer=peer.name, child=st.child,
                 flows=[f.to_json() for f in flows], strategy=peer.strategy)

    def _prekey(self, st: CallKeying, oriented: list[tuple[Endpoint, Endpoint]]) -> None:
        """0 RTT: both gateways derive the same SAs (HKDF over the peer secret and the dialog) and
        install them with xfrm; nothing crosses the network."""
        if self.cfg.dry_run:
            return
        peer = st.peer
        keys = prekeyed.derive(peer.psk, st.call_id, st.generation, peer.ike_local, peer.remote_id)
        pairs = sorted(set(oriented))
        pols = prekeyed.policies_for(keys, pairs)
        t0 = time.time()
        sock = XfrmSocket()
        try:
            prekeyed.install(sock, keys, peer.ike_local, pairs)
        except Exception as exc:  # noqa: BLE001 - NetlinkError and friends: one line, nothing left
            self.log("keying-failed", call=st.call_id, reason=f"pre-keyed install: {exc}")
            return
        finally:
            sock.close()
        st.prekeyed = (keys, pols)
        st.role = "initiator"  # it removes its own SAs, after teardown_delay like an initiator
        for k in keys:
            self.shared.spi_calls[k.spi] = st.call_id
        tl = self.timelines.get(st.call_id)
        if tl is not None:
            tl.role, tl.strategy = "pre-keyed", peer.strategy
            tl.keying_started, tl.sa_up = t0, time.time()
        self.log("sa-up", call=st.call_id, child="pre-keyed", spis=[f"{k.spi:08x}" for k in keys],
                 local_ts=[ts(lo) for lo, _ in pairs], remote_ts=[ts(re) for _, re in pairs],
                 keying_ms=round((time.time() - t0) * 1000, 3))

    def rekey(self, call_id: str, flows: tuple[Flow, ...], t: float, trigger: str) -> None:
        old = self.calls.get(call_id)
        if old is not None:
            self.unkey(call_id, "media-changed", t)
        self.key(call_id, flows, t, trigger, generation=old.generation + 1 if old else 0)

    def unkey(self, call_id: str, reason: str, t: float) -> None:
        st = self.calls.pop(call_id, None)
        for table in (self.shared.latch, self.shared.far_latch):
            for k in [k for k, v in table.items() if v[0] == call_id]:
                del table[k]
        self.latched = {x for x in self.latched if x[0] != call_id}
        if reason != "media-changed":
            for per_call in (self.nated, self.relatched, self.relatch_due, self.sdp_flows):
                per_call.pop(call_id, None)
        pending = self.pending_dnat.pop(call_id, None)
        if pending is not None:
            dnat_delete(pending)  # translated at the offer, never keyed (cancelled, refused)
        if st is None:
            self.log("dialog-ended", call=call_id, reason=reason, t=t, keyed=False)
            return
        for s_ in (st, st.spec):
            if s_ is None or s_.terminated:
                continue  # a speculative SA already replaced by the exact one
            s_.terminated = True
            self.log("unkeying", call=call_id, reason=reason, t=t, role=s_.role, child=s_.child,
                     speculative=s_.speculative)
            if s_.role == "initiator" or s_.permit:
                # Trailing RTP after a BYE would leave in clear if the SA went at once.
                delay = 0.0 if reason == "media-changed" else self.cfg.teardown_delay
                self.removals.append((time.time() + delay, s_, reason))
            elif s_.dnat:
                dnat_delete(s_.dnat)
                s_.dnat = None

    # -- keying worker -----------------------------------------------------------------------

    def _submit(self, job: tuple) -> None:
        if not self.cfg.dry_run:
            (self.removal_jobs if job[0] == "remove" else self.jobs).put(job)

    def _worker(self, jobs: queue.Queue | None = None) -> None:
        jobs = jobs if jobs is not None else self.jobs
        try:
            charon = Charon(self.cfg.vici)
        except KeyingError as exc:
            self.log("keying-failed", reason=str(exc))
            return
        while True:
            job = jobs.get()
            if job is None:
                break
            if job[0] == "remove" and job[1].prekeyed is not None:
                try:
                    self._remove(job[1], job[2])
                except Exception as exc:  # noqa: BLE001 - a worker must survive one bad job
                    self.log("keying-failed", call=job[1].call_id, reason=f"pre-keyed removal: {exc}")
                continue
            try:
                if job[0] == "ike":
                    self._preestablish(charon, job[1])
                    continue
                if job[0] == "install":
                    self._install(charon, *job[1:])
                elif job[0] == "permit":
                    with self._conf_lock:
                        self.children[job[1].peer.name][job[1].child] = (job[2], job[3])
                        charon.load_peer(job[1].peer, dict(self.children[job[1].peer.name]))
                    job[1].done.set()
                elif job[0] == "remove":
                    job[1].done.wait(30)  # never overtake the call's own set-up
                    self._remove(job[1], job[2], charon)
            except KeyingError as exc:
                self.log("keying-failed", call=getattr(job[1], "call_id", None), child=getattr(job[1], "child", None),
                         reason=str(exc))
            except Exception as exc:  # noqa: BLE001 - a worker must survive one bad job
                self.log("keying-failed", call=getattr(job[1], "call_id", None), reason=f"{type(exc).__name__}: {exc}")
        charon.close()

    def _preestablish(self, charon: Charon, peer: PeerConfig, tries: int = 5) -> None:
        """The peer's long-lived IKE_SA. The peer's controller may not have loaded its side yet
        (both start together): retry a few times, and leave it to the first call otherwise."""
        for attempt in range(1, tries + 1):
            if any(c.get("state") for c in charon.child_sas(peer.conn)) or charon.ike_established(peer.conn):
                return
            t0 = time.time()
            try:
                charon.initiate_ike(peer)
                self.log("ike-preestablished", peer=peer.name, ms=round((time.time() - t0) * 1000, 3),
                         attempt=attempt)
                return
            except KeyingError as exc:
                if attempt == tries or self.stop.wait(1.0):
                    self.log("ike-preestablish-failed", peer=peer.name, reason=str(exc),
                             consequence="the first call sets up the IKE_SA (2 RTT)")
                    return

    def _install(self, charon: Charon, st: CallKeying, local_ts: list[str], remote_ts: list[str]) -> None:
        try:
            self._install_job(charon, st, local_ts, remote_ts)
        finally:
            st.done.set()

    def _install_job(self, charon: Charon, st: CallKeying, local_ts: list[str], remote_ts: list[str]) -> None:
        if st.terminated:
            return
        assert st.child is not None
        # The lock also spans the initiate: a removal's load-conn replacing the peer's child configs
        # while an initiate waits makes charon report a failure for a CHILD_SA that does come up.
        with self._conf_lock:
            if st.own_conn:
                charon.load_call_conn(st.peer, st.child, local_ts, remote_ts)
            else:
                self.children[st.peer.name][st.child] = (local_ts, remote_ts)
                charon.load_peer(st.peer, dict(self.children[st.peer.name]))
            t0 = time.time()
            tl = self.timelines.get(st.call_id)
            if tl is not None and tl.keying_started is None:
                tl.keying_started = t0
            try:
                if st.own_conn:
                    charon.initiate_conn(st.child)
                else:
                    charon.initiate(st.peer, st.child)
            except KeyingError as exc:
                failure = exc
            else:
                failure = None
        t1 = time.time()
        if failure is not None and not self._installed(charon, st):
            raise failure
        if st.spec is not None and not st.spec.terminated:
            st.spec.terminated = True  # the exact SA is up: the speculative one has done its job
            self._remove(st.spec, "fitted-to-answer", charon)
        for child in charon.child_sas(st.child if st.own_conn else st.peer.conn):
            if child.get("name") == st.child and child.get("state") == "INSTALLED":
                st.uniqueid = child.get("uniqueid")
                if failure is not None:
                    self.log("keying-recovered", call=st.call_id, child=st.child, reason=str(failure))
                self.log("sa-initiated", call=st.call_id, child=st.child, sa=st.uniqueid,
                         keying_ms=round((t1 - t0) * 1000, 3), after_answer_ms=round((t1 - st.answered_at) * 1000, 3),
                         local_ts=child.get("local-ts"), remote_ts=child.get("remote-ts"),
                         encap=child.get("encap") == "yes")
                break
        else:
            raise KeyingError(f"{st.child} not installed after initiate")

    def _installed(self, charon: Charon, st: CallKeying, wait: float = 3.0) -> bool:
        """Whether the call's CHILD_SA is installed after all (initiate may report a failure for
        an exchange that completes later); polls briefly."""
        deadline = time.time() + wait
        while True:
            for child in charon.child_sas(st.child if st.own_conn else st.peer.conn):
                if child.get("name") == st.child and child.get("state") == "INSTALLED":
                    return True
            if time.time() > deadline:
                return False
            time.sleep(0.1)

    def _remove(self, st: CallKeying, reason: str, charon: Charon | None = None) -> None:
        if st.prekeyed is not None:
            keys, pols = st.prekeyed
            sock = XfrmSocket()
            try:
                prekeyed.remove(sock, keys, pols)
            finally:
                sock.close()
            st.prekeyed = None
            for k in keys:
                self.shared.spi_calls.pop(k.spi, None)
            tl = self.timelines.get(st.call_id)
            if tl is not None and tl.sa_down is None:
                tl.sa_down = time.time()
            self.log("sa-removed", call=st.call_id, child="pre-keyed", spis=[f"{k.spi:08x}" for k in keys],
                     reason=reason)
            self.log("sa-down", call=st.call_id, child="pre-keyed")
            return
        charon = charon or self.charon
        assert charon is not None
        if not st.own_conn and st.child and not st.uniqueid and not st.permit:
            # never learnt its id (a failed or unconfirmed set-up): find it by name, leave nothing behind
            st.uniqueid = next((c.get("uniqueid") for c in charon.child_sas(st.peer.conn)
                                if c.get("name") == st.child), None)
        if st.own_conn and st.child:
            charon.terminate_ike(st.child)  # strategy a: the call's IKE_SA goes with it
            charon.unload_conn(st.child)
        elif st.uniqueid and not st.permit:  # a responder's SA is the initiator's to delete
            charon.terminate_child(st.uniqueid)
        with self._conf_lock:
            if st.child and self.children[st.peer.name].pop(st.child, None) is not None:
                charon.load_peer(st.peer, dict(self.children[st.peer.name]))
        for r in st.rules if st.speculative else ():
            if self.shared.rule_calls.get(r) == st.call_id:
                self.shared.rule_calls.pop(r, None)
        if st.dnat:
            dnat_delete(st.dnat)
            st.dnat = None
        if st.permit:
            self.log("child-config-removed", call=st.call_id, child=st.child, reason=reason)
        else:
            self.log("sa-removed", call=st.call_id, child=st.child, sa=st.uniqueid, reason=reason)

    # -- charon events -----------------------------------------------------------------------

    def _listener(self, ready: threading.Event) -> None:
        try:
            events = listen(self.cfg.vici)
            for name, payload, _t in events:
                ready.set()
                if self.stop.is_set():
                    break
                if name == "child-updown":
                    try:
                        self._child_updown(payload)
                    except Exception as exc:  # noqa: BLE001 - the listener must outlive one bad event
                        self.log("routing-failed", reason=f"{type(exc).__name__}: {exc}")
                elif name == "ike-updown":
                    up = payload.get("up") == "yes"
                    for ike_name, ike in payload.items():
                        if isinstance(ike, dict):
                            self.log("ike-up" if up else "ike-down", conn=ike_name, ike=ike.get("uniqueid"),
                                     remote=ike.get("remote-host"), encap=ike.get("encap") == "yes",
                                     nat_local=ike.get("nat-local") == "yes",
                                     nat_remote=ike.get("nat-remote") == "yes")
                            if up:
                                self._ike_nat(ike_name, ike)
        except KeyingError as exc:
            self.log("events-lost", reason=str(exc))
        except OSError as exc:
            if not self.stop.is_set():
                self.log("events-lost", reason=str(exc))
        finally:
            ready.set()

    def _ike_nat(self, conn: str, ike: dict) -> None:
        """NAT between this gateway and a peer, from charon's NAT-D results (issue: told apart from
        kernel-libipsec's forced encapsulation by where the peer is really seen)."""
        peer = next((p for p in self.cfg.peers if p.conn == conn or conn.startswith("call-")), None)
        if peer is None:
            return
        found = ike_findings(ike, peer.remote_id, self.backend)
        host = ike.get("remote-host", "")
        if any(f.test in ("ike-nat-remote", "ike-peer-moved") for f in found) and host != peer.remote_id:
            self.shared.nat_public[host] = peer.name  # SDP naming this address names the peer's NAT
        self.log("nat-ike", peer=peer.name, conn=conn, nat=bool(found), findings=[f.to_json() for f in found],
                 encapsulation=ike_encapsulation(ike, self.backend), seen_as=f"{host}:{ike.get('remote-port')}")

    def _in_media_ranges(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.media_nets)

    def _sip_nat(self, ev: SipSeen) -> None:
        msg = ev.message
        if msg is None or ev.source is None:
            return
        initial = (msg.is_request and msg.method == "INVITE" and msg.to_tag is None) or \
            (not msg.is_request and ev.method == "INVITE" and 200 <= (msg.status or 0) < 300)
        if not initial:
            return
        found = sip_findings(msg, ev.source, self.private)
        body = msg.sdp_body()
        if body:
            try:
                sdp = parse_sdp(body)
            except SdpError:
                sdp = None
            if sdp is not None:
                found += sdp_findings(sdp, ev.source, self.private)
                found += sdp_leftover_findings(body.decode("utf-8", "replace"), sdp, ev.source, self.private)
                # an address in a peer's media range is reached through the tunnel as it is (a NAT
                # between the gateways, the ALG case); only one outside them was hidden by a NAT
                hidden = {a: pub for a, pub in nated_media(sdp, ev.source, self.private).items()
                          if not self._in_media_ranges(a)}
                if hidden:
                    self.nated.setdefault(ev.call_id, {}).update(hidden)
        if found:
            self.log("nat-sip", call=ev.call_id, message=msg.summary(), source=f"{ev.source[0]}:{ev.source[1]}",
                     findings=[f.to_json() for f in found])

    def _child_updown(self, payload: dict) -> None:
        up = payload.get("up") == "yes"
        for ike_name, ike in payload.items():
            if not isinstance(ike, dict):
                continue
            for child in ike.get("child-sas", {}).values():
                rules = rules_for_child(child.get("local-ts", []), child.get("remote-ts", []))
                calls = {self.shared.rule_calls.get(r) for r in rules} - {None}
                call = calls.pop() if len(calls) == 1 else None
                spis = [int(child[k], 16) for k in ("spi-in", "spi-out") if child.get(k)]
                if up:
                    for spi in spis:
                        if call:
                            self.shared.spi_calls[spi] = call
                else:
                    for spi in spis:
                        self.shared.spi_calls.pop(spi, None)
                if self.routing is not None:
                    if up:
                        self.routing.remove_blanket()
                        for r in rules:
                            self.routing.add(r)
                            self.shared.routed.add(r)
                    else:
                        for r in rules:
                            self.routing.delete(r)
                            self.shared.routed.discard(r)
                tl = self.timelines.get(call) if call else None
                if tl is not None:
                    if up and tl.sa_up is None:
                        tl.sa_up = time.time()
                    elif not up and tl.sa_up is not None and tl.sa_down is None and call not in self.calls:
                        tl.sa_down = time.time()  # the call's last SA (not a speculative one it replaced)
                self.log("sa-up" if up else "sa-down", call=call, conn=ike_name, child=child.get("name"),
                         sa=child.get("uniqueid"), local_ts=child.get("local-ts"),
                         remote_ts=child.get("remote-ts"), encap=child.get("encap") == "yes",
                         routing_rules=[str(r) for r in sorted(rules)] if self.routing else [])
                if not up:
                    for r in rules:
                        if self.shared.rule_calls.get(r) == call and call not in self.calls:
                            self.shared.rule_calls.pop(r, None)
