"""Property-based tests (hypothesis): generated SIP and SDP in every legal spelling parse to the
values they were generated from; arbitrary bytes never raise anything but the parsers' own errors."""

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecrtp.media import flows
from ipsecrtp.sip.dialog import DialogTracker
from ipsecrtp.sip.errors import SipParseError
from ipsecrtp.sip.message import COMPACT, StreamFramer, parse_message
from ipsecrtp.sip.sdp import SdpError, parse_sdp

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_!%*+`'~", min_size=1,
                max_size=20)
LONG = {v: k for k, v in COMPACT.items()}


def spell(rng_case: int, name: str, compact: bool) -> str:
    """A header name as a sender may write it: compact form or any letter case."""
    if compact and name in LONG:
        name = LONG[name]
    return name.upper() if rng_case == 1 else name.title() if rng_case == 2 else name


@st.composite
def sip_messages(draw):
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "PRACK", "OPTIONS", "INFO"]))
    request = draw(st.booleans())
    call_id = draw(TOKEN) + "@" + draw(TOKEN)
    cseq = draw(st.integers(0, 2**31 - 1))
    from_tag, to_tag = draw(TOKEN), draw(st.none() | TOKEN)
    branch = "z9hG4bK" + draw(TOKEN)
    host = draw(st.sampled_from(["198.51.100.7", "[2001:db8::7]", "gw.example.com"]))
    port = draw(st.none() | st.integers(1, 65535))
    body = draw(st.binary(max_size=200))
    display = draw(st.none() | st.text(alphabet='ab c"\\', max_size=10))
    quoted = "" if display is None else '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '" '
    sentby = host + (f":{port}" if port else "")
    values = {
        "via": f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {sentby};branch={branch}",
        "from": f"{quoted}<sip:a@example.com>;tag={from_tag}",
        "to": "<sip:b@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "call-id": call_id,
        "cseq": f"{cseq} {method}",
        "content-length": str(len(body)),
    }
    order = draw(st.permutations(list(values)))
    lines = []
    for name in order:
        value = values[name]
        sep = draw(st.sampled_from([": ", ":", " : ", ":\t"]))
        if draw(st.booleans()) and " " in value:  # fold at a space (RFC 3261 §7.3.1)
            i = value.index(" ")
            value = value[:i] + "\r\n " + value[i + 1:]
        lines.append(spell(draw(st.integers(0, 2)), name, draw(st.booleans())) + sep + value)
    start = f"{method} sip:b@example.com SIP/2.0" if request else f"SIP/2.0 {draw(st.integers(100, 699))} Whatever"
    data = ("\r\n".join([start, *lines]) + "\r\n\r\n").encode() + body
    expect = {"call_id": call_id, "cseq": (cseq, method), "from_tag": from_tag, "to_tag": to_tag,
              "branch": branch, "host": host.strip("[]"), "port": port, "body": body, "request": request}
    return data, expect


@SETTINGS
@given(sip_messages())
def test_generated_messages_parse_to_their_values(case):
    data, want = case
    m = parse_message(data)
    assert m.is_request == want["request"]
    assert (m.call_id, m.cseq, m.from_tag, m.to_tag, m.body) == (
        want["call_id"], want["cseq"], want["from_tag"], want["to_tag"], want["body"])
    via = m.vias[0]
    assert (via.branch, via.host, via.port) == (want["branch"], want["host"], want["port"])


@SETTINGS
@given(st.lists(sip_messages(), min_size=1, max_size=4), st.data())
def test_stream_framing_is_independent_of_segmentation(cases, data):
    stream = b"".join(d for d, _ in cases)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer, out = StreamFramer(), []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(framer.feed(stream[a:b]))
    assert [parse_message(m, stream=True).call_id for m in out] == [w["call_id"] for _, w in cases]


@st.composite
def media_lines(draw, addr):
    port = draw(st.integers(1024, 65000)) // 2 * 2
    count = draw(st.integers(1, 3))
    attrs = []
    mux = draw(st.booleans())
    if mux:
        attrs.append("a=rtcp-mux")
    rtcp = draw(st.none() | st.integers(1024, 65000))
    if rtcp is not None:
        attrs.append(f"a=rtcp:{rtcp}")
    rejected = draw(st.integers(0, 9)) == 0
    line = f"m=audio {0 if rejected else port}{'/' + str(count) if count > 1 else ''} RTP/AVP 0"
    return "\r\n".join([line, *attrs]), {"port": 0 if rejected else port, "count": count, "mux": mux, "rtcp": rtcp}


@st.composite
def offer_answer(draw):
    n = draw(st.integers(1, 3))
    v6 = draw(st.booleans())
    a_addr, b_addr = ("2001:db8::1", "2001:db8::2") if v6 else ("198.51.100.1", "198.51.100.2")
    fam = "IP6" if v6 else "IP4"
    sides = []
    for addr in (a_addr, b_addr):
        ms = [draw(media_lines(addr)) for _ in range(n)]
        body = (f"v=0\r\no=- 1 1 IN {fam} {addr}\r\ns=-\r\nc=IN {fam} {addr}\r\nt=0 0\r\n"
                + "".join(m + "\r\n" for m, _ in ms)).encode()
        sides.append((body, [info for _, info in ms], addr))
    return sides


@SETTINGS
@given(offer_answer())
def test_flows_follow_ports_counts_mux_and_rtcp(sides):
    (ob, oi, oaddr), (ab, ai, aaddr) = sides
    got = flows(parse_sdp(ob), parse_sdp(ab))
    expected = 0
    for o, a in zip(oi, ai, strict=True):
        if o["port"] and a["port"]:
            pairs = min(o["count"], a["count"])
            expected += pairs * (1 if o["mux"] and a["mux"] else 2)
    assert len(got) == expected
    for f in got:
        assert ipaddress.ip_address(f.offerer.address) == ipaddress.ip_address(oaddr)
        assert ipaddress.ip_address(f.answerer.address) == ipaddress.ip_address(aaddr)
        o, a = oi[f.stream], ai[f.stream]
        if f.kind == "rtp+rtcp":
            assert o["mux"] and a["mux"]
        if f.kind == "rtcp" and o["count"] == 1 and o["rtcp"] is not None:
            assert f.offerer.port == o["rtcp"]  # a=rtcp wins for a single stream (RFC 3605)
        if f.kind == "rtcp" and o["rtcp"] is None:
            assert f.offerer.port % 2 == 1
        if f.kind == "rtp":
            assert (f.offerer.port - o["port"]) % 2 == 0 and f.offerer.port >= o["port"]


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_parse_errors(data):
    try:
        parse_message(data)
    except SipParseError as exc:
        assert "\n" not in str(exc)
    try:
        parse_sdp(data)
    except SdpError as exc:
        assert "\n" not in str(exc)
    DialogTracker().receive(data, 0.0)
    StreamFramer().feed(data)


@SETTINGS
@given(sip_messages(), st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_corrupted_generated_messages_never_escape(case, pos, junk):
    data, _ = case
    bad = data[:pos] + junk + data[pos:]
    tr = DialogTracker()
    for ev in tr.receive(bad, 1.0):
        assert ev.time == 1.0
    tr.handle_timer(1000.0)
