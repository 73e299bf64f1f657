"""Per-call setup timelines, RFC 6076 metrics, IKE round trips and post-dial-delay budgets. Pure.

A :class:`CallTimeline` collects timestamps from what one gateway saw (SIP on the wire, IKE
packets on the wire, charon's child-updown, media on the wire); :meth:`CallTimeline.metrics`
derives:

- SRD, Session Request Delay (RFC 6076 §4.1): INVITE to the first non-100 provisional
  response, or to the final response when there is none;
- SDD, Session Disconnect Delay (RFC 6076 §4.5): BYE to its response;
- keying time and the IKE exchanges in it (request/response pairs, each with its RTT);
- the post-answer gap: from the 2xx (or the answer, if earlier) to the first moment media is
  protected (CHILD_SA installed on this gateway), and the RTP/RTCP packets of the call seen in
  clear on the WAN in that interval;
- what keying adds to SRD: ipsecrtp never holds signalling, so the only way keying can delay
  SRD is by slowing the network; the bench measures it against a run without keying.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field, fields

IKE_EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}


@dataclass(frozen=True)
class IkePacket:
    time: float
    exchange: str
    response: bool
    initiator: bool  # sent by the original initiator of the IKE_SA
    msgid: int
    spi_i: int
    src: str

    @property
    def key(self) -> tuple[int, int, bool]:
        """Identifies an exchange: the IKE_SA, the message id and which side asked."""
        return self.spi_i, self.msgid, self.initiator ^ self.response


def parse_ike(payload: bytes, port: int, t: float, src: str) -> IkePacket | None:
    """An IKEv2 header from a UDP payload (port 4500 carries a 4-byte zero marker, RFC 3948)."""
    if port == 4500:
        if payload[:4] != b"\0\0\0\0":
            return None  # ESP-in-UDP
        payload = payload[4:]
    if len(payload) < 28:
        return None
    spi_i, _spi_r, _np, version, exch, flags, msgid = struct.unpack_from("!QQBBBBI", payload)
    if version >> 4 != 2 or exch not in IKE_EXCHANGES:
        return None
    return IkePacket(t, IKE_EXCHANGES[exch], bool(flags & 0x20), bool(flags & 0x08), msgid, spi_i, src)


@dataclass(frozen=True)
class IkeExchange:
    exchange: str
    request: float
    response: float | None  # None: no response seen (lost, or still outstanding)
    retransmissions: int

    @property
    def rtt_ms(self) -> float | None:
        return None if self.response is None else (self.response - self.request) * 1000.0


def pair_exchanges(packets: list[IkePacket]) -> list[IkeExchange]:
    """Request/response pairs in time order; repeated requests count as retransmissions."""
    reqs: dict[tuple, list] = {}
    order: list[tuple] = []
    for p in sorted(packets, key=lambda p: p.time):
        k = p.key
        if not p.response:
            if k in reqs:
                reqs[k][2] += 1
            else:
                reqs[k] = [p.exchange, p.time, 0, None]
                order.append(k)
        elif k in reqs and reqs[k][3] is None:
            reqs[k][3] = p.time
    return [IkeExchange(reqs[k][0], reqs[k][1], reqs[k][3], reqs[k][2]) for k in order]


@dataclass
class CallTimeline:
    call_id: str
    gateway: str = ""
    role: str = ""  # initiator / responder / unkeyed
    strategy: str = ""
    invite: float | None = None
    first_provisional: float | None = None  # any 1xx, 100 included
    first_18x: float | None = None  # first non-100 provisional
    answer_sdp: float | None = None  # the message that carried the SDP answer
    final: float | None = None  # final response to the INVITE
    final_status: int | None = None
    ack: float | None = None
    keying_started: float | None = None  # this gateway asked charon (initiator) / saw the answer
    sa_up: float | None = None  # child-updown up, on this gateway
    first_rtp: float | None = None  # first cleartext RTP/RTCP packet of the call after the answer
    first_esp: float | None = None  # first ESP packet with one of the call's SPIs
    clear_after_answer: int = 0  # cleartext RTP/RTCP packets of the call between answer and first ESP
    # cleartext RTP/RTCP this gateway sent after the call had been protected: an SA lost mid-call with
    # protect = opportunistic (with required the data plane keeps it back: dropped_clear)
    clear_after_protection: int = 0
    dropped_clear: int = 0  # RTP/RTCP of the call kept from the WAN (protect = required) before/without its SA
    dropped_after_end: int = 0  # of those, sent after the dialog ended (trailing media, not audio lost)
    bye: float | None = None
    bye_response: float | None = None
    sa_down: float | None = None
    ended: float | None = None
    end_reason: str | None = None
    ike: list[IkePacket] = field(default_factory=list)

    def metrics(self) -> dict:
        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000.0, 3)

        srd_end = self.first_18x if self.first_18x is not None else self.final
        answered = self.final if self.final_status is not None and 200 <= self.final_status < 300 else None
        exchanges = pair_exchanges(self.ike)
        protected = self.sa_up
        gap = None
        if answered is not None and protected is not None:
            gap = round(max(0.0, protected - answered) * 1000.0, 3)
        rtts = [round(x.rtt_ms, 3) for x in exchanges if x.rtt_ms is not None]
        return {
            "srd_ms": ms(self.invite, srd_end),
            "answer_ms": ms(self.invite, answered),  # INVITE to 2xx: the ringing the caller heard
            "sdd_ms": ms(self.bye, self.bye_response),
            "keying_ms": ms(self.keying_started, self.sa_up),
            "ike_exchanges": [x.exchange for x in exchanges],
            "ike_rtts_ms": rtts,
            "ike_retransmissions": sum(x.retransmissions for x in exchanges),
            "sa_before_answer": (protected is not None and answered is not None and protected <= answered),
            "post_answer_gap_ms": gap,
            "clear_rtp_after_answer": self.clear_after_answer,
            "clear_rtp_after_protection": self.clear_after_protection,
            "rtp_dropped_before_protection": self.dropped_clear - self.dropped_after_end,
            "rtp_dropped_after_end": self.dropped_after_end,
            "first_esp_after_answer_ms": ms(answered, self.first_esp),
        }

    def to_json(self) -> dict:
        # shallow: every field but ``ike`` is a number or a string; asdict's deep copy of each made this
        # a quarter of a millisecond per call, paid at every call's end (and every eviction in a flood)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ike"] = [asdict(p) for p in self.ike]
        d["metrics"] = self.metrics()
        return d


def update_timeline(timelines: dict[str, CallTimeline], ev, gateway: str = "") -> CallTimeline | None:
    """Apply one dialog event (``SipSeen``, ``MediaNegotiated``, ...) to the calls' timelines."""
    from .sip.events import DialogTerminated, MediaChanged, MediaNegotiated, SipSeen

    tl = timelines.get(ev.call_id)
    if isinstance(ev, SipSeen):
        if tl is None:
            if ev.status is None and ev.method == "INVITE":
                tl = timelines[ev.call_id] = CallTimeline(ev.call_id, gateway=gateway, invite=ev.time)
            return tl
        if ev.status is None:
            if ev.method == "ACK" and tl.ack is None:
                tl.ack = ev.time
            elif ev.method == "BYE" and tl.bye is None:
                tl.bye = ev.time
        elif ev.method == "INVITE" and tl.final is None:
            if ev.status < 200:
                tl.first_provisional = tl.first_provisional or ev.time
                if ev.status > 100 and tl.first_18x is None:
                    tl.first_18x = ev.time
            else:
                tl.final, tl.final_status = ev.time, ev.status
        elif ev.method == "BYE" and ev.status >= 200 and tl.bye_response is None:
            tl.bye_response = ev.time
    elif tl is None:
        return None
    elif isinstance(ev, (MediaNegotiated, MediaChanged)) and tl.answer_sdp is None:
        tl.answer_sdp = ev.time
    elif isinstance(ev, DialogTerminated):
        tl.ended, tl.end_reason = ev.time, ev.reason
    return tl


