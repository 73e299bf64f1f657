"""`bench faults`' text report (pure): the ike-loss scenario has no fault to recover from, so its row
says how long after their answer its calls were keyed instead of a recovery time."""

from ipsecrtp.netns.faults import DESCRIPTIONS, SCENARIOS, format_text, spread


def row(name: str, **extra) -> dict:
    base = {"scenario": name, "description": DESCRIPTIONS[name], "calls_live": 20, "protected_again_s": 3.04,
            "after_restart_s": 1.96, "rtp_clear": 0, "dropped": 12, "media_sent": 100, "media_received": 90,
            "leaks": {}, "keying_failed": 0, "sa_lost": 20}
    return {**base, **extra}


def test_every_scenario_is_described():
    assert set(DESCRIPTIONS) == set(SCENARIOS) and "ike-loss" in SCENARIOS


def test_the_ike_loss_row_reports_keying_after_answer_and_the_others_their_recovery():
    report = {"date": "2026-12-02 17:00 UTC", "machine": {"host": "h", "cpu": "c", "nproc": 2, "kernel": "k"},
              "params": {"calls": 20, "rate": 10.0, "hold": 40.0, "ptime": 20.0},
              "scenarios": [row("charon-kill-gwb"),
                            row("ike-loss", protected_again_s=None, after_restart_s=None, sa_lost=0,
                                keyed_after_answer=spread([0.03, 0.02, 0.61]))]}
    lines = format_text(report).splitlines()
    kill = next(ln for ln in lines if ln.startswith("charon-kill-gwb"))
    loss = next(ln for ln in lines if ln.startswith("ike-loss"))
    assert "3.04 (1.96)" in kill
    assert "keyed 3, after answer median 30 ms, max 610 ms" in loss and "never" not in loss
