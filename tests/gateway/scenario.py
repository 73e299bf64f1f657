"""Two gateways and the SIP calls between their phones, for the core's unit tests.

gwa keys the phones in 192.0.2.0/24, gwb those in 203.0.113.0/24; both see every SIP message on
their WAN (as on the lab's path), each core is a :class:`~.harness.Harness`. :class:`Call` writes a
call's messages as IP packets; :class:`Pair` feeds them to both gateways and plays both charons, the
initiator's CHILD_SA showing up at the responder too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ipsecrtp.gateway.actions import Action, InstallChild, InstallPrekeyed, PermitChild, RemoveChild
from ipsecrtp.packet import UDP
from ipsecrtp.selectors import PeerConfig

from ..test_packet import ipv4, udp
from .harness import Harness, config

GWA, GWB = "198.51.100.1", "198.51.100.2"
NET_A, NET_B = "192.0.2.0/24", "203.0.113.0/24"
PHONE_A, PHONE_B, PHONE_B2 = "192.0.2.10", "203.0.113.20", "203.0.113.21"
RTP = (10000, 10199)
STRATEGIES = ("ike-per-call", "child-per-call", "speculative", "pre-keyed")
TEARDOWN = 1.5  # not the default (1.0), so that a test cannot pass by accident
MEDIA_TIMEOUT = 30.0


def peer(name: str, strategy: str) -> PeerConfig:
    """gwa's view of gwb (name "gwa") or gwb's view of gwa."""
    if name == "gwa":
        return PeerConfig("gwb", GWA, GWB, (NET_A,), (NET_B,), b"k" * 32, rtp_ports=RTP, strategy=strategy)
    return PeerConfig("gwa", GWB, GWA, (NET_B,), (NET_A,), b"k" * 32, rtp_ports=RTP, strategy=strategy)


def gateway(name: str, strategy: str, **kw) -> Harness:
    kw.setdefault("teardown_delay", TEARDOWN)
    kw.setdefault("media_timeout", MEDIA_TIMEOUT)
    # a dry-run backend: no per-flow policy routing, so the actions are the keying ones
    return Harness(config((peer(name, strategy),), name=name, **kw), backend="none (dry run)")


def sdp(addr: str, port: int, version: int = 1, extra: str = "") -> bytes:
    fam = "IP6" if ":" in addr else "IP4"
    return (f"v=0\r\no=- 1 {version} IN {fam} {addr}\r\ns=-\r\nc=IN {fam} {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\n{extra}").encode()


@dataclass
class Call:
    """One call's SIP messages, caller at ``caller``:``a_port`` calling the callee's phone(s)."""

    cid: str
    caller: str = PHONE_A
    callee: str = PHONE_B
    a_port: int = 10000
    b_port: int = 10100
    from_tag: str = "a1"
    cseq: int = 1  # the last CSeq the caller used
    version: int = 1  # the caller's SDP version
    proxy: str | None = None  # signalling goes through this proxy (each phone talks to it only)
    _branches: int = field(default=0, repr=False)

    def _branch(self) -> str:
        self._branches += 1
        return f"z9hG4bK-{self.cid}-{self.from_tag}-{self._branches}"

    def _msg(self, start: str, cseq: str, branch: str, *, to_tag: str | None, body: bytes,
             by_callee: bool = False, via: str | None = None) -> bytes:
        me, you = (self.callee, self.caller) if by_callee else (self.caller, self.callee)
        frm = f"<sip:alice@{self.caller}>;tag={self.from_tag}"
        to = f"<sip:bob@{self.callee}>" + (f";tag={to_tag}" if to_tag else "")
        if by_callee:
            frm, to = f"<sip:bob@{self.callee}>;tag={to_tag}", f"<sip:alice@{self.caller}>;tag={self.from_tag}"
        lines = [start, f"Via: SIP/2.0/UDP {via or me}:5060;branch={branch}", f"From: {frm}", f"To: {to}",
                 f"Call-ID: {self.cid}", f"CSeq: {cseq}", f"Contact: <sip:{me}:5060>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ipv4(UDP, udp(5060, 5060, ("\r\n".join(lines) + "\r\n\r\n").encode() + body), me,
                    self.proxy or you)

    def _response(self, status: int, reason: str, cseq: str, branch: str, to_tag: str | None, body: bytes,
                  phone: str | None = None) -> bytes:
        """A response to a request of the caller's, from ``phone`` (a fork) or the callee."""
        frm = f"<sip:alice@{self.caller}>;tag={self.from_tag}"
        to = f"<sip:bob@{self.callee}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [f"SIP/2.0 {status} {reason}", f"Via: SIP/2.0/UDP {self.caller}:5060;branch={branch}",
                 f"From: {frm}", f"To: {to}", f"Call-ID: {self.cid}", f"CSeq: {cseq}"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        src = self.proxy or phone or self.callee
        return ipv4(UDP, udp(5060, 5060, ("\r\n".join(lines) + "\r\n\r\n").encode() + body), src, self.caller)

    # -- the INVITE transaction ------------------------------------------------------------------

    def invite(self) -> bytes:
        self.invite_branch = self._branch()
        return self._msg(f"INVITE sip:bob@{self.callee} SIP/2.0", "1 INVITE", self.invite_branch, to_tag=None,
                         body=sdp(self.caller, self.a_port))

    def provisional(self, status: int = 180, to_tag: str = "b1", media: tuple[str, int] | None = None) -> bytes:
        """180 Ringing, or 183 with early media at ``media`` (a fork's phone and port)."""
        body = sdp(*media) if media else b""
        return self._response(status, "Ringing" if status == 180 else "Session Progress", "1 INVITE",
                              self.invite_branch, to_tag, body, phone=media[0] if media else None)

    def ok(self, to_tag: str = "b1", media: tuple[str, int] | None = None) -> bytes:
        """The INVITE's 200 with the answer (by default the callee's phone and port)."""
        addr, port = media or (self.callee, self.b_port)
        return self._response(200, "OK", "1 INVITE", self.invite_branch, to_tag, sdp(addr, port), phone=addr)

    def final(self, status: int, to_tag: str = "b1") -> bytes:
        reason = {486: "Busy Here", 487: "Request Terminated", 603: "Decline"}.get(status, "Failed")
        return self._response(status, reason, "1 INVITE", self.invite_branch, to_tag, b"")

    def ack(self, to_tag: str = "b1") -> bytes:
        return self._msg(f"ACK sip:bob@{self.callee} SIP/2.0", "1 ACK", self._branch(), to_tag=to_tag, body=b"")

    def cancel(self) -> bytes:
        return self._msg(f"CANCEL sip:bob@{self.callee} SIP/2.0", "1 CANCEL", self.invite_branch, to_tag=None,
                         body=b"")

    # -- in the dialog ---------------------------------------------------------------------------

    def bye(self, to_tag: str = "b1", by_callee: bool = False) -> bytes:
        if by_callee:
            return self._msg(f"BYE sip:alice@{self.caller} SIP/2.0", "1 BYE", self._branch(), to_tag=to_tag,
                             body=b"", by_callee=True)
        self.cseq += 1
        return self._msg(f"BYE sip:bob@{self.callee} SIP/2.0", f"{self.cseq} BYE", self._branch(), to_tag=to_tag,
                         body=b"")

    def reinvite(self, to_tag: str = "b1", addr: str | None = None, port: int | None = None,
                 extra: str = "") -> bytes:
        """The caller's re-INVITE offering ``addr``:``port`` (0.0.0.0: hold, RFC 2543 style)."""
        self.cseq += 1
        self.version += 1
        self.reinvite_branch = self._branch()
        body = sdp(addr or self.caller, port or self.a_port, self.version, extra)
        return self._msg(f"INVITE sip:bob@{self.callee} SIP/2.0", f"{self.cseq} INVITE", self.reinvite_branch,
                         to_tag=to_tag, body=body)

    def reinvite_ok(self, to_tag: str = "b1", port: int | None = None, extra: str = "") -> bytes:
        body = sdp(self.callee, port or self.b_port, 2, extra)
        return self._response(200, "OK", f"{self.cseq} INVITE", self.reinvite_branch, to_tag, body)

    def reinvite_ack(self, to_tag: str = "b1") -> bytes:
        return self._msg(f"ACK sip:bob@{self.callee} SIP/2.0", f"{self.cseq} ACK", self._branch(), to_tag=to_tag,
                         body=b"")

    def callee_reinvite(self, to_tag: str = "b1", port: int | None = None) -> bytes:
        """The callee's re-INVITE (it offers now: the caller answers). Its CSeq is the callee's own,
        not 1: the dialog tracker takes a response with the INVITE's CSeq for the INVITE's."""
        self.callee_branch = self._branch()
        return self._msg(f"INVITE sip:alice@{self.caller} SIP/2.0", "7 INVITE", self.callee_branch, to_tag=to_tag,
                         body=sdp(self.callee, port or self.b_port, 3), by_callee=True)

    def callee_reinvite_ok(self, to_tag: str = "b1") -> bytes:
        """The caller's 200 to it, with its answer."""
        lines = ["SIP/2.0 200 OK", f"Via: SIP/2.0/UDP {self.callee}:5060;branch={self.callee_branch}",
                 f"From: <sip:bob@{self.callee}>;tag={to_tag}", f"To: <sip:alice@{self.caller}>;tag={self.from_tag}",
                 f"Call-ID: {self.cid}", "CSeq: 7 INVITE", "Content-Type: application/sdp"]
        body = sdp(self.caller, self.a_port, self.version + 1)
        lines.append(f"Content-Length: {len(body)}")
        return ipv4(UDP, udp(5060, 5060, ("\r\n".join(lines) + "\r\n\r\n").encode() + body), self.caller,
                    self.callee)

    def answered(self) -> list[bytes]:
        return [self.invite(), self.provisional(), self.ok(), self.ack()]


