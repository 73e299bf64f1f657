"""The tracker's timers come from a heap (O(log n) whatever the number of calls): for any
interleaving of calls, media activity and timer firings, ``next_timer()`` equals the earliest
deadline a scan of every dialog gives, and firing it yields exactly what a full scan would."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ipsecrtp.sip.dialog import DialogTracker

from .build import msg, sdp

OFFER, ANSWER = sdp("198.51.100.1", "audio 10000 RTP/AVP 0"), sdp("198.51.100.2", "audio 10100 RTP/AVP 0")


def step_messages(cid: str, kind: str) -> list[bytes]:
    br = f"z9hG4bK{cid}"
    invite = msg("INVITE sip:bob@198.51.100.2 SIP/2.0", "1 INVITE", cid=cid, branch=br, body=OFFER)
    if kind == "invite":
        return [invite]
    if kind == "ring":
        return [msg("SIP/2.0 180 Ringing", "1 INVITE", cid=cid, branch=br, to_tag="tt")]
    if kind == "answer":
        return [msg("SIP/2.0 200 OK", "1 INVITE", cid=cid, branch=br, to_tag="tt", body=ANSWER,
                    extra=("Session-Expires: 90;refresher=uac",))]
    if kind == "bye":
        return [msg("BYE sip:alice@198.51.100.1 SIP/2.0", "2 BYE", cid=cid, branch=br + "b", to_tag="tt")]
    return []


def brute_force(tr: DialogTracker) -> float | None:
    times = [t for d in tr.dialogs.values() if (t := tr._deadline(d)) is not None]  # noqa: SLF001 - the oracle
    return min(times, default=None)


steps = st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3", "c4"]),
                           st.sampled_from(["invite", "ring", "answer", "bye", "media", "tick"]),
                           st.floats(0.0, 60.0)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_next_timer_is_the_earliest_deadline(ops):
    tr = DialogTracker(media_timeout=30.0, invite_timeout=180.0)
    now = 0.0
    for cid, kind, dt in ops:
        now += dt
        nt = tr.next_timer()
        assert nt == brute_force(tr)
        if nt is not None and nt <= now:
            tr.handle_timer(now)
            assert tr.next_timer() is None or tr.next_timer() > now
        if kind == "media":
            tr.media_activity(cid, now)
        elif kind != "tick":
            for data in step_messages(cid, kind):
                tr.receive(data, now)
    assert tr.next_timer() == brute_force(tr)


def test_a_thousand_calls_cost_no_scan_per_timer_query():
    tr = DialogTracker(media_timeout=30.0)
    for i in range(1000):
        for kind in ("invite", "answer"):
            for data in step_messages(f"c{i}", kind):
                tr.receive(data, float(i) / 100)
    calls = 0
    real = tr._deadline  # noqa: SLF001 - counting how many dialogs a query looks at

    def counting(d):
        nonlocal calls
        calls += 1
        return real(d)

    tr._deadline = counting  # type: ignore[method-assign]
    for _ in range(100):
        tr.next_timer()
    assert calls <= 100  # the top of the heap only, not 1000 dialogs per query
