"""The gateway core: every keying decision, sans I/O (in the style of aioquic's connection).

Inputs: :meth:`GatewayCore.receive_packet` (an IP packet from an interface, with its capture time),
:meth:`GatewayCore.receive` (an outcome of an action or a charon event, with the time it
happened), :meth:`GatewayCore.handle_timer`. Outputs: the actions each call returns, and
:meth:`GatewayCore.next_timer`. ``now`` is always passed in; nothing here reads a clock, opens a
socket, starts a thread or talks to charon (a unit test walks the imports to keep it so).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING

from ..packet import SipExtractor, classify, decode_ip, esp_spi, ike_port
from ..selectors import FlowRule, rules_for_child
from ..sip.dialog import DialogTracker
from ..sip.errors import Capped, SipParseError
from ..sip.events import (
    DialogConfirmed,
    DialogEarly,
    DialogTerminated,
    Event,
    MediaChanged,
    MediaNegotiated,
    MediaOffered,
    MessageRejected,
    SipSeen,
)
from ..timing import BUDGETS, parse_ike
from . import adoption, peerloss, snapshot
from .actions import (
    Action,
    AddRoute,
    CharonReconnected,
    ChildUpDown,
    DelRoute,
    DnatResult,
    EstablishIke,
    EventsLost,
    IkeResult,
    IkeUpDown,
    Input,
    InstallResult,
    Outbox,
    PeerSet,
    PermitResult,
    PrekeyResult,
    RemoveBlanketRoute,
    RemoveChild,
    RemoveResult,
    StaleIkeCleared,
)
from .caps import CAP_EVENTS, log_cap_event
from .control import ControlRequest, handle
from .early import EarlyChildren
from .keying import Keying
from .natfix import NatFix
from .outcomes import Outcomes
from .reconfig import Reconfig, guard_for
from .shared import owns as shared_child
from .sharedsas import SharedSas
from .strategies import strategy_of
from .throttle import SourceThrottle, trusted_sources
from .timelines import Timelines

if TYPE_CHECKING:
    from ..config import ControllerConfig

SINK = "sink"  # the interface name the shell gives packets the data plane kept from the WAN
IKE_TRIES = 5  # attempts at a peer's long-lived IKE_SA at start (its controller may start later)
IKE_RETRY_S = 1.0
TIMER_BATCH = 8  # dialogs expired per handle_timer at most: the loop reads packets between batches


class GatewayCore:
    def __init__(self, cfg: ControllerConfig, backend: str) -> None:
        self.cfg, self.backend = cfg, backend
        self.routing = backend == "kernel-libipsec"  # per-flow policy routing into charon's TUN
        self.out = Outbox()
        self.tracker = DialogTracker(media_timeout=cfg.media_timeout, report_messages=True, limits=cfg.limits,
                                     timer_batch=TIMER_BATCH)
        self.extractor = SipExtractor(set(cfg.sip_ports), cfg.limits)
        self.media_interfaces = frozenset(cfg.media_interfaces)
        self.timelines = Timelines(cfg.name, BUDGETS[cfg.budget], cfg.teardown_delay, self.out)
        private = tuple(ipaddress.ip_network(p) for p in cfg.nat_private)
        self.nat = NatFix(cfg.peers, private, cfg.nat_translate, backend, self.out, self.tracker.media_activity)
        self.keying = Keying(cfg.peers, cfg.teardown_delay, self.out, self.timelines, self.nat,
                             self.tracker.media_activity)
        self.outcomes = Outcomes(self.keying)
        self.recovery = adoption.Recovery(self.keying)  # live calls whose SA went: keyed again, timed
        self.keying.tags_of = self._tags
        self.peers = {p.name: p for p in cfg.peers}
        self.routed: set[FlowRule] = set()
        self.dropped_unattributed = 0  # kept from the WAN, but no known call's (e.g. before any answer)
        self.ike_retry: dict[tuple[str, int], tuple[float, int]] = {}  # (peer, member) -> (when, attempt)
        self.early = EarlyChildren()  # responders' SAs up before their call was known (gateway/early.py)
        self.draining = False  # set by drain(): no new call is keyed
        self.conn_peer = {m: p for p in cfg.peers for m in p.members()}  # an IKE_SA's connection -> its peer
        self.shared = SharedSas(self.keying, self.timelines, self._route if self.routing else None, self._settled)
        self.throttle = SourceThrottle(cfg.limits.max_sip_per_source_per_s, trusted_sources(cfg), self.out)
        self.reconfig = Reconfig(self.keying, self.recovery, self.out)  # a reload's peer changes, live
        self.keying.defer, self.keying.waits = self.reconfig.defer, self.reconfig.waits

    def _flush(self) -> list[Action]:
        self.keying.shared.flush()  # the joins and leaves of this input, one re-key per peer
        if self.reconfig.busy():
            self.reconfig.poll()  # a peer a reload replaces, once none of its SAs is left
        actions = list(self.out)
        self.out.clear()
        return actions

    # -- start / stop ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self._establish_pools()
        if self.routing:
            self.out.append(RemoveBlanketRoute())
        return self._flush()

    def _establish_pools(self, peers: tuple | None = None, restarted: bool = False) -> None:
        """Peers whose strategy reuses IKE_SAs get them now, not on the first call's path; member 0
        from one side (the lower address), so that the two gateways do not build two. After charon
        answers again (``restarted``) from either side: a restarted charon holds none, and the new
        IKE_SA is what tells the peer that its own is dead (gateway/peerloss.py); a charon that was
        only hung still holds its IKE_SA, and the set-up is then a no-op."""
        for peer in self.cfg.peers if peers is None else peers:
            if not strategy_of(peer).reuses_ike_sa:
                continue
            lower = ipaddress.ip_address(peer.ike_local) < ipaddress.ip_address(peer.remote_id)
            # member 0 from one side only (one IKE_SA, as without a pool); the others from both
            # sides: the peer's IKE_SAs are all bound to our member 0 when we respond, so our own
            # members 1.. must be ours to spread the calls this gateway initiates
            for k in range(peer.ike_pool):
                if k > 0 or lower or restarted:
                    self.out.append(EstablishIke(peer.name, 1, k))

    def _tags(self, call_id: str) -> tuple[str | None, str | None]:
        d = self.tracker.dialogs.get(call_id)
        return (d.from_tag, d.to_tag) if d is not None else (None, None)

    def adopt(self, now: float, journal: list[dict], children: list[dict]) -> list[Action]:
        """At start: take over the calls the previous run keyed (gateway/adoption.py)."""
        rules = adoption.adopt(self.keying, self.tracker, journal, children, now, self.recovery)
        if rules and self.routing:
            self._route(rules, True)
        for c in children:  # the shared SAs adopted (and the peer's, held as responder): attributed again
            peer = self.conn_peer.get(c.get("ike", ""))
            if peer is not None and self.shared.handles(peer, c.get("name", "")):
                self.shared.updown(ChildUpDown(True, c.get("ike", ""), c), peer,
                                   rules_for_child(c.get("local-ts", []), c.get("remote-ts", [])), now)
        self.keying.shared.resume(now)
        return self._flush()

    def shutdown(self, now: float, keep_live: bool = False) -> list[Action]:
        """What is due goes now; ``keep_live``: the live calls' SAs stay (and their journal), for
        the next run to adopt, instead of being removed."""
        self.timelines.flush(now)
        self.keying.shutdown(now, keep_live)
        return self._flush()

    def drain(self, now: float) -> list[Action]:
        """Key no new call from now on (the live ones keep their SAs until they end)."""
        if not self.draining:
            self.draining = True
            self.out.log("draining", t=now, live=len(self.keying.calls))
        return self._flush()

    def reconfigure(self, now: float, peers: tuple) -> tuple[dict | str, list[Action]]:
        """A reload's peers (SIGHUP; gateway/reconfig.py): what changes, or why it is refused."""
        if self.reconfig.busy():
            return "a previous reload is still being applied", self._flush()
        if not peers:
            return "no peer left: a gateway keys calls to at least one peer", self._flush()
        old = self.cfg.peers
        changes = self.reconfig.apply(now, old, peers)
        self._set_peers(peers)
        if self.routing:  # the added peers' media guarded at once; the removed ones' once they are gone
            self.out.append(guard_for((*old, *peers)))
        return changes, self._flush()

    def _set_peers(self, peers: tuple) -> None:
        self.cfg = dataclasses.replace(self.cfg, peers=peers)
        self.peers = {p.name: p for p in peers}
        self.conn_peer = {m: p for p in peers for m in p.members()}
        self.keying.set_peers(peers)
        self.nat.set_peers(peers)

    def _peer_set(self, r: PeerSet, now: float) -> None:
        rep, waiting = self.reconfig.peer_set(r, now)
        if rep is None:
            return
        self.keying.shared.replace(r.name, rep.new if r.ok else None)
        for key in [k for k in self.ike_retry if k[0] == r.name]:
            del self.ike_retry[key]  # attempts at the old peer's IKE_SAs: the new one gets its own
        if not r.ok and rep.new is not None:
            self._set_peers(tuple(p for p in self.cfg.peers if p.name != r.name))
        if r.ok and rep.new is not None:
            self._establish_pools((rep.new,))
            for call, flows, trigger, srtp in waiting:
                if call in self.tracker.dialogs:
                    self.keying.key(call, flows, now, trigger, srtp)
                else:
                    self.recovery.forget(call)
        if self.routing and not self.reconfig.busy() and self.cfg.peers:
            self.out.append(guard_for(self.cfg.peers))

    def release_routes(self) -> list[Action]:
        """The per-flow rules still in place (the shell removes them last, after the SAs)."""
        actions: list[Action] = [DelRoute(r) for r in sorted(self.routed)]
        self.routed.clear()
        return actions

    # -- packets -----------------------------------------------------------------------------------

    def receive_packet(self, now: float, data: bytes, interface: str = "") -> list[Action]:
        pkt = decode_ip(data)
        if pkt is None:
            return []
        if interface == SINK:
            self._dropped(pkt, now)
            return self._flush()
        if interface in self.media_interfaces:
            # the phones' side: what their media really comes from (SIP and IKE are taken on the WAN,
            # once; this side's RTP is in clear by design, so it does not count in the timeline)
            if pkt.proto == 17:
                self.nat.lan_packet(pkt.src, pkt.sport, pkt.dst, pkt.dport, now)
            return self._flush()
        kind = classify(pkt, self.extractor.is_sip(pkt))
        if kind == "sip":
            if pkt.proto != 17 or self.throttle.admit(pkt.src, now):  # TCP: no spoofing, its own caps
                self._sip(pkt, now)
        elif kind == "ike":
            ike = parse_ike(pkt.payload, ike_port(pkt), now, pkt.src)
            if ike is not None:
                self.timelines.ike(ike)
        elif kind == "esp":
            spi = esp_spi(pkt)
            call = self.keying.spi_calls.get(spi)
            if call is not None or not self.shared.esp(spi, now, self._media):
                self._media(call, True, now)
        elif kind == "media":
            calls = self.keying.rule_calls
            leaving = calls.get(FlowRule(pkt.src, pkt.dst, pkt.sport, pkt.dport))  # sent by this gateway
            call = leaving or calls.get(FlowRule(pkt.dst, pkt.src, pkt.dport, pkt.sport))
            if call is None and self.nat.far_latch:
                self.nat.wan_clear_media(pkt.src, pkt.sport, pkt.dst, pkt.dport, now)
            self._media(call, False, now, leaving is not None)
        return self._flush()

    def _dropped(self, pkt, now: float) -> None:
        """Cleartext media the data plane kept from the WAN (protect = required): counted for its
        call, the honest price of keying after the answer (or of keying that failed)."""
        if pkt.proto != 17:
            return
        call = self.keying.rule_calls.get(FlowRule(pkt.src, pkt.dst, pkt.sport, pkt.dport))
        tl = self.timelines.get(call)
        if tl is not None:
            tl.dropped_clear += 1
            if tl.ended is not None:
                tl.dropped_after_end += 1
        else:
            self.dropped_unattributed += 1

    def _sip(self, pkt, now: float) -> None:
        for item, stream in self.extractor.feed(pkt):
            if isinstance(item, Capped):  # TCP reassembly's caps: one line per hit, naming the cap
                self.out.log("cap-hit", cap=item.cap, limit=item.limit, reason=str(item),
                             source=f"{pkt.src}:{pkt.sport}")
                continue
            if isinstance(item, SipParseError):
                self.out.log("sip-rejected", reason=str(item), source=f"{pkt.src}:{pkt.sport}")
                continue
            for ev in self.tracker.receive(item, now, (pkt.src, pkt.sport), stream=stream,
                                           destination=(pkt.dst, pkt.dport)):
                self.sip_event(ev)

    def _media(self, call: str | None, esp: bool, now: float, leaving: bool = False) -> None:
        if call is None:
            return
        self.tracker.media_activity(call, now)
        tl = self.timelines.get(call)
        if tl is None or tl.answer_sdp is None:
            return
        if esp:
            if tl.first_esp is None:
                tl.first_esp = now
            return
        if tl.first_rtp is None:
            tl.first_rtp = now
        if tl.first_esp is None:  # until the first protected packet: the post-answer gap's cleartext
            tl.clear_after_answer += 1
        elif leaving:  # sent in clear after it had been protected (with kernel ESP the capture also
            tl.clear_after_protection += 1  # shows each decrypted arrival: only what leaves counts)

    def sip_event(self, ev: Event) -> None:
        """One dialog event (also the entry point for signalling learnt other than on the wire)."""
        self.timelines.sip_event(ev)
        k = self.keying
        if isinstance(ev, SipSeen):
            self.nat.sip_seen(ev)
        elif isinstance(ev, MessageRejected):
            self.out.log("sip-rejected", call=ev.call_id or None, reason=ev.reason,
                         source=f"{ev.source[0]}:{ev.source[1]}" if ev.source else None)
        elif isinstance(ev, DialogEarly):
            self.out.log("dialog-early", call=ev.call_id, status=ev.status, t=ev.time)
        elif isinstance(ev, DialogConfirmed):
            self.out.log("dialog-confirmed", call=ev.call_id, t=ev.time)
        elif isinstance(ev, (MediaOffered, MediaNegotiated)) and self.draining and ev.call_id not in k.calls:
            # draining (the operator's graceful stop): calls keyed already go on, no new one is keyed
            if isinstance(ev, MediaNegotiated):  # once per call: at its answer
                self.out.log("refused", call=ev.call_id, t=ev.time, reason="draining",
                             flows=[f.to_json() for f in ev.flows])
        elif isinstance(ev, MediaOffered):
            k.offered(ev)
        elif isinstance(ev, MediaNegotiated):
            k.key(ev.call_id, ev.flows, ev.time, ev.trigger, ev.srtp)
        elif isinstance(ev, MediaChanged):
            k.rekey(ev.call_id, ev.new, ev.time, ev.trigger, srtp=ev.srtp)
        elif isinstance(ev, DialogTerminated):
            k.unkey(ev.call_id, ev.reason, ev.time)
            self.recovery.forget(ev.call_id)
            self.reconfig.forget(ev.call_id)
        elif isinstance(ev, CAP_EVENTS):
            log_cap_event(ev, self.out, k)
        if isinstance(ev, MediaNegotiated | MediaChanged) and (hit := self.early.claim(k.calls.get(ev.call_id))):
            self._child_updown(hit[1], hit[0])  # its SA came up first: attributed now, as of when it came up
        elif isinstance(ev, MediaNegotiated | MediaChanged) and (st := k.calls.get(ev.call_id)) is not None \
                and st.peer.legs == "shared":
            self.shared.claim(st, ev.time)  # the same for a leg of the peer's shared SA
        if ev.call_id:
            self.timelines.settle(ev.call_id, ev.time)

    def control(self, now: float, req: ControlRequest) -> tuple[dict, list[Action]]:
        """A SIP proxy's command over the ng control channel (gateway/control.py): its reply, and the
        actions its offer, answer or delete led to (the same as for that SIP seen on the wire)."""
        return handle(self, now, req), self._flush()

    # -- outcomes and charon's events -------------------------------------------------------------

    def receive(self, now: float, inp: Input) -> list[Action]:
        if isinstance(inp, ChildUpDown):
            self._child_updown(inp, now)
        elif isinstance(inp, InstallResult) and shared_child(inp.child):
            for call in self.keying.shared.install_result(inp, now):  # the legs it covers first
                tl = self.timelines.get(call)
                if tl is not None and tl.keying_started is None:
                    tl.keying_started = inp.started
        elif isinstance(inp, RemoveResult) and shared_child(inp.child):
            self.keying.shared.remove_result(inp)
        elif isinstance(inp, InstallResult):
            self.outcomes.install_result(inp)
            self.recovery.settle(inp.call_id, now)
        elif isinstance(inp, RemoveResult):
            self.outcomes.remove_result(inp)
            self.timelines.settle(inp.call_id, now)
        elif isinstance(inp, PrekeyResult):
            self.outcomes.prekey_result(inp)
            self.timelines.settle(inp.call_id, now)
        elif isinstance(inp, PermitResult):
            self.outcomes.permit_result(inp)
        elif isinstance(inp, DnatResult):
            self.outcomes.dnat_result(inp)
        elif isinstance(inp, IkeResult):
            self._ike_result(inp, now)
        elif isinstance(inp, IkeUpDown):
            self.out.log("ike-up" if inp.up else "ike-down", conn=inp.conn, ike=inp.ike.get("uniqueid"),
                         remote=inp.ike.get("remote-host"), encap=inp.ike.get("encap") == "yes",
                         nat_local=inp.ike.get("nat-local") == "yes", nat_remote=inp.ike.get("nat-remote") == "yes")
            if inp.up:
                self.nat.ike_up(inp.conn, inp.ike)
                clear = peerloss.stale_ike(self.cfg.peers, inp.conn, inp.ike)
                if clear is not None:
                    self.out.append(clear)
        elif isinstance(inp, StaleIkeCleared):
            peerloss.report(self.out, inp)
        elif isinstance(inp, PeerSet):
            self._peer_set(inp, now)
        elif isinstance(inp, EventsLost):
            self.out.log("events-lost", reason=inp.reason)
        elif isinstance(inp, CharonReconnected):
            self.out.log("vici-reconnected", children=len(inp.children), outage_s=round(inp.outage_s, 3))
            self._establish_pools(restarted=True)
            adoption.rekey_lost(self.recovery, inp.children, now)
            self.keying.shared.resume(now, inp.children)
        return self._flush()

    def _ike_result(self, r: IkeResult, now: float) -> None:
        if r.ok:
            if not r.already:
                self.out.log("ike-preestablished", peer=r.peer, member=r.member, ms=r.ms, attempt=r.attempt)
        elif r.attempt >= IKE_TRIES:
            self.out.log("ike-preestablish-failed", peer=r.peer, member=r.member, reason=r.reason,
                         consequence="the first call sets up the IKE_SA (2 RTT)")
        else:  # each attempt's reason (a refused certificate is not worth waiting 5 attempts to read)
            self.out.log("ike-attempt-failed", peer=r.peer, member=r.member, attempt=r.attempt, reason=r.reason,
                         retry_in_s=IKE_RETRY_S)
            self.ike_retry[(r.peer, r.member)] = (now + IKE_RETRY_S, r.attempt + 1)

    def _settled(self, call: str, now: float) -> None:
        self.recovery.settle(call, now)
        self.timelines.settle(call, now)

    def _child_updown(self, ev: ChildUpDown, now: float) -> None:
        child, k = ev.child, self.keying
        rules = rules_for_child(child.get("local-ts", []), child.get("remote-ts", []))
        peer = self.conn_peer.get(ev.ike) or self.keying.shared.peer_of(child.get("name", ""))
        if peer is not None and self.shared.handles(peer, child.get("name", "")):
            self.shared.updown(ev, peer, rules, now)  # legs = "shared" (gateway/sharedsas.py)
            return
        st = k.by_child.get(child.get("name", ""))
        call: str | None = st.call_id if st is not None else k.removed.get(child.get("name", ""))
        if call is None:  # a responder's SA, named after the template that matched: known by its flows
            calls = {k.rule_calls.get(r) for r in rules} - {None}
            call = calls.pop() if len(calls) == 1 else None
            if call is not None and ev.up and k.calls.get(call) is not None and k.calls[call].role == "responder":
                st = k.calls[call]
        if call is None:
            self.early.note(rules, ev, now)
        spis = [int(child[x], 16) for x in ("spi-in", "spi-out") if child.get(x)]
        for spi in spis:
            if not ev.up:
                k.spi_calls.pop(spi, None)
            elif call:
                k.spi_calls[spi] = call
        if self.routing:
            # an older SA of a live call going (the peer keyed the call again after its restart,
            # then dead-peer detection cleared the old IKE_SA here) leaves the current SA's routes
            self._route(rules if ev.up else rules - self.recovery.carried(call, child), ev.up)
        tl = self.timelines.get(call)
        if tl is not None:
            if ev.up and tl.sa_up is None:
                tl.sa_up = now
            elif not ev.up and tl.sa_up is not None and tl.sa_down is None and call not in k.calls:
                tl.sa_down = now  # the call's last SA (not a speculative one it replaced)
        self.out.log("sa-up" if ev.up else "sa-down", call=call, conn=ev.ike, child=child.get("name"),
                     sa=child.get("uniqueid"), local_ts=child.get("local-ts"), remote_ts=child.get("remote-ts"),
                     encap=child.get("encap") == "yes",
                     routing_rules=[str(r) for r in sorted(rules)] if self.routing else [])
        if ev.up and st is not None:
            self.outcomes.child_up(st, child)
            self.recovery.settle(call, now)
        elif ev.up and call is not None and child.get("name") in k.removed_from:
            # up after its removal ran (an initiate that charon finished past its time-out): it
            # protects nothing any more and nothing else would ever delete it
            peer, own_conn, member = k.removed_from[child["name"]]
            self.out.log("late-sa-removed", call=call, child=child.get("name"), sa=child.get("uniqueid"))
            self.out.append(RemoveChild(call, child["name"], peer, child.get("uniqueid"), "late", own_conn=own_conn,
                                        member=member))
        if not ev.up:
            if st is not None:
                self.recovery.child_down(st, child, now)  # a live call's SA gone unasked (peer lost)
            for r in rules:
                if k.rule_calls.get(r) == call and call not in k.calls:
                    k.rule_calls.pop(r, None)
            if call:
                self.timelines.settle(call, now)

    def _route(self, rules: set[FlowRule], up: bool) -> None:
        if up:
            self.out.append(RemoveBlanketRoute())  # charon puts it back with each route it installs
            for r in sorted(rules):
                self.out.append(AddRoute(r))
                self.routed.add(r)
        else:
            for r in sorted(rules):
                self.out.append(DelRoute(r))
                self.routed.discard(r)

    # -- read-only views -----------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict:
        """The live calls and SAs for an operator's views (the control socket); changes nothing."""
        return {"gateway": self.cfg.name, "backend": self.backend, "time": round(now, 6),
                "calls": snapshot.calls(self, now), "sas": snapshot.sas(self)}

    # -- timers ------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        times = [t for t in (self.tracker.next_timer(), self.keying.next_timer(), self.timelines.next_timer())
                 if t is not None]
        times.extend(t for t, _ in self.ike_retry.values())
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Action]:
        nt = self.tracker.next_timer()
        if nt is not None and nt <= now:
            for ev in self.tracker.handle_timer(now):
                self.sip_event(ev)
        self.keying.handle_timer(now)
        self.recovery.check(now)
        self.timelines.handle_timer(now)
        for (peer, member), (when, attempt) in list(self.ike_retry.items()):
            if when <= now:
                del self.ike_retry[(peer, member)]
                self.out.append(EstablishIke(peer, attempt, member))
        return self._flush()
