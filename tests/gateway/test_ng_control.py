"""The ng control input of the core (gateway/control.py): a proxy's offer, answer and delete make
the same decisions as the same call's SIP seen on the wire, a call learnt both ways is keyed once,
and a command that does not fit changes nothing."""

from __future__ import annotations

import copy

import pytest

from ipsecrtp.gateway import snapshot
from ipsecrtp.gateway.actions import InstallChild, Log, RemoveChild
from ipsecrtp.gateway.control import ControlRequest

from .harness import Harness
from .scenario import PHONE_A, PHONE_B, TEARDOWN, Call, gateway, sdp

PROXY = ("127.0.0.1", 40000)
OFFER = sdp(PHONE_A, 10000)
ANSWER = sdp(PHONE_B, 10100)


def ng(gw: Harness, now: float, command: str, **kw) -> dict:
    reply, actions = gw.core.control(now, ControlRequest(command, source=PROXY, **kw))
    gw._take(now, actions)
    return reply


def ng_call(gw: Harness, cid: str = "c1", t: float = 1.0) -> tuple[dict, dict]:
    offer = ng(gw, t, "offer", call_id=cid, from_tag="a1", sdp=OFFER)
    answer = ng(gw, t + 0.5, "answer", call_id=cid, from_tag="a1", to_tag="b1", sdp=ANSWER)
    return offer, answer


def installs(gw: Harness) -> list[tuple[str, str, tuple, tuple]]:
    return [(a.call_id, a.child, a.local_ts, a.remote_ts) for a in gw.of(InstallChild)]


def keying(gw: Harness) -> list[tuple]:
    """The decisions, without the log lines' times and the ng lines themselves."""
    return [a for _, a in gw.actions if not isinstance(a, Log)]


def test_ping_pongs_and_changes_nothing():
    gw = gateway("gwb", "child-per-call")
    before = len(gw.actions)
    assert ng(gw, 1.0, "ping") == {"result": "pong"}
    assert len(gw.actions) == before


def test_offer_and_answer_key_what_the_same_sip_on_the_wire_keys():
    wire, proxy = gateway("gwb", "child-per-call"), gateway("gwb", "child-per-call")
    c = Call("c1")
    for t, m in ((1.0, c.invite()), (1.5, c.ok()), (1.6, c.ack())):
        wire.on_packet(t, m)
    offer, answer = ng_call(proxy)
    # the SDP goes back unchanged: ipsecrtp keys the media, it does not relay it
    assert offer == {"result": "ok", "sdp": OFFER} and answer == {"result": "ok", "sdp": ANSWER}
    assert installs(proxy) == installs(wire) and len(installs(proxy)) == 1
    assert installs(proxy)[0][2] == (f"{PHONE_B}/32[udp/10100]", f"{PHONE_B}/32[udp/10101]")
    keyed = proxy.logs("keying")
    assert keyed[0]["trigger"] == "ng answer" and keyed[0]["role"] == "initiator"
    assert [x["command"] for x in proxy.logs("ng")] == ["offer", "answer"]


def test_the_responder_also_decides_from_the_proxy():
    gwa = gateway("gwa", "child-per-call")
    ng_call(gwa)
    assert gwa.of(InstallChild) == []  # gwb (the answerer's side) initiates
    assert gwa.logs("keying")[0]["role"] == "responder"


@pytest.mark.parametrize("order", ["ng-first", "wire-first", "interleaved"])
def test_a_call_seen_on_the_wire_and_told_by_the_proxy_is_keyed_once(order):
    gw = gateway("gwb", "child-per-call")
    c = Call("c1")
    wire = [(1.0, c.invite()), (1.5, c.ok()), (1.6, c.ack())]
    if order == "ng-first":
        ng_call(gw)
        for t, m in wire:
            gw.on_packet(t + 0.01, m)
    elif order == "wire-first":
        for t, m in wire:
            gw.on_packet(t, m)
        ng_call(gw, t=2.0)
    else:
        gw.on_packet(*wire[0])
        ng(gw, 1.01, "offer", call_id="c1", from_tag="a1", sdp=OFFER)
        ng(gw, 1.49, "answer", call_id="c1", from_tag="a1", to_tag="b1", sdp=ANSWER)
        gw.on_packet(*wire[1])
        gw.on_packet(*wire[2])
    gw.yes(2.5)
    assert len(installs(gw)) == 1, installs(gw)
    # and a BYE on the wire ends it, as the proxy's delete would
    gw.on_packet(5.0, c.bye())
    gw.yes(5.0)
    gw.run_until(5.0 + TEARDOWN)
    assert [a.call_id for a in gw.of(RemoveChild)] == ["c1"]


