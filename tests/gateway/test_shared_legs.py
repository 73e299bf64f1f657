"""``legs = "shared"`` in the core (issue 17 item 3): the calls to a peer share one CHILD_SA whose
selectors are exactly the live legs' flows; joins and leaves re-key it make-before-break, one
set-up at a time (those that come meanwhile are folded into the next); a call's ``sa-up`` and
``sa-down`` say when its own flows became and stopped being covered; both gateways attribute the
shared SA to its calls; a stop removes it, a restart adopts it."""

from dataclasses import replace

import pytest

from ipsecrtp.config import ConfigError, check_signalling
from ipsecrtp.gateway.actions import ChildUpDown, DelRoute, InstallChild, Journal, RemoveChild
from ipsecrtp.gateway.shared import RETRY_S, TRIES
from ipsecrtp.packet import UDP

from ..test_packet import ipv4, udp
from .harness import Harness, config
from .scenario import TEARDOWN, Call, Pair, peer


def shared_pair(backend: str = "none (dry run)") -> Pair:
    p = Pair("child-per-call")
    for name, gw in (("gwa", p.a), ("gwb", p.b)):
        pc = replace(peer(name, "child-per-call"), legs="shared")
        h = Harness(config((pc,), name=name, teardown_delay=TEARDOWN, media_timeout=30.0), backend=backend)
        if gw is p.a:
            p.a = h
        else:
            p.b = h
    p.both = (p.a, p.b)
    return p


def legs(n: int) -> list[Call]:
    return [Call(f"c{i}", a_port=10000 + 4 * i, b_port=10100 + 4 * i) for i in range(n)]


def answer_all(p: Pair, calls: list[Call], t: float) -> None:
    """N INVITEs, then N answers back to back, charon answering only afterwards."""
    for c in calls:
        p.sip(t, c.invite())
    for c in calls:
        p.sip(t + 0.1, c.provisional(), c.ok(), c.ack())


def ports(install: InstallChild) -> set[int]:
    return {int(ts.split("udp/")[1].rstrip("]")) for ts in install.local_ts + install.remote_ts}


def test_answers_back_to_back_are_folded_into_one_re_key():
    p = shared_pair()
    calls = legs(4)
    answer_all(p, calls, 1.0)
    gwb = p.b  # the answerer's gateway initiates
    first = gwb.of(InstallChild)
    assert [i.child for i in first] == ["shared-gwa-1"]  # one set-up in flight: the others wait for it
    assert ports(first[0]) == {10000, 10001, 10100, 10101}  # RTP and RTCP
    p.yes(1.2)
    installs = gwb.of(InstallChild)
    assert [i.child for i in installs] == ["shared-gwa-1", "shared-gwa-2"]  # 4 joins, 2 exchanges
    assert ports(installs[1]) == {b + 4 * i + k for i in range(4) for b in (10000, 10100) for k in (0, 1)}
    # make before break: generation 1 removed only after generation 2 answered
    assert [r.child for r in gwb.of(RemoveChild)] == ["shared-gwa-1"]
    assert gwb.answered["shared-gwa-2"] < gwb.actions.index(next((t, a) for t, a in gwb.actions
                                                                 if isinstance(a, RemoveChild)))
    for gw in p.both:  # each call's flows covered once, on both gateways; none uncovered by the re-key
        assert sorted(e["call"] for e in gw.logs("sa-up")) == [c.cid for c in calls], gw.core.cfg.name
        assert gw.logs("sa-down") == []
    assert {st.state.value for st in gwb.core.keying.calls.values()} == {"up"}
    assert all(e.get("shared") for e in gwb.logs("sa-up"))
    assert not gwb.of(Journal)[0].entry.get("child") and gwb.of(Journal)[0].entry["shared"]


def test_a_leave_re_keys_without_the_leg_and_only_it_goes_down():
    p = shared_pair()
    calls = legs(3)
    answer_all(p, calls, 1.0)
    p.yes(1.2)
    gwb = p.b
    before = len(gwb.of(InstallChild))
    p.sip(3.0, calls[1].bye())
    p.run_until(3.0 + TEARDOWN - 0.01)
    assert len(gwb.of(InstallChild)) == before  # its trailing RTP stays covered through the teardown delay
    p.run_until(3.0 + TEARDOWN)
    p.yes(3.0 + TEARDOWN)
    last = gwb.of(InstallChild)[-1]
    assert len(gwb.of(InstallChild)) == before + 1
    assert ports(last) == {10000, 10001, 10100, 10101, 10008, 10009, 10108, 10109}  # leg 1's left out
    for gw in p.both:
        assert [e["call"] for e in gw.logs("sa-down")] == ["c1"], gw.core.cfg.name
    for c in (calls[0], calls[2]):
        p.sip(5.0, c.bye())
    p.run_until(5.0 + TEARDOWN)
    p.yes(5.0 + TEARDOWN)
    assert len(gwb.of(InstallChild)) == before + 1  # the last leg out: removed, nothing set up
    assert gwb.core.keying.shared.peers["gwa"].live is None
    assert gwb.up == {} and p.a.up == {}  # nothing left in either charon
    for gw in p.both:
        assert sorted(e["call"] for e in gw.logs("sa-down")) == ["c0", "c1", "c2"]


