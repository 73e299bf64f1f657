"""A call left unkeyed because both ends run SRTP (srtp = "skip") ends as its own outcome, never as
"unprotected"; the decision line itself is counted by event."""

from ipsecrtp.metrics import OUTCOMES, Metrics

from .test_metrics import timeline, value


def test_an_srtp_skipped_call_is_its_own_outcome():
    m = Metrics()
    m({"event": "srtp-end-to-end", "call": "c1", "peer": "gwa", "srtp": "sdes", "t": 1.2,
       "consequence": "no SA: both ends encrypt the media themselves (srtp = skip)"})
    m({"event": "dialog-ended", "call": "c1", "reason": "bye-by-caller", "keyed": False})
    m(timeline("c1"))
    assert "srtp-end-to-end" in OUTCOMES
    assert value(m, "ipsecrtp_calls_total", outcome="srtp-end-to-end") == 1
    assert value(m, "ipsecrtp_calls_total", outcome="unprotected") == 0
    assert value(m, "ipsecrtp_decisions_total", event="srtp-end-to-end") == 1


def test_sdes_keys_in_clear_are_keyed_and_not_the_srtp_outcome():
    m = Metrics()
    m({"event": "srtp-keys-in-clear", "call": "c2", "peer": "gwa", "srtp": "sdes"})
    m({"event": "keying", "call": "c2", "peer": "gwa", "strategy": "child-per-call"})
    m(timeline("c2", "child-per-call"))
    assert value(m, "ipsecrtp_calls_total", outcome="srtp-end-to-end") == 0
    assert value(m, "ipsecrtp_decisions_total", event="srtp-keys-in-clear") == 1