def test_delete_unkeys_after_the_teardown_delay_and_a_second_delete_is_refused():
    gw = gateway("gwb", "child-per-call")
    ng_call(gw)
    gw.yes(1.5)
    assert ng(gw, 5.0, "delete", call_id="c1", from_tag="a1") == {"result": "ok"}
    assert gw.logs("unkeying")[0]["reason"] == "ng-delete"
    gw.yes(5.0)
    assert gw.of(RemoveChild) == []
    gw.run_until(5.0 + TEARDOWN)
    assert [a.child for a in gw.of(RemoveChild)] == [installs(gw)[0][1]]
    again = ng(gw, 6.0, "delete", call_id="c1")
    assert again == {"result": "error", "error-reason": "unknown call-id"}


def test_query_and_list_report_flows_sa_and_keying_times():
    gw = gateway("gwb", "child-per-call")
    ng_call(gw)
    gw.yes(1.7)
    q = ng(gw, 2.0, "query", call_id="c1")
    assert q["result"] == "ok" and q["call"] == "c1" and q["dialog"]["state"] == "confirmed"
    assert {(f["offerer"], f["answerer"]) for f in q["flows"]} == {(f"{PHONE_A}:10000", f"{PHONE_B}:10100"),
                                                                    (f"{PHONE_A}:10001", f"{PHONE_B}:10101")}
    (sa,) = q["sas"]
    assert sa["child"] == installs(gw)[0][1] and sa["state"] == "up" and sa["sa"] is not None
    assert q["times"]["invite"] == 1.0 and q["times"]["sa_up"] == 1.7
    lst = ng(gw, 2.0, "list")
    assert lst["calls"] == ["c1"] and lst["details"][0]["sas"][0]["child"] == sa["child"]
    assert ng(gw, 2.0, "query", call_id="nope") == {"result": "error", "error-reason": "unknown call-id"}


def test_a_reoffer_in_the_dialog_rekeys_the_call():
    gw = gateway("gwb", "child-per-call")
    ng_call(gw)
    gw.yes(1.6)
    ng(gw, 3.0, "offer", call_id="c1", from_tag="a1", to_tag="b1", sdp=sdp(PHONE_A, 10010, 2))
    assert len(installs(gw)) == 1  # nothing until the answer
    r = ng(gw, 3.1, "answer", call_id="c1", from_tag="a1", to_tag="b1", sdp=sdp(PHONE_B, 10100, 2))
    assert r["result"] == "ok"
    assert len(installs(gw)) == 2 and installs(gw)[1][3][0] == f"{PHONE_A}/32[udp/10010]"
    # the callee's own re-offer: its From tag is the callee's, its To tag the caller's
    ng(gw, 4.0, "offer", call_id="c1", from_tag="b1", to_tag="a1", sdp=sdp(PHONE_B, 10110, 3))
    ng(gw, 4.1, "answer", call_id="c1", from_tag="b1", to_tag="a1", sdp=sdp(PHONE_A, 10010, 3))
    last = gw.logs("keying")[-1]
    # the caller answers now, so gwa initiates (the initiator rule), as for that re-INVITE on the wire
    assert last["flows"][0]["offerer"] == f"{PHONE_B}:10110" and last["role"] == "responder"


def test_hostile_sdp_from_the_proxy_is_refused_like_hostile_sdp_on_the_wire():
    gw = gateway("gwb", "child-per-call")
    ng(gw, 1.0, "offer", call_id="h", from_tag="a1", sdp=OFFER)
    r = ng(gw, 1.1, "answer", call_id="h", from_tag="a1", to_tag="b1", sdp=sdp("203.0.113.20", 5060))
    assert r["result"] == "ok"  # the proxy's call goes on; only the keying is refused
    assert gw.of(InstallChild) == [] and gw.logs("refused")


BAD = [
    ("answer", dict(call_id="unknown", from_tag="a1", to_tag="b1", sdp=ANSWER), "unknown call-id"),
    ("answer", dict(call_id="c1", from_tag="zz", to_tag="b1", sdp=ANSWER), "from-tag and to-tag"),
    ("answer", dict(call_id="c1", from_tag="a1", to_tag="", sdp=ANSWER), "without to-tag"),
    ("answer", dict(call_id="c1", from_tag="a1", to_tag="b2", sdp=b"v=0\r\nm=audio x\r\n"), "bad SDP"),
    ("offer", dict(call_id="c1", from_tag="zz", to_tag="b1", sdp=OFFER), "from-tag and to-tag"),
    ("offer", dict(call_id="c2", from_tag="", sdp=OFFER), "without from-tag"),
    ("offer", dict(call_id="c2", from_tag="a1", sdp=b"garbage"), "bad SDP"),
    ("delete", dict(call_id="c1", from_tag="zz"), "not the call's"),
    ("delete", dict(call_id="c9"), "unknown call-id"),
    ("query", dict(call_id="c9"), "unknown call-id"),
    ("frobnicate", dict(call_id="c1"), "unknown command"),
]


