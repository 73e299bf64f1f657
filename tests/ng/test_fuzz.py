"""Fuzzing the ng endpoint's pure half, like the SIP parser's: random bytes, random bencoded
dictionaries and mutated real commands go through ng.protocol.parse and, when they parse, into a
gateway core holding a live call. Nothing escapes but NgError; every reply is ok, pong or error,
and an error reply leaves the core's dialogs and decisions as they were."""

from __future__ import annotations

import copy

import fastbencode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecrtp.gateway.actions import Log
from ipsecrtp.gateway.control import COMMANDS
from ipsecrtp.ng.protocol import NgError, parse

from ..gateway.scenario import PHONE_A, PHONE_B, gateway, sdp

OFFER, ANSWER = sdp(PHONE_A, 10000), sdp(PHONE_B, 10100)
KEYS = [b"command", b"call-id", b"from-tag", b"to-tag", b"sdp", b"flags", b"replace", b"limit", b"via-branch"]
REAL = [
    b"1_1 " + fastbencode.bencode({b"command": b"ping"}),
    b"1_2 " + fastbencode.bencode({b"command": b"offer", b"call-id": b"c1", b"from-tag": b"a1", b"sdp": OFFER,
                                   b"flags": [b"trust-address"], b"replace": [b"origin"]}),
    b"1_3 " + fastbencode.bencode({b"command": b"answer", b"call-id": b"c1", b"from-tag": b"a1",
                                   b"to-tag": b"b1", b"sdp": ANSWER}),
    b"1_4 " + fastbencode.bencode({b"command": b"delete", b"call-id": b"c1", b"from-tag": b"a1"}),
    b"1_5 " + fastbencode.bencode({b"command": b"query", b"call-id": b"c1"}),
    b"1_6 " + fastbencode.bencode({b"command": b"list", b"limit": 5}),
]

leaf = st.one_of(st.integers(-5, 10**12), st.binary(max_size=40), st.sampled_from([OFFER, ANSWER, b"c1", b"a1", b"b1"]),
                 st.sampled_from([c.encode() for c in COMMANDS]))
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.binary(max_size=8), inner, max_size=4), max_leaves=8)
command_dicts = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.binary(max_size=10)), value, max_size=7)


def core_with_a_call():
    gw = gateway("gwb", "child-per-call")
    cookie, req = parse(REAL[1], ("127.0.0.1", 5060))
    gw.core.control(1.0, req)
    return gw


def check(gw, data: bytes) -> None:
    try:
        _, req = parse(data, ("127.0.0.1", 5060))
    except NgError:
        return
    dialogs = copy.deepcopy(gw.core.tracker.dialogs)
    reply, actions = gw.core.control(2.0, req)
    assert reply["result"] in ("ok", "pong", "error")
    if reply["result"] == "error":
        assert isinstance(reply["error-reason"], str) and reply["error-reason"]
        assert gw.core.tracker.dialogs == dialogs
        assert all(isinstance(a, Log) for a in actions)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(data):
    check(core_with_a_call(), data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_dicts)
def test_random_bencoded_dictionaries(d):
    check(core_with_a_call(), b"ck " + fastbencode.bencode(d))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       st.integers(0, 400))
def test_mutated_real_commands(data, flips, cut):
    b = bytearray(data[:max(cut, 1)] if cut < len(data) and cut % 3 == 0 else data)
    for pos, byte in flips:
        if b:
            b[pos % len(b)] = byte
    check(core_with_a_call(), bytes(b))


def test_the_generators_reach_every_outcome():
    """A fuzzer whose inputs all fail at the first check tests nothing: count what the real ones reach."""
    gw = core_with_a_call()
    results = []
    unknown = b"1_7 " + fastbencode.bencode({b"command": b"query", b"call-id": b"c2"})
    for data in [*REAL[2:], REAL[0], REAL[3], unknown]:
        _, req = parse(data)
        results.append(gw.core.control(3.0, req)[0]["result"])
    # answer, delete, query (the ended call, kept a while), list, ping, delete again, unknown call
    assert results == ["ok", "ok", "ok", "ok", "pong", "error", "error"]
