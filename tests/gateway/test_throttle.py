"""SIP from untrusted sources held to a rate before it is parsed (gateway/throttle.py, issue 15 item 6):
a flood from one address costs a lookup a message, the peers' and sip_trusted sources are never held
back, and what is dropped is reported, bounded, once a second per source."""

from __future__ import annotations

from ipsecrtp.gateway.actions import Outbox
from ipsecrtp.gateway.throttle import CAP, SourceThrottle
from ipsecrtp.hostile_inputs import gateway_config, invite, legit_call
from ipsecrtp.sip.limits import CAPS, Limits

from .harness import Harness

FLOODER = "198.51.100.66"  # on the WAN prefix, neither gateway (198.51.100.1/.2) nor a media prefix


def test_an_untrusted_source_gets_its_rate_and_a_burst_of_as_many():
    t = SourceThrottle(10, ["198.51.100.2/32"], Outbox())
    assert [t.admit(FLOODER, 5.0) for _ in range(12)] == [True] * 10 + [False] * 2
    assert sum(t.admit(FLOODER, 5.5) for _ in range(10)) == 5  # half a second refills half the bucket
    assert t.dropped_total == 2 + 5


def test_trusted_sources_are_never_held_back():
    t = SourceThrottle(10, ["198.51.100.2", "203.0.113.0/24", "not-an-address"], Outbox())
    assert all(t.admit("198.51.100.2", 1.0) for _ in range(1000))
    assert all(t.admit("203.0.113.77", 1.0) for _ in range(1000))
    assert t.dropped_total == 0


def test_drops_are_reported_once_a_second_per_source_with_their_count():
    out = Outbox()
    t = SourceThrottle(5, [], out)
    for i in range(300):  # 100 a second for 3 s
        t.admit(FLOODER, 1.0 + i * 0.01)
    lines = [a.fields for a in out if a.event == "cap-hit"]
    assert 3 <= len(lines) <= 4 and all(x["cap"] == CAP and x["source"] == FLOODER for x in lines)
    assert CAP in CAPS
    # every drop is in a report, but those since the last one (reported with the next)
    assert t.dropped_total - 100 < sum(x["dropped"] for x in lines) <= t.dropped_total


def test_the_buckets_are_bounded():
    t = SourceThrottle(5, [], Outbox(), max_sources=3)
    for i in range(50):
        t.admit(f"198.51.100.{100 + i}", 1.0)
    assert len(t.sources) == 3 and "198.51.100.149" in t.sources


def test_a_flood_from_an_untrusted_address_is_dropped_unparsed_while_the_peers_calls_are_keyed():
    h = Harness(gateway_config("child-per-call", Limits(max_sip_per_source_per_s=50)), backend="none (dry run)")
    legit = [m for i in range(10) for m in legit_call(i)]  # from the phones' prefixes: trusted
    t = 1.0
    for i in range(2000):  # 1000 INVITEs a second for 2 s
        h.on_packet(t, invite(f"flood-{i}", src=FLOODER))
        if i % 20 == 0 and legit:
            h.on_packet(t, legit.pop(0))
        t += 0.001
    flood = [c for c in h.core.tracker.dialogs if c.startswith("flood-")]
    assert 50 <= len(flood) <= 50 + 2 * 50 + 1  # the burst, then the rate: the rest never parsed
    assert h.core.throttle.dropped_total == 2000 - len(flood)
    assert sorted(k["call"] for k in h.logs("keying")) == sorted(f"legit-{i}" for i in range(10))
    assert {c["cap"] for c in h.logs("cap-hit")} == {CAP}