# --- budgets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    name: str
    pdd_mean_s: float  # post-dial (post-selection) delay, mean
    pdd_p95_s: float  # ... 95th percentile
    gap_ms: float  # how long after answer media may wait for protection
    source: str
    verified: bool  # False: quoted from memory, not checked against the recommendation's text


_GAP_SOURCE = ("ITU-T G.114 (05/2003): one-way delay up to 150 ms keeps most applications transparent; "
               "a longer wait for protected media after answer loses or delays the first words")
BUDGETS = {
    "e721-local": Budget("e721-local", 3.0, 6.0, 150.0,
                         "ITU-T E.721 (05/1999) post-selection delay, local connections; " + _GAP_SOURCE, False),
    "e721-toll": Budget("e721-toll", 5.0, 8.0, 150.0,
                        "ITU-T E.721 (05/1999) post-selection delay, toll connections; " + _GAP_SOURCE, False),
    "e721-international": Budget("e721-international", 8.0, 11.0, 150.0,
                                 "ITU-T E.721 (05/1999) post-selection delay, international; " + _GAP_SOURCE,
                                 False),
}

# round trips each way of keying costs before the first protected packet (design discussion; RFC 2409
# main mode 6 messages + quick mode 3, aggressive 3 + 3; RFC 7296 IKE_SA_INIT + IKE_AUTH; CREATE_CHILD_SA)
KEYING_RTTS = {
    "IKEv1 main + quick mode": 4.5,
    "IKEv1 aggressive + quick mode": 3.0,
    "IKEv2 (IKE_SA_INIT + IKE_AUTH)": 2.0,
    "IKEv2 CREATE_CHILD_SA on an existing IKE_SA": 1.0,
    "pre-keyed (keys known in advance)": 0.0,
}


