"""Calls both ends already protect with SRTP (issue 17 item 4): per peer ``srtp = "protect" | "skip"``.

``skip`` leaves a call whose every stream is SRTP on both sides unkeyed and says so
(``srtp-end-to-end``, counted); SDES keys seen in clear SIP are keyed all the same; ``protect``
(the default) keys as any call; a call that is not SRTP end to end is keyed whatever the setting."""

from __future__ import annotations

import dataclasses

import pytest

from ipsecrtp.gateway.actions import InstallChild, RemoveChild

from .harness import Harness, config
from .scenario import MEDIA_TIMEOUT, PHONE_A, PHONE_B, STRATEGIES, TEARDOWN, Call, Pair, keying_actions, peer

CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
FP = "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3B:E3:65:F5:1B:B1\r\n"
SDES = ("RTP/SAVP", CRYPTO)
DTLS = ("UDP/TLS/RTP/SAVP", FP + "a=setup:actpass\r\n")
PLAIN = ("RTP/AVP", "")


def body(addr: str, port: int, kind: tuple[str, str], version: int = 1) -> bytes:
    proto, extra = kind
    return (f"v=0\r\no=- 1 {version} IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} {proto} 0\r\n{extra}").encode()


@dataclasses.dataclass
class SrtpCall(Call):
    """A call whose offer and answer use the given profiles (proto, attribute lines)."""

    offer: tuple[str, str] = SDES
    answer: tuple[str, str] = SDES

    def invite(self) -> bytes:
        self.invite_branch = self._branch()
        return self._msg(f"INVITE sip:bob@{self.callee} SIP/2.0", "1 INVITE", self.invite_branch, to_tag=None,
                         body=body(self.caller, self.a_port, self.offer))

    def ok(self, to_tag: str = "b1", media=None) -> bytes:
        return self._response(200, "OK", "1 INVITE", self.invite_branch, to_tag,
                              body(self.callee, self.b_port, self.answer), phone=self.callee)

    def reinvite_plain(self) -> tuple[bytes, bytes]:
        """A re-INVITE that drops SRTP on the same ports, and its 200."""
        self.cseq += 1
        self.reinvite_branch = self._branch()
        inv = self._msg(f"INVITE sip:bob@{self.callee} SIP/2.0", f"{self.cseq} INVITE", self.reinvite_branch,
                        to_tag="b1", body=body(self.caller, self.a_port, PLAIN, 2))
        ok = self._response(200, "OK", f"{self.cseq} INVITE", self.reinvite_branch, "b1",
                            body(self.callee, self.b_port, PLAIN, 2))
        return inv, ok


def pair(strategy: str, **peer_kw) -> Pair:
    """Both gateways with these per-peer settings."""
    p = Pair.__new__(Pair)
    p.strategy = strategy

    def gw(name: str) -> Harness:
        return Harness(config((dataclasses.replace(peer(name, strategy), **peer_kw),), name=name,
                              teardown_delay=TEARDOWN, media_timeout=MEDIA_TIMEOUT), backend="none (dry run)")

    p.a, p.b = gw("gwa"), gw("gwb")
    p.both = (p.a, p.b)
    return p


def installs(p: Pair) -> list[InstallChild]:
    return p.a.of(InstallChild) + p.b.of(InstallChild)


