"""Re-INVITEs of an answered call, for every strategy: a port change re-keys with the next
generation and removes the old SA at once (no teardown delay: the old flows are dead); a hold by
c=0.0.0.0 unkeys, the resume keys again (a fresh generation: never an old child's name or an old
pre-keyed SA's keys); a hold by sendonly, which leaves the flows as they are, changes nothing."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import InstallChild, InstallPrekeyed, RemoveChild, RemovePrekeyed
from ipsecrtp.selectors import child_name

from .harness import Harness
from .scenario import STRATEGIES, TEARDOWN, Call, Pair, keying_actions

G0, G1, G2 = (child_name("c1", g) for g in range(3))


def initiator(p: Pair) -> Harness:
    """Of a call from A to B, re-INVITEd by A: the answerer's gateway (b), the offerer's for speculative
    (a); pre-keyed: both do the same, gwa is looked at."""
    return p.b if p.strategy in ("ike-per-call", "child-per-call") else p.a


def installs(gw: Harness) -> list[tuple[float, str]]:
    """(time, child name or first SPI) of each exact SA set up."""
    out = [(t, a.child) for t, a in gw.at(InstallChild) if a.child.startswith("call-")]
    return out + [(t, f"{a.keys[0].spi:08x}") for t, a in gw.at(InstallPrekeyed)]


def removed(gw: Harness) -> list[tuple[float, str, str]]:
    out = [(t, a.child, a.reason) for t, a in gw.at(RemoveChild) if a.child.startswith("call-")]
    return out + [(t, f"{a.keys[0].spi:08x}", a.reason) for t, a in gw.at(RemovePrekeyed)]


def reinvite(p: Pair, c: Call, t: float, **kw) -> None:
    p.sip(t, c.reinvite(**kw), c.reinvite_ok())
    p.yes(t)
    p.sip(t + 0.01, c.reinvite_ack())
    p.run_until(t + 0.01)
    p.yes(t + 0.01)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_port_change_rekeys_with_the_next_generation_and_removes_the_old_sa_at_once(strategy):
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    gw = initiator(p)
    reinvite(p, c, 5.0, port=10010)
    (t0, first), (t1, second) = installs(gw)
    assert (t0, t1) == (1.2, 5.0) and first != second
    if strategy != "pre-keyed":
        assert (first, second) == (G0, G1)
    assert removed(gw) == [(5.0, first, "media-changed")]  # not at 5.0 + the teardown delay
    new = keying_actions(gw)[-1]
    if isinstance(new, InstallChild):
        local = new.local_ts if gw is p.a else new.remote_ts
        assert local == ("192.0.2.10/32[udp/10010]", "192.0.2.10/32[udp/10011]")
    assert [k["trigger"] for k in gw.logs("keying")][-1] == "200 OK (INVITE)"
    p.sip(8.0, c.bye())
    p.yes(8.0)
    p.run_until(60.0)
    assert removed(gw)[1:] == [(8.0 + TEARDOWN, second, "bye-by-caller")]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hold_by_null_address_unkeys_and_resume_keys_a_fresh_generation(strategy):
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    gw = initiator(p)
    reinvite(p, c, 5.0, addr="0.0.0.0")
    ((_, first),) = installs(gw)
    assert removed(gw) == [(5.0, first, "media-changed")]
    for g in p.both:
        assert [e["at"] for e in g.logs("no-flows")] == [5.0]
    reinvite(p, c, 8.0)
    (_, again) = installs(gw)[1]
    # the same flows as before the hold, under a new name and (pre-keyed) new keys: an old child's
    # name may still be in charon while its removal runs, and ESP must never reuse a key
    assert again != first
    if strategy != "pre-keyed":
        assert again == G1
    else:
        spis = [k.spi for a in gw.of(InstallPrekeyed) for k in a.keys]
        assert len(set(spis)) == 4
    p.sip(10.0, c.bye())
    p.yes(10.0)
    p.run_until(60.0)
    assert removed(gw)[1:] == [(10.0 + TEARDOWN, again, "bye-by-caller")]


@pytest.mark.parametrize("strategy", ("child-per-call", "pre-keyed"))
def test_resume_while_the_held_sa_is_still_being_removed(strategy):
    """charon has not answered the removal of the held SA when the call resumes: the new SA is
    another one, and the late answer about the old one touches only the old one."""
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    gw = initiator(p)
    p.sip(5.0, c.reinvite(addr="0.0.0.0"), c.reinvite_ok())
    gw.run_until(5.0)
    (old_removal,) = [a for a in gw.pending if isinstance(a, (RemoveChild, RemovePrekeyed))]
    p.sip(5.5, c.reinvite_ack(), c.reinvite(), c.reinvite_ok())
    new = [a for a in gw.pending if isinstance(a, (InstallChild, InstallPrekeyed))]
    assert len(new) == 1
    gw.answer(old_removal, 5.6)
    p.yes(5.7)
    assert len(gw.logs("sa-removed")) == 1
    up = gw.logs("sa-initiated") if strategy == "child-per-call" else gw.logs("sa-up")
    assert len(up) == 2 and up[-1]["at"] == 5.7


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hold_by_sendonly_leaves_the_sa_alone(strategy):
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    before = [(len(keying_actions(g)), len(g.of(RemoveChild)), len(g.of(RemovePrekeyed))) for g in p.both]
    reinvite(p, c, 5.0, extra="a=sendonly\r\n")
    p.run_until(6.0)
    assert [(len(keying_actions(g)), len(g.of(RemoveChild)), len(g.of(RemovePrekeyed))) for g in p.both] == before
    assert all(g.logs("unkeying") == [] for g in p.both)


@pytest.mark.parametrize("strategy,new_initiator", [("ike-per-call", "a"), ("child-per-call", "a"),
                                                    ("speculative", "b"), ("pre-keyed", "both")])
def test_callee_reinvite_rekeys_from_the_new_answerers_side(strategy, new_initiator):
    """When the callee offers, the caller answers: the initiator rule picks the other gateway for
    the new SA, and the old SA is removed by the gateway that set it up."""
    p, c = Pair(strategy), Call("c1")
    p.call(c)
    old = initiator(p)
    p.sip(5.0, c.callee_reinvite(port=10110), c.callee_reinvite_ok())
    p.yes(5.0)
    p.run_until(5.0)
    p.yes(5.0)
    if strategy == "pre-keyed":
        for g in p.both:
            assert [t for t, _ in installs(g)] == [1.2, 5.0]
            assert [(t, r) for t, _, r in removed(g)] == [(5.0, "media-changed")]
        return
    new = p.a if new_initiator == "a" else p.b
    assert [(t, ch) for t, ch in installs(new) if t == 5.0] == [(5.0, G1)]
    assert [(t, ch, r) for t, ch, r in removed(old)] == [(5.0, G0, "media-changed")]
    assert [k["role"] for k in new.logs("keying")][-1] == "initiator"
    assert [k["role"] for k in p.other(new).logs("keying")][-1] == "responder"
