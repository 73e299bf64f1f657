"""Outcomes that come too late (found under load by `bench load`): a set-up still queued when its
call ends is cancelled, not run then removed; a CHILD_SA that charon brings up after the call's
removal already ran (an initiate it finished past its time-out) is removed when it shows up."""

from ipsecrtp.gateway.actions import (
    CANCELLED,
    CancelInstall,
    ChildUpDown,
    InstallChild,
    InstallResult,
    RemoveChild,
    RemoveResult,
)

from .scenario import TEARDOWN, Call, gateway


def answered(gw, call: Call) -> InstallChild:
    gw.on_packet(1.0, call.invite())
    gw.on_packet(1.2, call.ok())
    (install,) = gw.of(InstallChild)
    return install


def test_a_set_up_still_queued_when_the_call_ends_is_cancelled_not_run():
    gw, call = gateway("gwb", "child-per-call"), Call("c1")
    install = answered(gw, call)
    gw.on_packet(1.3, call.bye())  # before the set-up's answer
    assert [a.child for a in gw.of(CancelInstall)] == [install.child]
    gw.charon(1.31, InstallResult("c1", install.child, False, 1.31, 1.31, CANCELLED))
    gw.run_until(1.3 + TEARDOWN + 5)
    assert gw.of(RemoveChild) == []  # nothing was set up, nothing to remove
    assert [e["child"] for e in gw.logs("keying-cancelled")] == [install.child]


def test_a_set_up_that_ran_anyway_is_removed_as_usual():
    gw, call = gateway("gwb", "child-per-call"), Call("c1")
    install = answered(gw, call)
    gw.on_packet(1.3, call.bye())
    gw.charon(1.4, InstallResult("c1", install.child, True, 1.25, 1.4))  # it had started: cancel too late
    gw.run_until(1.3 + TEARDOWN + 5)
    assert [a.child for a in gw.of(RemoveChild)] == [install.child]


def test_a_child_sa_up_after_its_removal_is_removed_when_it_shows_up():
    gw, call = gateway("gwb", "child-per-call"), Call("c1")
    install = answered(gw, call)
    gw.charon(11.2, InstallResult("c1", install.child, False, 1.2, 11.2, "initiate timed out"))
    gw.on_packet(12.0, call.bye())
    gw.run_until(12.0 + TEARDOWN)
    (remove,) = gw.of(RemoveChild)
    gw.charon(13.6, RemoveResult("c1", install.child, True, uniqueid=None))  # found nothing: not up yet
    child = {"name": install.child, "uniqueid": "42", "local-ts": list(install.local_ts),
             "remote-ts": list(install.remote_ts), "spi-in": "c0000001", "spi-out": "c0000002"}
    gw.charon(14.0, ChildUpDown(True, "peer-gwa", child))  # charon finished it after all
    late = gw.of(RemoveChild)[1:]
    assert [(a.child, a.uniqueid, a.reason) for a in late] == [(install.child, "42", "late")]
    assert [e["sa"] for e in gw.logs("late-sa-removed")] == ["42"]