def placed(p: Pair, c: Call) -> Pair:
    p.call(c)
    p.run_until(5.0)
    return p


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", ["sdes", "dtls"])
def test_skip_leaves_an_end_to_end_srtp_call_unkeyed_and_says_so(strategy, kind):
    prof = SDES if kind == "sdes" else DTLS
    # SDES keys travel in the SDP: skipped only where the peer's signalling is protected
    p = placed(pair(strategy, srtp="skip", signalling="protected"), SrtpCall("c1", offer=prof, answer=prof))
    for gw in p.both:
        (line,) = gw.logs("srtp-end-to-end")
        assert (line["call"], line["srtp"], line["peer"], line["at"]) == ("c1", kind, gw.core.cfg.peers[0].name, 1.2)
        assert gw.core.keying.srtp_end_to_end == 1
        assert gw.logs("keying") == []
    if strategy == "speculative":  # keyed at the offer (before the answer said SRTP): removed at once
        (spec,) = p.a.of(InstallChild)
        assert [(a.child, a.reason) for a in p.a.of(RemoveChild)] == [(spec.child, "srtp-end-to-end")]
        assert p.b.of(InstallChild) == []
    else:
        assert keying_actions(p.a) == keying_actions(p.b) == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_protect_keys_an_srtp_call_as_any_other(strategy):
    p = placed(pair(strategy, srtp="protect", signalling="protected"), SrtpCall("c1"))
    for gw in p.both:
        assert gw.logs("srtp-end-to-end") == [] and gw.core.keying.srtp_end_to_end == 0
        assert [ln["call"] for ln in gw.logs("keying")] == ["c1"]
    assert keying_actions(p.a) + keying_actions(p.b)


def test_protect_is_the_default():
    assert peer("gwa", "child-per-call").srtp == "protect"
    p = placed(pair("child-per-call"), SrtpCall("c1"))
    assert p.a.logs("srtp-end-to-end") == [] and len(installs(p)) == 1


def test_sdes_keys_seen_in_clear_signalling_are_keyed_under_skip():
    p = placed(pair("child-per-call", srtp="skip"), SrtpCall("c1"))  # signalling = "clear", the default
    for gw in p.both:
        (line,) = gw.logs("srtp-keys-in-clear")
        assert line["call"] == "c1" and "keyed" in line["consequence"]
        assert gw.logs("srtp-end-to-end") == [] and len(gw.logs("keying")) == 1
    assert len(installs(p)) == 1
    # DTLS-SRTP's keys never appear in the SDP: skipped over clear signalling too
    p = placed(pair("child-per-call", srtp="skip"), SrtpCall("c2", offer=DTLS, answer=DTLS))
    assert len(p.a.logs("srtp-end-to-end")) == 1 and installs(p) == []


@pytest.mark.parametrize(("offer", "answer"), [
    (SDES, PLAIN),  # the answerer declined SRTP: plain RTP on the wire
    (PLAIN, PLAIN),
    (("RTP/SAVP", ""), ("RTP/SAVP", "")),  # an SRTP profile with nothing to key it
    (("UDP/TLS/RTP/SAVP", ""), ("UDP/TLS/RTP/SAVP", "")),  # DTLS without a fingerprint
    (("RTP/AVP", CRYPTO), ("RTP/AVP", CRYPTO)),  # a=crypto under a plain profile is not SRTP
    (SDES, DTLS),
])
def test_a_call_not_srtp_end_to_end_is_keyed_under_skip(offer, answer):
    p = placed(pair("child-per-call", srtp="skip", signalling="protected"), SrtpCall("c1", offer=offer, answer=answer))
    for gw in p.both:
        assert gw.logs("srtp-end-to-end") == [] and len(gw.logs("keying")) == 1
    assert len(installs(p)) == 1


def test_a_reinvite_dropping_srtp_on_the_same_ports_is_keyed():
    p = placed(pair("child-per-call", srtp="skip", signalling="protected"), SrtpCall("c1"))
    assert installs(p) == []
    c = SrtpCall("c1")
    c.invite_branch, c._branches = "x", 10
    inv, ok = c.reinvite_plain()
    p.sip(6.0, inv, ok)
    p.yes(6.0)
    for gw in p.both:
        assert [ln["call"] for ln in gw.logs("keying")] == ["c1"]
    (child,) = installs(p)
    assert set(child.local_ts + child.remote_ts) == {f"{PHONE_A}/32[udp/10000]", f"{PHONE_A}/32[udp/10001]",
                                                    f"{PHONE_B}/32[udp/10100]", f"{PHONE_B}/32[udp/10101]"}
