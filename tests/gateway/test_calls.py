"""Calls side by side: each gets its own SA, and a call's removal touches its own SA only (also
when the next call reuses its phones' ports, or its Call-ID, before it is gone)."""

from __future__ import annotations

import pytest

from ipsecrtp.gateway.actions import InstallChild, InstallPrekeyed, RemoveChild, RemovePrekeyed
from ipsecrtp.selectors import child_name

from .harness import Harness
from .scenario import MEDIA_TIMEOUT, PHONE_A, PHONE_B, PHONE_B2, STRATEGIES, TEARDOWN, Call, Pair, rtp


def initiator(p: Pair) -> Harness:
    return p.b if p.strategy in ("ike-per-call", "child-per-call") else p.a


def sa_ids(gw: Harness, kind: type) -> list[tuple[str, str]]:
    """(call, child name or first SPI) of each exact SA of one action kind."""
    out = []
    for a in gw.of(kind):
        if isinstance(a, (InstallChild, RemoveChild)):
            if a.child.startswith("call-"):
                out.append((a.call_id, a.child))
        else:
            out.append((a.call_id, f"{a.keys[0].spi:08x}"))
    return out


def installed(gw: Harness) -> list[tuple[str, str]]:
    return sa_ids(gw, InstallChild) + sa_ids(gw, InstallPrekeyed)


def removed(gw: Harness) -> list[tuple[str, str]]:
    return sa_ids(gw, RemoveChild) + sa_ids(gw, RemovePrekeyed)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_overlapping_calls_each_get_their_own_sa_and_removals_touch_only_their_own(strategy):
    p = Pair(strategy)
    c1 = Call("c1")
    c2 = Call("c2", caller="192.0.2.11", callee=PHONE_B2, a_port=10020, b_port=10120, from_tag="a2")
    p.sip(1.0, c1.invite())
    p.yes(1.0)
    p.sip(1.1, c2.invite())
    p.yes(1.1)
    p.sip(1.2, c2.ok(), c2.ack())
    p.yes(1.2)
    p.sip(1.3, c1.ok(), c1.ack())
    p.yes(1.3)
    p.run_until(1.3)
    gw = initiator(p)
    ((call_a, sa_a), (call_b, sa_b)) = installed(gw)
    assert (call_a, call_b) == ("c2", "c1") and sa_a != sa_b
    if strategy != "pre-keyed":
        assert (sa_a, sa_b) == (child_name("c2", 0), child_name("c1", 0))
    p.sip(5.0, c1.bye())
    p.yes(5.0)
    p.run_until(5.0 + TEARDOWN)
    assert removed(gw) == [("c1", sa_b)]
    assert {u["call"] for g in p.both for u in g.logs("unkeying")} == {"c1"}
    p.sip(8.0, c2.bye())
    p.yes(8.0)
    p.run_until(8.0 + TEARDOWN)
    assert removed(gw) == [("c1", sa_b), ("c2", sa_a)]


@pytest.mark.parametrize("strategy", ("child-per-call", "pre-keyed"))
def test_next_call_on_the_same_ports_before_the_last_one_is_removed(strategy):
    """Phones reuse their ports at once: c2 is keyed while c1's SA waits out its teardown delay.
    c1's removal names c1's SA, and c2's media still counts as c2's after c1's SA went down."""
    p = Pair(strategy)
    c1, c2 = Call("c1"), Call("c2", from_tag="a2")
    p.call(c1)
    p.sip(5.0, c1.bye())
    p.yes(5.0)
    p.call(c2, 5.2, 5.4)
    gw = initiator(p)
    (_, sa1), (_, sa2) = installed(gw)
    assert sa1 != sa2
    p.run_until(5.0 + TEARDOWN)
    assert removed(gw) == [("c1", sa1)]
    # c2's media keeps it alive past its media timeout (from its ACK at 5.41)
    for t in (20.0, 30.0):
        p.sip(t, rtp(PHONE_A, 10000, PHONE_B, 10100))
    p.run_until(5.41 + MEDIA_TIMEOUT + 1.0)
    assert [u["call"] for u in gw.logs("unkeying")] == ["c1"]
    assert removed(gw) == [("c1", sa1)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_call_id_used_again_while_the_last_sa_drains_gets_a_new_generation(strategy):
    p = Pair(strategy)
    first, again = Call("c1"), Call("c1", from_tag="a9")
    p.call(first)
    p.sip(5.0, first.bye())
    p.yes(5.0)
    p.call(again, 5.2, 5.4)  # same Call-ID, a new dialog, within the teardown delay
    gw = initiator(p)
    (_, sa1), (_, sa2) = installed(gw)
    assert sa1 != sa2
    if strategy != "pre-keyed":
        assert sa2 == child_name("c1", 1)
    p.run_until(5.0 + TEARDOWN)
    assert removed(gw) == [("c1", sa1)]
    assert all(g.logs("keying-failed") == [] for g in p.both)
    p.sip(8.0, again.bye())
    p.yes(8.0)
    p.run_until(8.0 + TEARDOWN)
    assert removed(gw) == [("c1", sa1), ("c1", sa2)]