@pytest.mark.parametrize(("command", "fields", "reason"), BAD, ids=[f"{b[0]}-{b[2]}" for b in BAD])
def test_a_command_that_does_not_fit_is_an_error_and_changes_nothing(command, fields, reason):
    gw = gateway("gwb", "child-per-call")
    ng(gw, 1.0, "offer", call_id="c1", from_tag="a1", sdp=OFFER)  # an offered, unanswered call
    dialogs = copy.deepcopy(gw.core.tracker.dialogs)
    view, decided = snapshot.calls(gw.core, 1.2), keying(gw)
    r = ng(gw, 1.2, command, **fields)
    assert r["result"] == "error" and reason in r["error-reason"], r
    assert gw.core.tracker.dialogs == dialogs
    assert snapshot.calls(gw.core, 1.2) == view and keying(gw) == decided
    assert gw.logs("ng")[-1]["result"] == "error"
    # and the call goes on as if the bad command had never come
    ng(gw, 1.5, "answer", call_id="c1", from_tag="a1", to_tag="b1", sdp=ANSWER)
    assert len(installs(gw)) == 1


def test_a_responders_sa_up_before_its_proxy_told_it_the_answer_is_claimed_by_the_call():
    """The initiator's proxy told its gateway first, so the SA reached the responder before the
    responder's proxy relayed the answer (seen in the TLS lab): attributed when the answer comes."""
    from ipsecrtp.gateway.actions import ChildUpDown

    gwa = gateway("gwa", "child-per-call")
    ng(gwa, 1.0, "offer", call_id="c1", from_tag="a1", sdp=OFFER)
    sa = gwa.child_sa("media", (f"{PHONE_A}/32[udp/10000]", f"{PHONE_A}/32[udp/10001]"),
                      (f"{PHONE_B}/32[udp/10100]", f"{PHONE_B}/32[udp/10101]"))
    gwa.charon(1.4, ChildUpDown(True, "peer", sa))
    assert gwa.logs("sa-up")[0]["call"] is None  # nobody's yet
    ng(gwa, 1.5, "answer", call_id="c1", from_tag="a1", to_tag="b1", sdp=ANSWER)
    claimed = [e for e in gwa.logs("sa-up") if e["call"] == "c1"]
    assert len(claimed) == 1 and claimed[0]["sa"] == sa["uniqueid"]
    assert gwa.core.keying.calls["c1"].state.value == "up"
    assert gwa.core.timelines.get("c1").sa_up == 1.4  # when it really came up
    # an SA with other flows is not claimed by a call
    other = gateway("gwa", "child-per-call")
    ng(other, 1.0, "offer", call_id="c1", from_tag="a1", sdp=OFFER)
    far = other.child_sa("media", (f"{PHONE_A}/32[udp/10050]",), (f"{PHONE_B}/32[udp/10150]",))
    other.charon(1.4, ChildUpDown(True, "peer", far))
    ng(other, 1.5, "answer", call_id="c1", from_tag="a1", to_tag="b1", sdp=ANSWER)
    assert not [e for e in other.logs("sa-up") if e["call"] == "c1"]


def test_the_wire_ends_a_call_the_proxy_reported_first():
    """ng offer, then the same INVITE on the wire: its 487 seen on the wire ends the call (the proxy's
    INVITE carried no CSeq, the wire's does)."""
    gw = gateway("gwb", "speculative")
    c = Call("c1")
    ng(gw, 1.0, "offer", call_id="c1", from_tag="a1", sdp=OFFER)
    gw.on_packet(1.01, c.invite())
    gw.on_packet(1.2, c.provisional())
    gw.on_packet(2.0, c.cancel())
    gw.on_packet(2.01, c.final(487))
    ended = [e for e in gw.logs() if e["event"] in ("dialog-ended", "unkeying") and e.get("call") == "c1"]
    assert ended and ended[0]["reason"] == "cancelled"
    assert gw.core.tracker.dialogs["c1"].state == "terminated"


def test_a_delete_naming_one_failed_fork_leaves_the_call_ringing_on_the_others():
    gw = gateway("gwb", "child-per-call")
    c = Call("c1")
    ng(gw, 1.0, "offer", call_id="c1", from_tag="a1", sdp=OFFER)
    gw.on_packet(1.01, c.invite())
    gw.on_packet(1.1, c.provisional(to_tag="f1"))
    gw.on_packet(1.1, c.provisional(to_tag="f2"))
    assert ng(gw, 1.5, "delete", call_id="c1", from_tag="a1", to_tag="f1") == {"result": "ok"}
    assert gw.core.tracker.dialogs["c1"].state == "early" and "f1" not in gw.core.tracker.dialogs["c1"].legs
    assert ng(gw, 2.0, "answer", call_id="c1", from_tag="a1", to_tag="f2", sdp=ANSWER)["result"] == "ok"
    assert len(installs(gw)) == 1
