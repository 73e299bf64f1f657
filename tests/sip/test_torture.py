"""RFC 4475 torture-test cases (tests/sip/torture.py): valid ones parse to the right values,
invalid ones are rejected with a reason, none raises anything else, and none upsets the tracker."""

import pytest

from ipsecrtp.sip.dialog import DialogTracker
from ipsecrtp.sip.errors import SipParseError
from ipsecrtp.sip.events import MessageRejected
from ipsecrtp.sip.message import parse_message
from ipsecrtp.sip.sdp import parse_sdp

from .torture import INVALID, VALID


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_torture_message_parses_to_its_values(name):
    data, want = VALID[name]
    m = parse_message(data)
    for key in ("method", "uri", "status", "reason", "call_id", "cseq", "from_tag", "to_tag", "body"):
        if key in want:
            assert getattr(m, key) == want[key], key
    if "vias" in want:
        assert [(v.transport, v.host, v.port, v.branch) for v in m.vias] == want["vias"]
    if "via_count" in want:
        assert len(m.vias) == want["via_count"]
    if "via_transports" in want:
        assert [v.transport for v in m.vias] == want["via_transports"]
    for header, value in want.get("headers", {}).items():
        assert m.get(header) == value, header
    if "contacts" in want:
        assert len(m.get_all("contact")) == want["contacts"]
    for header in ("accept", "require"):
        if header in want:
            assert len(m.get_all(header)) == want[header]
    if "sdp_streams" in want:
        body = m.sdp_body()
        if want["sdp_streams"] is None:
            assert body is None
        else:
            assert len(parse_sdp(body).media) == want["sdp_streams"]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_torture_message_is_rejected_with_its_reason(name):
    data, reason = INVALID[name]
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    text = str(err.value)
    assert reason in text.lower(), text
    assert "\n" not in text and len(text) < 200


def test_torture_messages_through_the_tracker_never_raise():
    tr = DialogTracker()
    for i, (data, _) in enumerate(list(VALID.values()) + list(INVALID.values())):
        for ev in tr.receive(data, float(i), ("192.0.2.1", 5060)):
            assert ev.time == float(i)
    rejected = [e for d, _ in INVALID.values() for e in DialogTracker().receive(d, 0.0)]
    assert len(rejected) == len(INVALID) and all(isinstance(e, MessageRejected) for e in rejected)


def test_torture_invites_and_dialog_state():
    tr = DialogTracker()
    # wsinv carries a To tag: a re-INVITE of a dialog this tracker never saw, so no state
    assert tr.receive(VALID["3.1.1.1-wsinv"][0], 1.0) == [] and tr.dialogs == {}
    assert tr.receive(VALID["3.1.1.3-esc01"][0], 2.0) == []
    assert list(tr.dialogs) == ["esc01.239409asdfakjkn23onasd0-3234"]
    assert tr.dialogs["esc01.239409asdfakjkn23onasd0-3234"].offer is not None
