"""Property test of the gateway core under hostile input (issue 19): any sequence of SIP messages, well
formed, odd or mutated byte by byte, over UDP or TCP (gaps, SYNs, FINs), from the phones or an attacker,
with charon's answers and events and time passing, on small caps so that every cap is reached.

Whatever happens: nothing escapes the core; every SA asked of charon (InstallChild, PermitChild,
InstallPrekeyed) keys only flows between this gateway's and its peer's media prefixes on RTP ports;
and what the core holds stays within the caps (dialogs in all and per source, forks, remembered
transactions, TCP directions and their bytes, the timer heap). tests/gateway/test_core_properties.py
covers the calls' own invariants on well-formed calls (removals, names); this one is about input."""

from __future__ import annotations

import ipaddress
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecrtp.gateway.actions import ChildUpDown, EventsLost, InstallChild, InstallPrekeyed, Log, PermitChild
from ipsecrtp.hostile_inputs import gateway_config, message, tcp, udp
from ipsecrtp.selectors import parse_ts_range
from ipsecrtp.sip.limits import CAPS, Limits

from .harness import Harness

LOCAL, REMOTE, RTP = "192.0.2.0/24", "203.0.113.0/24", (10000, 19999)
LIMITS = Limits(max_message_bytes=3000, max_headers=24, max_vias=4, max_media_lines=3, max_sdp_lines=24,
                max_ports_per_stream=2, max_tcp_connections=3, max_tcp_buffered_bytes=6000, max_dialogs=6,
                max_dialogs_per_source=4, max_forks=3, max_reinvites_per_second=2, max_dialog_transactions=8)
STRATEGIES = ("child-per-call", "speculative", "pre-keyed", "ike-per-call")
SOURCES = ("192.0.2.10", "203.0.113.20", "203.0.113.66", "198.18.0.9")  # phones, an attacker, a stranger
MEDIA = ("192.0.2.10", "192.0.2.11", "203.0.113.20", "198.18.0.5", "0.0.0.0", "2001:db8::1", "10.0.0.5")
PORTS = (10000, 10002, 19998, 19999, 20000, 5060, 0, 9999)
COUNTS = (1, 1, 1, 2, 3, 65000)
KINDS = ("invite", "invite", "invite", "18x", "18x", "200", "200", "200", "ack", "bye", "cancel", "487",
         "reinvite", "reinvite", "update", "prack", "200-re", "200-re", "info", "garbage", "flood", "fork")
# what an example's messages mostly are: calls with everything else mixed in, or one attack at a time
PROFILES = {"mixed": KINDS, "flood": ("flood",) * 12 + KINDS, "forks": ("fork",) * 4 + ("invite",),
            "reinvites": ("reinvite", "200-re", "update", "info", "invite", "200", "ack", "bye")}
TOKENS = (b"0", b"4294967296", b"99999999999999999999", b"\xc2\xb2", b"", b" ", b";", b",", b"<", b'"',
          b"\r\n", b"\r\n\r\n", b"/65000", b"m=audio 10000 RTP/AVP 0\r\n", b"Via: SIP/2.0/UDP x;branch=z9hG4bKq\r\n")


