"""The IKE_SA pool (issue 14) in the core: members set up at start (member 0 by the lower address
only, the others by both gateways), calls spread round robin over the members, each call's child
on its member's IKE_SA; and a removal never holds back another call's set-up (set-ups and
removals are separate actions the shell runs on separate workers)."""

from dataclasses import replace

from ipsecrtp.gateway.actions import EstablishIke, InstallChild, RemoveChild

from .harness import Harness, config
from .scenario import GWA, GWB, TEARDOWN, Call, Pair, peer


def pooled(name: str, strategy: str = "child-per-call", pool: int = 4) -> Harness:
    p = replace(peer(name, strategy), ike_pool=pool)
    return Harness(config((p,), name=name, teardown_delay=TEARDOWN), backend="none (dry run)")


def test_members_are_set_up_at_start():
    lower, higher = pooled("gwa"), pooled("gwb")  # gwa is 198.51.100.1
    assert GWA < GWB
    assert [a.member for a in lower.of(EstablishIke)] == [0, 1, 2, 3]
    assert [a.member for a in higher.of(EstablishIke)] == [1, 2, 3]  # member 0: one IKE_SA, not two
    assert pooled("gwa", "ike-per-call").of(EstablishIke) == []  # a call's own IKE_SA: no pool


def test_calls_go_round_robin_over_the_members_and_keep_theirs():
    p = Pair("child-per-call")
    for gw in p.both:
        gw.core.keying.policies = [(replace(pp, ike_pool=3), pol) for pp, pol in gw.core.keying.policies]
    for i in range(7):
        p.call(Call(f"c{i}", a_port=10000 + 4 * i, b_port=10100 + 4 * i), t=1.0 + i, answer_at=1.2 + i)
    installs = [a for gw in p.both for a in gw.of(InstallChild)]
    assert [a.member for a in installs] == [0, 1, 2, 0, 1, 2, 0]  # the answerer's gateway initiates
    assert len({a.child for a in installs}) == 7


def test_a_pending_removal_does_not_hold_back_the_next_set_up():
    p = Pair("child-per-call")
    first, second = Call("c1"), Call("c2", a_port=10010, b_port=10110)
    p.call(first, t=1.0, answer_at=1.2)
    initiator = next(gw for gw in p.both if gw.of(InstallChild))
    p.sip(2.0, first.bye())  # its removal is due at 2.0 + TEARDOWN
    p.sip(2.1, second.invite())
    p.sip(2.2, second.ok())  # answered while the first call's SA still drains
    installs = initiator.of(InstallChild)
    assert [a.call_id for a in installs] == ["c1", "c2"]  # at once, not after the removal
    assert initiator.of(RemoveChild) == []
    p.run_until(2.0 + TEARDOWN)
    assert [a.call_id for a in initiator.of(RemoveChild)] == ["c1"]
