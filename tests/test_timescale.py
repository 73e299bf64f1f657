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
