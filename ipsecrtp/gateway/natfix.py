"""NAT in the gateway core: where media really is when a NAT or a SIP ALG rewrote or hid it.

- A peer's NAT address (seen by IKE) named in an SDP: a SIP ALG rewrote it; media is keyed and
  sent to the peer's own address.
- A phone's private address behind a NAT that did not rewrite its SDP: keyed at the NAT's address
  (Kamailio's fix_nated_sdp), the SDP's port kept.
- Latching: the first media of a keyed flow shows where it really comes from; a port a NAT chose
  re-keys the call once (RTP and RTCP together).
Pure: packets' fields and ``now`` in, log lines and DNAT actions out (through the core's outbox).
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Callable

from ..media import Endpoint, Flow
from ..nat import (
    NatFinding,
    ike_encapsulation,
    ike_findings,
    media_finding,
    nated_media,
    sdp_findings,
    sdp_leftover_findings,
    sip_findings,
)
from ..selectors import PeerConfig, child_name
from ..sip.events import MediaOffered, SipSeen
from ..sip.sdp import SdpError, parse_sdp
from .actions import AddDnat, Outbox

LAN_MEMORY_S = 10.0  # how long the last packet to a destination on the phones' side is remembered
LAN_MEMORY_MAX = 4096


class NatFix:
    def __init__(self, peers: tuple[PeerConfig, ...], private: tuple, translate: bool, backend: str,
                 out: Outbox, activity: Callable[[str, float], None]) -> None:
        self.private, self.translate, self.backend = private, translate, backend
        self.out, self.activity = out, activity
        self.set_peers(peers)
        self.nat_public: dict[str, str] = {}  # a peer's NAT address as IKE sees it -> peer name
        # per call: SDP addresses a NAT in front of a phone hid -> the NAT's address
        self.nated: dict[str, dict[str, str]] = {}
        # where a call's media should come from: (remote address, port) -> (call, SDP endpoint, keyed endpoint)
        self.latch: dict[tuple[str, int], tuple[str, Endpoint, Endpoint]] = {}
        # the far side: (local address, port) -> (call, keyed remote endpoint) at a far NAT's address
        self.far_latch: dict[tuple[str, int], tuple[str, Endpoint]] = {}
        self.latched: dict[str, set[Endpoint]] = {}  # per call: keyed endpoints whose media was reported
        self.latch_keys: dict[str, list[tuple[str, int]]] = {}  # per call: its keys in the two tables
        # per call: a NAT's endpoint keyed with the SDP's port -> the port its media really came from
        self.relatched: dict[str, dict[Endpoint, Endpoint]] = {}
        self.relatch_due: dict[str, float] = {}  # call -> when to re-key it with what latching saw
        self.sdp_flows: dict[str, tuple[Flow, ...]] = {}  # call -> flows as the SDP said
        # the last UDP packet from the phones' side to each destination, for flows keyed after their
        # first packet (an RTCP sent at answer time comes again seconds later)
        self.lan_last: collections.OrderedDict[tuple[str, int], tuple[str, int, float]] = collections.OrderedDict()
        self.role_of: Callable[[str], str | None] = lambda call: None

    def set_peers(self, peers: tuple[PeerConfig, ...]) -> None:
        """The peers configured now (at start, and when a reload applies a change)."""
        self.peers = peers
        self.media_nets = tuple(ipaddress.ip_network(n) for p in peers for n in (*p.local_media, *p.remote_media))

    # -- detection -------------------------------------------------------------------------------

    def in_media_ranges(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.media_nets)

    def sip_seen(self, ev: SipSeen) -> None:
        msg = ev.message
        if msg is None or ev.source is None:
            return
        initial = (msg.is_request and msg.method == "INVITE" and msg.to_tag is None) or \
            (not msg.is_request and ev.method == "INVITE" and 200 <= (msg.status or 0) < 300)
        if not initial:
            return
        found = sip_findings(msg, ev.source, self.private)
        body = msg.sdp_body()
        try:
            sdp = parse_sdp(body) if body else None
        except SdpError:
            sdp = None
        if sdp is not None:
            found += sdp_findings(sdp, ev.source, self.private)
            found += sdp_leftover_findings(body.decode("utf-8", "replace"), sdp, ev.source, self.private)
            # an address in a peer's media range is reached through the tunnel as it is (a NAT
            # between the gateways, the ALG case); only one outside them was hidden by a NAT
            hidden = {a: pub for a, pub in nated_media(sdp, ev.source, self.private).items()
                      if not self.in_media_ranges(a)}
            if hidden:
                self.nated.setdefault(ev.call_id, {}).update(hidden)
        if found:
            self.out.log("nat-sip", call=ev.call_id, message=msg.summary(), source=f"{ev.source[0]}:{ev.source[1]}",
                         findings=[f.to_json() for f in found])

    def ike_up(self, conn: str, ike: dict) -> None:
        """NAT between this gateway and a peer, from charon's NAT-D results (told apart from
        kernel-libipsec's forced encapsulation by where the peer is really seen)."""
        peer = next((p for p in self.peers if conn in p.members() or conn.startswith("call-")), None)
        if peer is None:
            return
        found = ike_findings(ike, peer.remote_id, self.backend)
        host = ike.get("remote-host", "")
        if any(f.test in ("ike-nat-remote", "ike-peer-moved") for f in found) and host != peer.remote_id:
            self.nat_public[host] = peer.name  # SDP naming this address names the peer's NAT
        self.out.log("nat-ike", peer=peer.name, conn=conn, nat=bool(found), findings=[f.to_json() for f in found],
                     encapsulation=ike_encapsulation(ike, self.backend),
                     seen_as=f"{host}:{ike.get('remote-port')}")

    # -- translation -----------------------------------------------------------------------------

    def reason(self, call_id: str) -> str:
        if self.nated.get(call_id):
            return ("the SDP names a phone's private address behind a NAT that did not rewrite it: media is keyed "
                    "and sent to the NAT's address, where the phone's media really is")
        return ("the SDP names the peer's NAT address (SIP ALG): media is sent to the peer's own address, "
                "which the CHILD_SA's selectors hold")

    def translate_flows(self, call_id: str, flows: tuple[Flow, ...]) -> tuple[tuple[Flow, ...], list]:
        """Flows keyed with the addresses really on the wire, the port kept (latching checks it), and
        the DNAT rules that send media addressed as in the SDP there."""
        if not self.translate:
            return flows, []
        inside = {nat: p.remote_id for nat, name in self.nat_public.items() for p in self.peers if p.name == name}
        inside.update(self.nated.get(call_id, {}))
        if not inside:
            return flows, []
        relatched = self.relatched.get(call_id, {})
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

    def offer_dnat(self, ev: MediaOffered, already: bool) -> None:
        """An offer naming a peer's NAT address (ALG): translate before the answer, so that the phone's
        first RTP already gets the translation (conntrack decides NAT on a flow's first packet)."""
        if not (self.nat_public or self.nated.get(ev.call_id)) or not self.translate or already:
            return
        flows = tuple(Flow(0, "rtp", ep, ep) for ep in ev.endpoints)
        _, rules = self.translate_flows(ev.call_id, flows)
        if rules:
            self.out.append(AddDnat(ev.call_id, child_name(ev.call_id, 0)[5:], tuple(sorted(set(rules))),
                                    self.reason(ev.call_id)))

    def asked(self, call_id: str, flows: tuple[Flow, ...]) -> tuple[Flow, ...]:
        """The flows as the phones asked for them: the policy judges these (a port a NAT chose for
        the phone lies anywhere, and replaces the SDP's only at the NAT's address)."""
        back = {seen: keyed for keyed, seen in self.relatched.get(call_id, {}).items()}
        if not back:
            return flows
        return tuple(Flow(f.stream, f.kind, back.get(f.offerer, f.offerer), back.get(f.answerer, f.answerer))
                     for f in flows)

    def refusal_reasons(self, call_id: str, flows: tuple[Flow, ...]) -> list[str]:
        out = []
        nated = self.nated.get(call_id, {})
        hidden = sorted({ep.address for f in flows for ep in f.endpoints() if ep.address in nated})
        if hidden:
            out.append(f"{', '.join(hidden)} is a phone's private address behind a NAT (its signalling came "
                       f"from {nated[hidden[0]]}) and no ALG rewrote the SDP: the flow on the "
                       "wire uses the NAT's address (nat_translate = false: not keyed as seen)")
        natted = sorted({ep.address for f in flows for ep in f.endpoints() if ep.address in self.nat_public})
        if natted:
            out.append(f"{', '.join(natted)} is where peer {self.nat_public[natted[0]]} is seen through "
                       "a NAT: a SIP ALG rewrote the SDP to the NAT's address, while tunnel selectors need the "
                       "peer's own media address (turn the ALG off, or let the controller key without it)")
        return out

    # -- latching --------------------------------------------------------------------------------

    def keyed(self, call_id: str, sdp_flows: tuple[Flow, ...], flows: tuple[Flow, ...],
              oriented: list[tuple[Endpoint, Endpoint]]) -> None:
        """Remember where each keyed flow's media should come from, and check what already came."""
        self.sdp_flows[call_id] = sdp_flows
        for sf, f, (lo, re) in zip(sdp_flows, flows, oriented, strict=True):
            self.latch[(re.address, re.port)] = (call_id, sf.offerer if f.offerer == lo else sf.answerer, lo)
            keys = self.latch_keys.setdefault(call_id, [])
            keys.append((re.address, re.port))
            if re.address in self.nated.get(call_id, {}).values():  # the far phone's NAT: its port is a guess
                self.far_latch[(lo.address, lo.port)] = (call_id, re)
                keys.append((lo.address, lo.port))
            early = self.lan_last.get((re.address, re.port))
            if early is not None:
                self.lan_packet_latch(early[0], early[1], re.address, re.port, early[2])

    def lan_packet(self, src: str, sport: int, dst: str, dport: int, t: float) -> None:
        """UDP on the phones' side: what their media really comes from."""
        self.lan_last[(dst, dport)] = (src, sport, t)
        self.lan_last.move_to_end((dst, dport))
        while len(self.lan_last) > LAN_MEMORY_MAX or next(iter(self.lan_last.values()))[2] < t - LAN_MEMORY_S:
            self.lan_last.popitem(last=False)
        self.lan_packet_latch(src, sport, dst, dport, t)

    def lan_packet_latch(self, src: str, sport: int, dst: str, dport: int, t: float) -> None:
        """The first RTP of a keyed flow from the local side: does it come from where it was keyed?"""
        entry = self.latch.get((dst, dport))
        if entry is None:
            return
        call, sdp_ep, keyed = entry
        if keyed in self.latched.setdefault(call, set()):
            return
        self.latched[call].add(keyed)
        self.activity(call, t)
        finding = media_finding(sdp_ep.address, sdp_ep.port, src, sport)
        consistent = ipaddress.ip_address(src) == ipaddress.ip_address(keyed.address) and sport == keyed.port
        extra = {} if consistent else self._relatch(call, keyed, Endpoint(src, sport), sdp_ep, t)
        self.out.log("nat-media", call=call, t=t, sdp=str(sdp_ep), keyed=str(keyed), seen=f"{src}:{sport}",
                     nat=finding is not None, consistent=consistent,
                     findings=[finding.to_json()] if finding else [], **extra)

    def wan_clear_media(self, src: str, sport: int, dst: str, dport: int, t: float) -> None:
        """Clear media on the WAN to one of our keyed endpoints, from the NAT address the far phone
        was keyed at but another port: the far NAT changed the port (this side's half of latching)."""
        entry = self.far_latch.get((dst, dport))
        if entry is None:
            return
        call, keyed = entry
        if src != keyed.address or sport == keyed.port or keyed in self.latched.setdefault(call, set()):
            return
        self.latched[call].add(keyed)
        extra = self._relatch(call, keyed, Endpoint(src, sport), keyed, t)
        self.out.log("nat-media", call=call, t=t, sdp=str(keyed), keyed=str(keyed), seen=f"{src}:{sport}", nat=True,
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
        if not self.translate or seen.address != keyed.address or \
                (sdp_ep.address not in hidden and keyed.address not in hidden.values()):
            return {"reason": reason + " (it stays outside the SA)"}
        self.relatched.setdefault(call, {})[keyed] = seen
        # one re-key for RTP and RTCP, whose first packets come close together; the initiator waits
        # longer, so that the responder's child config for the new ports is there when asked
        self.relatch_due.setdefault(call, t + (0.5 if self.role_of(call) == "initiator" else 0.1))
        return {"reason": reason + ": re-keying with the port seen (latching)", "relatched": str(seen)}

    def due_relatches(self, now: float) -> list[str]:
        due = [c for c, t in self.relatch_due.items() if t <= now]
        for c in due:
            del self.relatch_due[c]
        return due

    def next_timer(self) -> float | None:
        return min(self.relatch_due.values(), default=None)

    def forget(self, call_id: str, rekeying: bool) -> None:
        for key in self.latch_keys.pop(call_id, ()):
            for table in (self.latch, self.far_latch):
                if key in table and table[key][0] == call_id:
                    del table[key]
        self.latched.pop(call_id, None)
        if not rekeying:
            for per_call in (self.nated, self.relatched, self.relatch_due, self.sdp_flows):
                per_call.pop(call_id, None)
