"""Property test of the core: random interleavings of several calls' SIP (INVITE, 18x, 200 from
one fork or another, ACK, BYE, CANCEL, 486, re-INVITEs with new ports, hold, hostile media) with
random charon outcomes (yes, no, the event before or after the initiate's answer, or never, SAs
going down on their own) and time passing, on both gateways, for every strategy.

Whatever happens: nothing escapes the core; every SA asked for lies within the peers' prefixes and
the RTP range; a child's name is never asked for twice; a removal names a child this gateway set
up, comes only after its set-up was answered, and once; and when every call is over and charon
has answered everything, every SA set up has been removed exactly once."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecrtp.gateway.actions import (
    ChildUpDown,
    InstallChild,
    InstallPrekeyed,
    PermitChild,
    RemoveChild,
    RemovePrekeyed,
)
from ipsecrtp.selectors import parse_ts_range

from .harness import Harness
from .scenario import NET_A, NET_B, PHONE_B, PHONE_B2, RTP, STRATEGIES, Call, Pair

CALLS = 3
PORTS = (10000, 10040, 10198, 10199, 5060, 20000)  # in range, at its top, SIP's, above it
MEDIA = (PHONE_B, PHONE_B, PHONE_B2, "198.18.0.5", "0.0.0.0")  # the far phones, a third party, hold
KINDS = ("invite", "ring", "early", "ok", "ack", "bye", "bye-callee", "cancel", "busy", "reinvite")
STEPS = {  # a call's next message, by how far it got: mostly the usual order, the variants drawn
    0: ("invite",), 1: ("ring", "early", "early"), 2: ("ok", "ok", "ok", "busy", "cancel", "early"),
    3: ("ack",), 4: ("reinvite", "reinvite", "bye", "bye-callee"),
}
DT = (0.01, 0.2, 1.0, 3.5, 40.0, 200.0)

# each step one integer, decoded below: hypothesis draws (and shrinks) flat integers far faster than
# nested tuples, which leaves the time for the gateways
ops = st.lists(st.integers(0, 2**24 - 1), min_size=10, max_size=40)


class World:
    """Two gateways, their calls and charons, and what the invariants need to remember."""

    def __init__(self, strategy: str) -> None:
        self.p = Pair(strategy)
        self.now = 1.0
        self.calls = [Call(f"call{i}", a_port=10000 + 20 * i, from_tag=f"t{i}") for i in range(CALLS)]
        self.invites = [c.invite() for c in self.calls]  # sent when drawn (again: a retransmission)
        self.stages = [0] * CALLS

    def sip(self, i: int, kind: str, variant: int) -> None:
        """One message (or transaction) of call i; the variant picks the fork, the media and its port."""
        fork = ("b1", "b2")[variant % 2]
        addr = MEDIA[(variant // 2) % len(MEDIA)]
        port = PORTS[(variant // 16) % len(PORTS)]
        c, t = self.calls[i], self.now
        media = (addr if addr != "0.0.0.0" else PHONE_B, port)
        msgs = {
            "invite": lambda: [self.invites[i]],
            "ring": lambda: [c.provisional(180, fork)],
            "early": lambda: [c.provisional(183, fork, media)],
            "ok": lambda: [c.ok(fork, media)],
            "ack": lambda: [c.ack(fork)],
            "bye": lambda: [c.bye(fork)],
            "bye-callee": lambda: [c.bye(fork, by_callee=True)],
            "cancel": lambda: [c.cancel(), c.final(487, fork)],
            "busy": lambda: [c.final(486, fork)],
            "reinvite": lambda: [c.reinvite(fork, addr="0.0.0.0" if addr == "0.0.0.0" else None, port=port),
                                 c.reinvite_ok(fork), c.reinvite_ack(fork)],
        }[kind]()
        self.p.sip(t, *msgs)

    def answer(self, g: int, k: int, ok: bool, up: bool, tell_peer: bool) -> None:
        gw = self.p.both[g]
        if not gw.pending:
            return
        a = gw.pending[k % len(gw.pending)]
        was_up = isinstance(a, RemoveChild) and a.child in gw.up
        gw.answer(a, self.now, ok=ok, up=up and ok if isinstance(a, RemoveChild) else up)
        other = self.p.other(gw)
        if tell_peer and isinstance(a, InstallChild) and a.child in gw.up:
            other.responder_up(self.now, a)  # the peer's charon saw it come up too
        elif was_up and a.child in other.up:
            install = next(i for i in gw.of(InstallChild) if i.child == a.child)
            other.responder_down(self.now, install)

    def drop(self, g: int, k: int) -> None:
        """An SA goes down on its own (the peer deleted it, a rekey failed)."""
        gw = self.p.both[g]
        if gw.up:
            child = sorted(gw.up)[k % len(gw.up)]
            gw.charon(self.now, ChildUpDown(False, "peer", gw.up.pop(child)))

    def advance(self, dt: float) -> None:
        self.now += dt
        for gw in self.p.both:
            gw.run_until(self.now)

    def settle(self) -> None:
        """Every dialog times out, charon answers all, every timer runs."""
        for _ in range(50):
            self.now += 400.0
            self.p.yes(self.now)
            self.p.run_until(self.now)
            if not any(gw.pending for gw in self.p.both):
                return
        raise AssertionError("the gateways never settle")


def within(ts: str, prefixes: tuple[str, ...]) -> bool:
    net, proto, ports = parse_ts_range(ts)
    n = ipaddress.ip_network(net)
    return proto == 17 and ports is not None and RTP[0] <= ports[0] <= ports[1] <= RTP[1] and \
        any(n.version == p.version and n.subnet_of(p) for p in map(ipaddress.ip_network, prefixes))


def check_selectors(gw: Harness, local: str, remote: str) -> None:
    for a in gw.of(InstallChild) + gw.of(PermitChild):
        assert all(within(t, (local,)) for t in a.local_ts), a
        assert all(within(t, (remote,)) for t in a.remote_ts), a
    for a in gw.of(InstallPrekeyed):
        for lo, re in a.pairs:
            assert within(f"{lo.address}/32[udp/{lo.port}]", (local,)), a
            assert within(f"{re.address}/32[udp/{re.port}]", (remote,)), a


def check_removals(gw: Harness, settled: bool) -> None:
    installs = [a.child for a in gw.of(InstallChild)] + [a.child for a in gw.of(PermitChild)]
    assert len(installs) == len(set(installs)), "a child name asked for twice"
    removals = [(i, a) for i, (_, a) in enumerate(gw.actions) if isinstance(a, RemoveChild)]
    names = [a.child for _, a in removals]
    assert len(names) == len(set(names)), "a child removed twice"
    for i, a in removals:
        assert a.child in installs, f"removal of {a.child}, never set up here"
        assert gw.answered.get(a.child, len(gw.actions)) <= i, f"{a.child} removed before its set-up answered"
    pre = [a for a in gw.of(InstallPrekeyed)]
    pre_gone = [a.keys for a in gw.of(RemovePrekeyed)]
    assert len(pre_gone) == len(set(pre_gone))
    assert set(pre_gone) <= {a.keys for a in pre}
    if settled:
        assert sorted(names) == sorted(installs), "an SA set up and never removed"
        installed = {a.keys for a in pre if a not in gw.said_no}  # a failed install leaves nothing
        assert set(pre_gone) == installed, "pre-keyed SAs left in the kernel"


def step(w: World, n: int) -> None:
    r, n = n % 16, n // 16
    if r <= 6:  # the next message of one call
        i, n = n % CALLS, n // CALLS
        stage = w.stages[i]
        kinds = STEPS[min(stage, 4)]
        kind = kinds[n % len(kinds)]
        w.stages[i] = stage + 1
        w.sip(i, kind, n // 8)
    elif r <= 8:  # any message of any call, in no particular order
        i, n = n % CALLS, n // CALLS
        w.sip(i, KINDS[n % len(KINDS)], n // len(KINDS))
    elif r <= 12:
        w.answer(n % 2, (n // 2) % 8, (n // 16) % 4 != 0, (n // 64) % 4 != 0, (n // 256) % 2 == 0)
    elif r == 13:
        w.drop(n % 2, n // 2)
    else:
        w.advance(DT[n % len(DT)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(STRATEGIES), steps=ops)
def test_random_calls_and_charon_outcomes_keep_the_invariants(strategy, steps):
    w = World(strategy)
    for n in steps:
        step(w, n)
        w.now += 0.001  # every step at its own time
    for gw in w.p.both:
        check_removals(gw, settled=False)
    w.settle()
    for gw, local, remote in ((w.p.a, NET_A, NET_B), (w.p.b, NET_B, NET_A)):
        check_selectors(gw, local, remote)
        check_removals(gw, settled=True)