class Draw:
    """Decodes one integer into choices (hypothesis draws and shrinks flat integers far faster)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, options):
        self.n, k = divmod(self.n, len(options))
        return options[k]

    def int(self, most: int) -> int:
        self.n, k = divmod(self.n, most)
        return k


def sdp(d: Draw, good: str | None = None) -> bytes:
    """An SDP: with ``good`` (an address) one a phone would send, else anything the choices make."""
    streams = 1 if good else d((1, 1, 1, 2, 4))
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-"]
    addr = good or d(MEDIA)
    lines.append(f"c=IN {'IP6' if ':' in addr else 'IP4'} {addr}")
    lines.append("t=0 0")
    for _ in range(streams):
        count = d((1, 1, 2)) if good else d(COUNTS)
        port = d((10000, 10002, 12000, 12100)) if good else d(PORTS)
        lines.append(f"m=audio {port}{f'/{count}' if count != 1 else ''} RTP/AVP 0")
        extra = d(("", "a=rtcp-mux", "a=rtcp:10001", "a=rtcp:5061 IN IP4 198.18.0.5", "a=sendonly",
                   "c=IN IP4 203.0.113.21", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x"))
        if extra and not (good and "5061" in extra):
            lines.append(extra)
    return ("\r\n".join(lines) + "\r\n").encode()


def sip(d: Draw, kinds: tuple[str, ...] = KINDS) -> bytes:
    """One message of one of three calls (or not quite a message): mostly what a phone would send, its
    SDP naming its own side, else any choice of parts."""
    kind, cid, tag = d(kinds), d(("c1", "c2", "c3")), d(("b1", "b2", "b3", "b4"))
    cseq, branch = d((1, 2, 3, 7)), d(("", "", "z9hG4bKx", "z9hG4bKy"))
    good = d((True, True, False))
    side = d(("192.0.2.10", "203.0.113.20"))  # the offer and the answer from either side, or both from one
    offers = kind in ("invite", "18x", "200", "reinvite", "update", "prack", "200-re")
    body = sdp(d, side if good else None) if (good and offers) or d((True, False)) else b""
    odd = ((), ("Contact: <sip:a@x>, <sip:b@y>",), ("Session-Expires: 1",), tuple(f"X-{k}: v" for k in range(30)))
    vias, extra = (1, ()) if good else (d((1, 2, 6)), d(odd))
    req = {"invite": ("INVITE", None), "ack": ("ACK", tag), "bye": ("BYE", tag), "cancel": ("CANCEL", None),
           "reinvite": ("INVITE", tag), "update": ("UPDATE", tag), "prack": ("PRACK", tag), "info": ("INFO", tag)}
    if kind == "garbage":
        return bytes(d.int(256) for _ in range(d((0, 5, 40))))
    if kind == "flood":  # never answered, a Call-ID of its own each time (beyond the dialog caps)
        return message("INVITE sip:bob@203.0.113.20 SIP/2.0", f"f{d.int(12)}", "1 INVITE", body=body)
    if kind == "fork":  # one more To tag answering early
        return message("SIP/2.0 183 Session Progress", cid, "1 INVITE", to_tag=f"k{d.int(6)}", body=body)
    if kind in req:
        method, to_tag = req[kind]
        number = 1 if kind in ("invite", "cancel", "ack") else cseq + 1
        return message(f"{method} sip:bob@203.0.113.20 SIP/2.0", cid, f"{number} {method}", to_tag=to_tag,
                       branch=branch, vias=vias, extra=extra, body=body)
    status = {"18x": d((180, 183)), "200": 200, "487": d((487, 486, 408, 481)), "200-re": 200}[kind]
    cseq_s = f"{cseq + 1} {d(('INVITE', 'UPDATE', 'PRACK', 'BYE'))}" if kind == "200-re" else "1 INVITE"
    reason = {180: "Ringing", 183: "Session Progress", 200: "OK"}.get(status, "Failed")
    return message(f"SIP/2.0 {status} {reason}", cid, cseq_s, to_tag=tag, branch=branch, vias=vias, extra=extra,
                   body=body)


def mutate(d: Draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(d((0, 0, 0, 0, 1, 3))):
        pos = d.int(len(buf) + 1)
        op = d(("flip", "insert", "delete", "duplicate", "truncate"))
        if op == "flip" and buf:
            buf[pos % len(buf)] ^= 1 << d.int(8)
        elif op == "insert":
            buf[pos:pos] = d(TOKENS)
        elif op == "delete":
            del buf[pos:pos + 1 + d.int(16)]
        elif op == "duplicate":
            buf[pos:pos] = buf[pos:pos + 1 + d.int(200)]
        else:
            del buf[pos:]
    return bytes(buf)


class World:
    def __init__(self, strategy: str, profile: str = "mixed") -> None:
        self.gw = Harness(gateway_config(strategy, LIMITS), backend="none (dry run)")
        self.kinds = PROFILES[profile]
        self.now = 1.0
        self.seq: dict[int, int] = {}  # TCP source port -> next sequence number of its stream

    def packet(self, d: Draw) -> None:
        src = d(SOURCES + ("203.0.113.66",) * 4 if self.kinds is PROFILES["flood"] else SOURCES)
        dst = "203.0.113.20" if src.startswith("192.0.2.") else "192.0.2.10"
        data = mutate(d, sip(d, self.kinds))
        if d(("udp", "udp", "udp", "tcp")) == "udp" or len(data) > 60000:
            self.gw.on_packet(self.now, udp(src, dst, data))
            return
        port = d((40001, 40002, 40003, 40004, 40005))
        how = d(("next", "next", "gap", "syn", "fin", "split"))
        seq = self.seq.get(port, 1)
        if how == "syn":
            self.gw.on_packet(self.now, tcp(src, dst, port, 0, b"", flags=0x02))
            self.seq[port] = 1
        elif how == "gap":
            self.gw.on_packet(self.now, tcp(src, dst, port, seq + 1 + d.int(5000), data))
        else:
            parts = [data[: len(data) // 2], data[len(data) // 2:]] if how == "split" else [data]
            for part in parts:
                self.gw.on_packet(self.now, tcp(src, dst, port, seq, part, flags=0x19 if how == "fin" else 0x18))
                seq += len(part)
            self.seq[port] = seq

    def charon(self, d: Draw) -> None:
        gw = self.gw
        what = d(("answer", "answer", "answer", "drop", "lost"))
        if what == "answer" and gw.pending:
            gw.answer(gw.pending[d.int(len(gw.pending))], self.now, ok=d((True, True, False)), up=d((None, False)))
        elif what == "drop" and gw.up:
            child = sorted(gw.up)[d.int(len(gw.up))]
            gw.charon(self.now, ChildUpDown(False, "peer", gw.up.pop(child)))
        elif what == "lost":
            gw.charon(self.now, EventsLost("session broke"))

    def step(self, n: int) -> None:
        d = Draw(n)
        kind = d(("sip", "sip", "sip", "sip", "charon", "time"))
        if kind == "sip":
            self.packet(d)
        elif kind == "charon":
            self.charon(d)
        else:
            self.now += d((0.001, 0.3, 1.5, 40.0, 200.0))
            self.gw.run_until(self.now)
        self.now += 0.001


def within(ts: str, prefix: str) -> bool:
    net, proto, ports = parse_ts_range(ts)
    n, p = ipaddress.ip_network(net), ipaddress.ip_network(prefix)
    return proto == 17 and ports is not None and RTP[0] <= ports[0] <= ports[1] <= RTP[1] and \
        n.version == p.version and n.subnet_of(p)  # type: ignore[arg-type]


def check_keyed_space(gw: Harness) -> None:
    for a in gw.of(InstallChild) + gw.of(PermitChild):
        assert a.local_ts and a.remote_ts, a
        assert all(within(t, LOCAL) for t in a.local_ts), a
        assert all(within(t, REMOTE) for t in a.remote_ts), a
    for a in gw.of(InstallPrekeyed):
        for lo, re in a.pairs:
            assert within(f"{lo.address}/32[udp/{lo.port}]", LOCAL), a
            assert within(f"{re.address}/32[udp/{re.port}]", REMOTE), a


def check_caps(gw: Harness) -> None:
    tracker, ex = gw.core.tracker, gw.core.extractor
    assert len(tracker.dialogs) <= LIMITS.max_dialogs
    per_source = Counter(tracker.guard.source_of.values())
    assert all(n <= LIMITS.max_dialogs_per_source for n in per_source.values()), per_source
    assert set(tracker.guard.source_of) == set(tracker.dialogs)  # every dialog counted, nothing else
    for d in tracker.dialogs.values():
        assert len(d.legs) + len(d.extra) <= LIMITS.max_forks
        assert len(d.seen_requests) + len(d.seen_responses) <= LIMITS.max_dialog_transactions
    assert ex.connections <= LIMITS.max_tcp_connections
    assert 0 <= ex.buffered <= LIMITS.max_tcp_buffered_bytes
    assert ex.buffered == sum(direction.buffered for direction in ex._tcp.values())
    assert len(tracker._timers) <= 2 * len(tracker.dialogs) + 64 + 2 * 32
    caps = {a.fields["cap"] for _, a in gw.actions if isinstance(a, Log) and a.event == "cap-hit"}
    assert caps <= set(CAPS), caps


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(STRATEGIES), profile=st.sampled_from(sorted(PROFILES)),
       steps=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40))
def test_hostile_sequences_keep_the_core_whole_keyed_within_bounds_and_capped(strategy, profile, steps):
    w = World(strategy, profile)
    for n in steps:
        w.step(n)
        check_caps(w.gw)
    check_keyed_space(w.gw)
    w.now += 400.0
    w.gw.yes(w.now)
    w.gw.run_until(w.now)
    check_caps(w.gw)
    check_keyed_space(w.gw)
