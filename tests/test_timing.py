"""Timelines, RFC 6076 metrics, IKE exchange pairing, budgets and the what-if table (pure)."""

import struct

from ipsecrtp.timing import BUDGETS, CallTimeline, parse_ike, verdict, what_if


def ike(exch: int, response: bool, initiator: bool, msgid: int, spi: int = 0x1122334455667788, marker=True) -> bytes:
    flags = (0x20 if response else 0) | (0x08 if initiator else 0)
    hdr = struct.pack("!QQBBBBII", spi, 0x99, 33, 0x20, exch, flags, msgid, 28)
    return (b"\0\0\0\0" if marker else b"") + hdr


def test_parse_ike_header_and_reject_esp():
    p = parse_ike(ike(36, False, True, 5), 4500, 1.0, "198.51.100.2")
    assert (p.exchange, p.response, p.initiator, p.msgid) == ("CREATE_CHILD_SA", False, True, 5)
    assert parse_ike(ike(34, False, True, 0, marker=False), 500, 1.0, "x").exchange == "IKE_SA_INIT"
    assert parse_ike(b"\x12\x34\x56\x78" + bytes(40), 4500, 1.0, "x") is None  # ESP-in-UDP
    assert parse_ike(b"\0\0\0\0" + bytes(10), 4500, 1.0, "x") is None
    assert parse_ike(ike(99, False, True, 0), 4500, 1.0, "x") is None


def timeline() -> CallTimeline:
    tl = CallTimeline("c1", gateway="gwb", role="initiator", invite=10.0, first_provisional=10.01,
                      first_18x=10.05, answer_sdp=12.0, final=12.0, final_status=200, ack=12.05,
                      keying_started=12.001, sa_up=12.110, first_esp=12.115, clear_after_answer=5,
                      bye=20.0, bye_response=20.02)
    # CREATE_CHILD_SA request, retransmitted once, answered; a request from the other side too
    for t, resp, init in ((12.002, False, True), (12.050, False, True), (12.108, True, False)):
        tl.ike.append(parse_ike(ike(36, resp, init, 7), 4500, t, "198.51.100.2"))
    tl.ike.append(parse_ike(ike(37, False, False, 3), 4500, 12.2, "198.51.100.1"))
    return tl


def test_metrics_follow_rfc6076_and_pair_ike_exchanges():
    m = timeline().metrics()
    assert m["srd_ms"] == 50.0  # INVITE to the first non-100 provisional
    assert m["sdd_ms"] == 20.0  # BYE to its response
    assert m["keying_ms"] == 109.0
    assert m["ike_exchanges"] == ["CREATE_CHILD_SA", "INFORMATIONAL"]
    assert m["ike_rtts_ms"] == [106.0] and m["ike_retransmissions"] == 1
    assert m["post_answer_gap_ms"] == 110.0 and m["clear_rtp_after_answer"] == 5
    assert m["sa_before_answer"] is False


def test_srd_falls_back_to_the_final_response_and_gap_is_zero_when_keyed_before_answer():
    tl = CallTimeline("c2", invite=0.0, final=0.3, final_status=200, answer_sdp=0.3, sa_up=0.2)
    m = tl.metrics()
    assert m["srd_ms"] == 300.0 and m["post_answer_gap_ms"] == 0.0 and m["sa_before_answer"] is True


def test_verdict_and_what_if():
    b = BUDGETS["e721-toll"]
    v = verdict(timeline().metrics(), b)
    assert v["pdd_ok"] is True and v["gap_ok"] is True and v["protected_from_first_packet"] is False
    rows = {r["scheme"].split()[0] + str(r["rtts"]): r for r in what_if(100.0, b, ring_ms=1000.0)}
    assert rows["IKEv14.5"]["cost_ms"] == 450.0 and not rows["IKEv14.5"]["fits_at_answer"]
    assert rows["IKEv14.5"]["fits_speculative"]  # a ring of 1 s hides 450 ms
    assert rows["IKEv21.0"]["fits_at_answer"] and rows["IKEv22.0"]["cost_ms"] == 200.0
    assert not rows["IKEv22.0"]["fits_at_answer"]
    assert all(not b_.verified for b_ in BUDGETS.values())  # said, not hidden
