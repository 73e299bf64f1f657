"""The VICI waits and the IKE-timer verdict derived from the post-dial budgets, and the
strongswan.conf reader (issue 15 items 4 and 7). Pure: numbers and files; the running charon is
tests/lab/test_charon_timers.py."""

from __future__ import annotations

import os

import pytest

from ipsecrtp.keying.charonconf import parse, timers_from
from ipsecrtp.keying.charontimers import (
    ANSWER_MARGIN_S,
    CHARON_DEFAULTS,
    LOSSES_TOLERATED,
    RECOMMENDED,
    Timers,
    check,
    limits_for,
)
from ipsecrtp.timing import BUDGETS


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_a_set_up_never_holds_its_worker_past_the_budgets_p95(name):
    b, lim = BUDGETS[name], limits_for(name)
    assert lim.initiate_s == b.pdd_mean_s  # charon's own time-out: it answers "failed" itself
    assert lim.initiate_wait_s == b.pdd_mean_s + ANSWER_MARGIN_S
    # load-conn, then initiate: together within the p95 post-dial delay
    assert lim.command_s + lim.initiate_wait_s == pytest.approx(b.pdd_p95_s)
    assert lim.command_s == 2.0  # the same for the three E.721 budgets


def test_retransmission_schedule():
    assert CHARON_DEFAULTS.sent_at(1) == 4.0
    assert CHARON_DEFAULTS.sent_at(2) == pytest.approx(4.0 + 7.2)
    assert CHARON_DEFAULTS.gives_up_at() == pytest.approx(165.0, abs=0.5)  # charon's documented 165 s
    assert RECOMMENDED.sent_at(2) == pytest.approx(1.2)
    assert RECOMMENDED.conf_lines() == ["retransmit_timeout = 0.5", "retransmit_base = 1.4", "retransmit_tries = 6"]


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_charons_defaults_warn_and_the_recommended_timers_fit_every_budget(name):
    warning = check(CHARON_DEFAULTS, name, limits_for(name))
    assert warning is not None and name in warning and "retransmit_timeout = 0.5" in warning
    assert "\n" not in warning
    assert check(RECOMMENDED, name, limits_for(name)) is None


def test_the_verdict_turns_where_the_second_retransmission_passes_initiates_limit():
    lim = limits_for("e721-toll")  # initiate: 5 s
    # T (1 + B) against 5 s: 2.0 * 2.4 = 4.8 fits, 2.2 * 2.4 = 5.28 does not
    assert check(Timers(2.0, 1.4, 5), "e721-toll", lim) is None
    assert check(Timers(2.2, 1.4, 5), "e721-toll", lim) is not None
    # too few tries to survive the tolerated losses at all, however quick
    assert check(Timers(0.2, 1.0, LOSSES_TOLERATED - 1), "e721-toll", lim) is not None


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_strongswan_conf_with_includes_comments_and_overrides(tmp_path):
    root = str(tmp_path)
    write(f"{root}/etc/strongswan.conf", """\
# a comment { with brackets }
charon {
  load_modular = yes
  retransmit_timeout = 4.0   # later files may override
  plugins {
    include strongswan.d/charon/*.conf
  }
  filelog { x {
      path = "/var/log/a b.log"
  } }
}
include strongswan.d/*.conf
""")
    write(f"{root}/etc/strongswan.d/charon.conf", "charon {\n  # retransmit_base = 9\n  retransmit_base = 1.4\n}\n")
    write(f"{root}/etc/strongswan.d/tuning.conf", "charon {\n  retransmit_timeout = \"0.5\"\n}\n")
    write(f"{root}/etc/strongswan.d/charon/vici.conf", "vici {\n  socket = unix:///run/x.vici\n}\n")
    s = parse("/etc/strongswan.conf", root=root)
    assert s["charon.retransmit_timeout"] == "0.5"  # the later file's value, unquoted
    assert s["charon.retransmit_base"] == "1.4"  # the commented-out line is not read
    assert s["charon.plugins.vici.socket"] == "unix:///run/x.vici"  # included inside a section
    assert s["charon.load_modular"] == "yes"
    assert s["charon.filelog.x.path"] == "/var/log/a b.log"
    assert timers_from(s) == Timers(0.5, 1.4, 5)  # tries unset: charon's default


def test_charon_systemd_falls_back_to_the_charon_section():
    s = {"charon.retransmit_timeout": "1.0", "charon-systemd.retransmit_tries": "3",
         "charon.retransmit_base": "bogus"}
    assert timers_from(s, "charon-systemd") == Timers(1.0, 1.8, 3)
    assert timers_from({}) == CHARON_DEFAULTS


def test_the_verdict_on_an_unreadable_charon_is_unknown_never_an_error(tmp_path):
    """A socket whose peer is this very process (no STRONGSWAN_CONF): its default file is read
    through /proc/PID/root; whatever is there (or not), the answer is a verdict, not an exception."""
    import socket

    from ipsecrtp.keying.charonconf import timers_verdict

    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(path)
    try:
        fits, detail = timers_verdict(cli, "charon", "e721-toll")
        assert fits in (True, False, None) and detail and "\n" not in detail
        assert str(os.getpid()) in detail or fits is None
    finally:
        cli.close()
        srv.close()
