"""``ipsecrtp doctor --config``: one line per peer saying whether its keys are safe against how its
SIP crosses the WAN (issue 17 item 5): pre-keyed over clear SIP fails, warns with the override,
passes with protected signalling; the IKE strategies pass whatever the signalling."""

from __future__ import annotations

import pytest

from ipsecrtp.doctor import config_checks, format_line

from .test_doctor import by_name, write_cfg


def check(tmp_path, extra: str):
    path = write_cfg(tmp_path)
    with open(path, "a") as f:
        f.write(extra + "\n")
    return by_name(config_checks(path, esp=False))


def test_prekeyed_over_clear_sip_fails_and_the_config_is_refused(tmp_path):
    c = check(tmp_path, 'strategy = "pre-keyed"')
    k = c["keys:gw-b"]
    assert (k.ok, k.required) == (False, True) and "seen in clear" in k.detail
    assert format_line(k).startswith("FAIL") and 'signalling = "protected"' in k.fix
    assert not c["config"].ok and "allow_keys_over_clear_signalling" in c["config"].detail


def test_the_override_turns_it_into_a_warning(tmp_path):
    c = check(tmp_path, 'strategy = "pre-keyed"\nallow_keys_over_clear_signalling = true')
    k = c["keys:gw-b"]
    assert (k.ok, k.required) == (False, False) and "allowed by override" in k.detail
    assert format_line(k).startswith("warn") and c["config"].ok


def test_protected_signalling_makes_prekeyed_safe(tmp_path):
    c = check(tmp_path, 'strategy = "pre-keyed"\nsignalling = "protected"\nsrtp = "skip"\nprotect = "opportunistic"')
    k = c["keys:gw-b"]
    assert k.ok and "safe while the per-peer secret is" in k.detail and "SRTP calls: skip" in k.detail
    assert c["config"].ok


@pytest.mark.parametrize("strategy", ["ike-per-call", "b", "speculative"])
def test_ike_strategies_are_safe_over_clear_sip(tmp_path, strategy):
    k = check(tmp_path, f'strategy = "{strategy}"')["keys:gw-b"]
    assert k.ok and "IKEv2" in k.detail and "(clear)" in k.detail
