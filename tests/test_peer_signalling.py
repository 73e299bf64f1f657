"""Per-peer rules that depend on how the peer's SIP crosses the WAN (issue 17 item 5, item 4):
pre-keyed over clear SIP is refused unless overridden; srtp = "skip" needs protect = "opportunistic".
Config level, and the real ``ipsecrtp run`` start (one error line, or on to the next start check)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ipsecrtp.config import ConfigError, load

from .test_cli import write_cfg

PREKEYED_REFUSED = ('strategy "pre-keyed" refused: the peer\'s SIP is seen in clear (signalling = "clear"); '
                    'set signalling = "protected" (TLS or a trusted private link) or '
                    'allow_keys_over_clear_signalling = true')


def write(tmp_path, extra: str, vici: str = "/nonexistent.vici") -> str:
    return write_cfg(tmp_path, vici, peer_extra=extra)


def test_defaults_are_clear_signalling_and_srtp_protect(tmp_path):
    (p,) = load(write(tmp_path, "")).peers
    assert (p.signalling, p.srtp, p.allow_keys_over_clear_signalling) == ("clear", "protect", False)


def test_prekeyed_over_clear_signalling_is_refused_in_one_line(tmp_path):
    path = write(tmp_path, 'strategy = "pre-keyed"')
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == f"{path}: peer[0]: {PREKEYED_REFUSED}"
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("extra", ["allow_keys_over_clear_signalling = true", 'signalling = "protected"'])
def test_prekeyed_is_accepted_with_the_override_or_protected_signalling(tmp_path, extra):
    (p,) = load(write(tmp_path, f'strategy = "0"\n{extra}')).peers
    assert p.strategy == "pre-keyed"


def test_other_strategies_need_no_override(tmp_path):
    for s in ("ike-per-call", "child-per-call", "speculative"):
        assert load(write(tmp_path, f'strategy = "{s}"')).peers[0].strategy == s


@pytest.mark.parametrize(("extra", "words"), [
    ('srtp = "skip"', 'srtp = "skip" needs protect = "opportunistic"'),
    ('srtp = "never"', "srtp: must be 'protect' or 'skip', not 'never'"),
    ('signalling = "tls"', "signalling: must be 'clear' or 'protected', not 'tls'"),
    ('allow_keys_over_clear_signalling = 1', "allow_keys_over_clear_signalling: must be true or false, not 1"),
])
def test_bad_values_are_one_line(tmp_path, extra, words):
    with pytest.raises(ConfigError, match=".*") as exc:
        load(write(tmp_path, extra))
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_srtp_skip_with_opportunistic(tmp_path):
    (p,) = load(write(tmp_path, 'srtp = "skip"\nprotect = "opportunistic"')).peers
    assert (p.srtp, p.protect) == ("skip", "opportunistic")


def run(cfg: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecrtp", "run", "--config", cfg], capture_output=True,
                          text=True, timeout=60)


def test_a_controller_start_refuses_prekeyed_over_clear_sip_and_passes_with_the_override(tmp_path):
    """The real start: refused with the one line; with the override the start goes past the config
    and stops at the next check (no charon here), which names the VICI socket instead."""
    vici = str(tmp_path / "none.vici")
    r = run(write(tmp_path, 'strategy = "pre-keyed"', vici))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"Error: {tmp_path}/c.toml: peer[0]: {PREKEYED_REFUSED}"]
    r = run(write(tmp_path, 'strategy = "pre-keyed"\nallow_keys_over_clear_signalling = true', vici))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"Error: no charon VICI socket at {vici}: No such file or directory"]