def rtp(src: str, sport: int, dst: str, dport: int) -> bytes:
    return ipv4(UDP, udp(sport, dport, b"\x80" + bytes(11)), src, dst)


class Pair:
    """gwa and gwb seeing the same SIP, each with a charon that says yes (unless a test answers)."""

    def __init__(self, strategy: str, **kw) -> None:
        self.strategy = strategy
        self.a, self.b = gateway("gwa", strategy, **kw), gateway("gwb", strategy, **kw)
        self.both = (self.a, self.b)

    def sip(self, t: float, *packets: bytes) -> None:
        for p in packets:
            for gw in self.both:
                gw.on_packet(t, p)

    def other(self, gw: Harness) -> Harness:
        return self.b if gw is self.a else self.a

    def yes(self, now: float) -> None:
        """Both charons answer all that was asked; an initiator's CHILD_SA comes up (and goes) at the
        responder too, as charon's child-updown there reports it."""
        while any(gw.pending for gw in self.both):
            for gw in self.both:
                while gw.pending:
                    a = gw.pending[0]
                    was_up = isinstance(a, RemoveChild) and a.child in gw.up
                    gw.answer(a, now)
                    if isinstance(a, InstallChild):
                        self.other(gw).responder_up(now, a)
                    elif was_up:
                        install = next(i for i in gw.of(InstallChild) if i.child == a.child)
                        if install.child in self.other(gw).up:
                            self.other(gw).responder_down(now, install)

    def run_until(self, now: float) -> None:
        """Timers of both gateways up to ``now``, each answered by its charon at once."""
        while True:
            due = [(nt, gw) for gw in self.both if (nt := gw.core.next_timer()) is not None and nt <= now]
            if not due:
                return
            nt, gw = min(due, key=lambda x: x[0])
            gw.run_until(nt)
            self.yes(nt)

    def call(self, call: Call, t: float = 1.0, answer_at: float = 1.2) -> None:
        """INVITE at ``t``, 180 and 200 at ``answer_at``, ACK; charon says yes throughout."""
        self.sip(t, call.invite())
        self.yes(t)
        self.sip(answer_at, call.provisional(), call.ok())
        self.yes(answer_at)
        self.sip(answer_at + 0.01, call.ack())
        self.yes(answer_at + 0.01)


def keying_actions(gw: Harness) -> list[Action]:
    """What set up keying at this gateway (child installs, child configs, pre-keyed SAs)."""
    return [a for _, a in gw.actions if isinstance(a, (InstallChild, PermitChild, InstallPrekeyed))]