def what_if(rtt_ms: float, budget: Budget, overhead_ms: float = 0.0, ring_ms: float | None = None) -> list[dict]:
    """Cost of each keying scheme at this RTT and whether it fits the post-answer budget.

    ``overhead_ms``: processing per exchange (measured); ``ring_ms``: time between offer and
    answer, which speculative keying can hide."""
    rows = []
    for scheme, rtts in KEYING_RTTS.items():
        exchanges = int(rtts + 0.5)
        cost = rtts * rtt_ms + exchanges * overhead_ms
        gap = cost if ring_ms is None else max(0.0, cost - ring_ms)
        rows.append({"scheme": scheme, "rtts": rtts, "cost_ms": round(cost, 1), "gap_ms": round(gap, 1),
                     "fits_at_answer": cost <= budget.gap_ms, "fits_speculative": gap <= budget.gap_ms})
    return rows


def verdict(metrics: dict, budget: Budget) -> dict:
    """Per-call verdict: post-dial delay (SRD) against the budget, and the post-answer gap."""
    srd = metrics.get("srd_ms")
    gap = metrics.get("post_answer_gap_ms")
    out = {"budget": budget.name,
           "pdd_ok": None if srd is None else srd <= budget.pdd_mean_s * 1000.0,
           "gap_ok": None if gap is None else gap <= budget.gap_ms,
           # RTP the phones sent before the SA was up crossed the WAN in clear (kernel-libipsec
           # routes only keyed flows into the tunnel; a kernel trap policy would drop it instead)
           "protected_from_first_packet": metrics.get("clear_rtp_after_answer", 0) == 0}
    oks = [v for v in (out["pdd_ok"], out["gap_ok"]) if v is not None]
    out["ok"] = all(oks) if oks else None
    return out


_MARKS = [("invite", "INVITE"), ("first_provisional", "first provisional"), ("first_18x", "first 18x"),
          ("answer_sdp", "SDP answer"), ("final", "final response"), ("ack", "ACK"),
          ("keying_started", "keying started"), ("sa_up", "CHILD_SA installed"), ("first_rtp", "first RTP in clear"),
          ("first_esp", "first ESP of the call"), ("bye", "BYE"), ("bye_response", "BYE answered"),
          ("ended", "dialog ended"), ("sa_down", "CHILD_SA removed")]


def format_timeline(tl: dict) -> list[str]:
    """Human-readable lines for one logged timeline (times relative to the INVITE)."""
    t0 = tl.get("invite")
    out = [f"{tl.get('gateway') or '?'}: {tl.get('role') or 'unkeyed'} ({tl.get('strategy') or '-'}), "
           f"ended {tl.get('end_reason')}"]
    rows = [(tl[k], label) for k, label in _MARKS if tl.get(k) is not None]
    rows += [(p["time"], f"IKE {p['exchange']} {'response' if p['response'] else 'request'} from {p['src']}")
             for p in tl.get("ike", [])]
    for t, label in sorted(rows):
        extra = f" {tl.get('final_status')}" if label == "final response" else ""
        out.append(f"  {(t - t0) * 1000 if t0 else 0:>10.1f} ms  {label}{extra}")
    m = tl.get("metrics", {})
    out.append(f"  SRD {m.get('srd_ms')} ms, SDD {m.get('sdd_ms')} ms, keying {m.get('keying_ms')} ms in "
               f"{len(m.get('ike_exchanges', []))} IKE exchanges {m.get('ike_exchanges')} "
               f"(RTTs {m.get('ike_rtts_ms')} ms, {m.get('ike_retransmissions')} retransmitted)")
    out.append(f"  post-answer gap {m.get('post_answer_gap_ms')} ms, {m.get('clear_rtp_after_answer')} RTP/RTCP "
               f"packets in clear after the answer, SA up before the answer: {m.get('sa_before_answer')}")
    v = tl.get("verdict")
    if v:
        out.append(f"  verdict ({v['budget']}): PDD {'ok' if v['pdd_ok'] else 'over' if v['pdd_ok'] is False else '-'},"
                   f" gap {'ok' if v['gap_ok'] else 'over' if v['gap_ok'] is False else '-'},"
                   f" protected from the first packet: {v['protected_from_first_packet']}")
    return out
