"""IPSECRTP_TIME_SCALE (ipsecrtp/timescale.py): only ever lengthens the waits, and reaches the
controller's VICI limits (a slow machine's charon failed calls that were only slow)."""

import pytest

from ipsecrtp.keying.charontimers import limits_for
from ipsecrtp.timescale import VARIABLE, scaled, time_scale


@pytest.mark.parametrize(("value", "factor"), [("", 1.0), ("10", 10.0), ("0.1", 1.0), ("-3", 1.0), ("nan", 1.0),
                                               ("inf", 1.0), ("ten", 1.0), ("2.5", 2.5)])
def test_the_factor_never_shortens_a_wait(monkeypatch, value, factor):
    monkeypatch.setenv(VARIABLE, value)
    assert time_scale() == factor and scaled(2.0) == 2.0 * factor


def test_it_scales_the_controllers_vici_limits(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    base = limits_for("e721-toll")
    monkeypatch.setenv(VARIABLE, "10")
    slow = limits_for("e721-toll")
    assert (slow.command_s, slow.initiate_s) == (10 * base.command_s, 10 * base.initiate_s)


def test_charon_s_timers_scale_with_it_and_still_fit_the_budget_they_were_chosen_for(monkeypatch):
    """In a guest ten times slower the lab's charon waits ten times longer before retransmitting and
    before giving up on its peer (a loaded TCG guest gave up on a peer that was only slow, then made
    a second CHILD_SA for one call); the controller's budget check scales alike, so it stays quiet."""
    from ipsecrtp.keying.charontimers import RECOMMENDED, check

    monkeypatch.setenv(VARIABLE, "10")
    slow = RECOMMENDED.scaled(time_scale())
    assert slow.timeout == 10 * RECOMMENDED.timeout and (slow.base, slow.tries) == (RECOMMENDED.base, RECOMMENDED.tries)
    assert slow.gives_up_at() == pytest.approx(10 * RECOMMENDED.gives_up_at())
    assert check(slow, "e721-toll", limits_for("e721-toll")) is None
    assert RECOMMENDED.scaled(1.0) is RECOMMENDED