def test_routes_of_the_legs_that_stay_survive_the_old_generation_going():
    p = shared_pair(backend="kernel-libipsec")
    calls = legs(2)
    answer_all(p, calls, 1.0)
    p.yes(1.2)
    p.sip(3.0, calls[0].bye())
    p.run_until(3.0 + TEARDOWN)
    p.yes(3.0 + TEARDOWN)
    for gw in p.both:
        deleted = {(r.rule.sport, r.rule.dport) for r in gw.of(DelRoute)}
        assert deleted and all(10004 not in pair or 10104 not in pair for pair in deleted), gw.core.cfg.name
        assert any(r.sport in (10004, 10104) for r in gw.core.routed)  # leg 1 still routed into the tunnel


def test_a_failed_set_up_is_reported_and_retried_a_bounded_number_of_times():
    p = shared_pair()
    c = legs(1)[0]
    answer_all(p, [c], 1.0)
    gwb = p.b
    t = 1.2
    for attempt in range(1, TRIES + 1):
        gwb.answer(gwb.pending[0], t, ok=False)  # the install
        while gwb.pending:
            gwb.answer(gwb.pending[0], t)  # its clean-up removal
        failed = gwb.logs("keying-failed")
        assert len(failed) == attempt and failed[-1]["calls"] == ["c0"]
        t += RETRY_S
        gwb.run_until(t)
    assert len(gwb.of(InstallChild)) == TRIES and not gwb.pending  # then it waits for the next join or leave
    assert gwb.logs("sa-up") == []


def test_esp_on_the_shared_sa_keeps_every_leg_alive():
    p = shared_pair()
    calls = legs(2)
    answer_all(p, calls, 1.0)
    p.yes(1.2)
    sa = p.b.up["shared-gwa-2"]
    spi = int(sa["spi-out"], 16)
    esp = ipv4(UDP, udp(4500, 4500, spi.to_bytes(4, "big") + bytes(44)), "198.51.100.1", "198.51.100.2")
    p.b.on_packet(20.0, esp)
    for c in calls:
        assert p.b.core.timelines.get(c.cid).first_esp == 20.0


def test_a_stop_removes_every_generation_a_restart_keeps_them():
    p = shared_pair()
    answer_all(p, legs(2), 1.0)
    p.b.answer(p.b.pending[0], 1.2)  # generation 1 up, generation 2 in flight
    removed = [a.child for a in p.b.core.shutdown(2.0) if isinstance(a, RemoveChild)]
    assert sorted(removed) == ["shared-gwa-1", "shared-gwa-2"]
    q = shared_pair()
    answer_all(q, legs(2), 1.0)
    q.yes(1.2)
    assert [a for a in q.b.core.shutdown(2.0, keep_live=True) if isinstance(a, (RemoveChild, InstallChild))] == []


def test_a_restarted_controller_adopts_the_shared_sa_and_re_keys_only_for_a_leg_that_ended_meanwhile():
    p = shared_pair()
    calls = legs(3)
    answer_all(p, calls, 1.0)
    p.yes(1.2)
    journal = {j.call_id: j.entry for j in p.b.of(Journal)}
    live = dict(p.b.up["shared-gwa-2"], ike="peer-gwa")
    fresh = shared_pair().b
    fresh.actions.clear()
    fresh._take(10.0, fresh.core.adopt(10.0, list(journal.values()), [live]))
    assert fresh.of(InstallChild) == [] and fresh.of(RemoveChild) == []
    assert {st.state.value for st in fresh.core.keying.calls.values()} == {"up"}
    ended = shared_pair().b  # call c2 ended while no controller ran: not in the journal any more
    ended._take(10.0, ended.core.adopt(10.0, [journal["c0"], journal["c1"]], [live]))
    (install,) = ended.of(InstallChild)
    assert install.child == "shared-gwa-3" and ports(install) == {10000, 10001, 10100, 10101, 10004, 10005,
                                                                  10104, 10105}
    ended.yes(10.1)
    assert [r.child for r in ended.of(RemoveChild)] == ["shared-gwa-2"]


def test_the_peers_shared_sa_lost_is_set_up_again():
    p = shared_pair()
    answer_all(p, legs(2), 1.0)
    p.yes(1.2)
    sa = p.b.up.pop("shared-gwa-2")
    p.b.charon(5.0, ChildUpDown(False, "peer-gwa", sa))  # dead-peer detection cleared it
    assert p.b.logs("shared-sa-lost") and p.b.of(InstallChild)[-1].child == "shared-gwa-3"


@pytest.mark.parametrize("strategy", ["ike-per-call", "speculative", "pre-keyed"])
def test_shared_legs_need_child_per_call(strategy):
    pc = replace(peer("gwa", strategy), legs="shared", signalling="protected")
    with pytest.raises(ConfigError, match='legs = "shared" needs strategy = "child-per-call"'):
        check_signalling(pc, "peer[0]")


def test_a_responder_that_learns_of_the_call_after_the_shared_sa_came_up_attributes_it_then():
    p = shared_pair()
    c = legs(1)[0]
    p.b.on_packet(1.0, c.invite())  # gwb (the answerer's gateway) sees the call; gwa not yet
    p.b.on_packet(1.1, c.provisional())
    p.b.on_packet(1.1, c.ok())
    (install,) = p.b.of(InstallChild)
    p.b.answer(install, 1.2)
    p.a.responder_up(1.2, install)  # the peer's SA is up at gwa before gwa knows the call
    assert p.a.logs("sa-up") == []
    for msg in (c.invite(), c.provisional(), c.ok(), c.ack()):
        p.a.on_packet(1.3, msg)
    (up,) = p.a.logs("sa-up")
    assert up["call"] == "c0" and up["shared"] and p.a.core.keying.calls["c0"].state.value == "up"
