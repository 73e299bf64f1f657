"""Prometheus metrics of a running controller, derived from its decision log.

:class:`Metrics` is a :class:`~ipsecrtp.log.DecisionLog` listener: it sees every decision record as
it is written and maps it to counters, gauges and histograms. Counting only what is logged keeps
the two views in agreement by construction (a scrape can be checked against the log line by line)
and keeps the gateway core free of any metrics code. :class:`Exporter` serves one registry over
HTTP with ``prometheus_client``'s own server, on a thread of its own.

Labels are bounded sets only: strategies and peer names (from the configuration), outcome and
reason *classes* (below), event names (from the code). Free text, call ids, child names and
addresses never become labels: each distinct label value is a time series kept forever.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector

from .keying.strongswan import OPERATIONS
from .sip.limits import CAPS

# from a LAN's few ms to a 300 ms RTT WAN with one lost IKE packet (charon's first retransmit: 4 s)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# calls remembered between their first decision and their timeline: a call whose timeline never
# comes (an evicted dialog, a stopped controller) must not grow the table without end
CALL_MEMORY = 4096
NONE = "none"  # label value where a call was never keyed (no strategy, no peer)

# reason text -> class, first match wins (the text is charon's or the kernel's: substrings only)
FAILURE_CLASSES = (
    ("not installed after initiate", "not-installed"),
    ("pre-keyed install", "prekeyed-install"),
    ("pre-keyed removal", "prekeyed-removal"),
    ("no charon VICI socket", "vici-unreachable"),
    ("charon-timeout", "charon-timeout"),  # charon hung: a command not answered in time
    ("not established after", "initiate-timeout"),
    ("timeout", "initiate-timeout"),
    ("timed out", "initiate-timeout"),
    ("initiate", "initiate-failed"),
    ("terminate", "terminate-failed"),
    ("refused by charon", "charon-refused"),
    ("Error:", "vici-session"),  # an exception's repr: a broken VICI session
)
REFUSAL_CLASSES = (
    ("private address behind a NAT", "nat-private-address"),
    ("a SIP ALG rewrote", "nat-alg"),
    ("outside the RTP range", "port-outside-range"),
    ("in neither peer's media prefixes", "outside-media-prefixes"),
    ("does not join a local and a remote", "not-local-to-remote"),
)


# bounded label values of the SA-loss and eviction series (gateway/adoption.py, sip/limits.py)
SA_LOST_REASONS = ("charon-restarted", "child-down")
EVICTION_CAPS = ("dialogs", "dialogs-per-source")
EVICTED_STATES = ("trying", "early", "terminated")

# srtp-end-to-end: answered, both ends SRTP, left unkeyed by the peer's srtp = "skip" (README)
OUTCOMES = ("keyed", "refused", "keying-failed", "no-media", "srtp-end-to-end", "unprotected", "cancelled", "rejected",
            "unanswered")
SIP_REJECTIONS = ("malformed", "bad-sdp")


def _bounded(value: Any, known: tuple[str, ...]) -> str:
    """A label value from a known set ("other" for anything else: a label never grows unbounded)."""
    return value if value in known else "other"


def classify(text: str | None, classes: tuple[tuple[str, str], ...]) -> str:
    text = text or ""
    return next((cls for needle, cls in classes if needle in text), "other")


@dataclass
class _Call:
    """What a call's later records need and do not carry themselves."""

    strategy: str = NONE
    peer: str = NONE
    refused: bool = False
    failed: bool = False
    no_flows: bool = False
    srtp: bool = False  # left unkeyed: both ends run SRTP (srtp = "skip")


def call_outcome(timeline: dict[str, Any], call: _Call) -> str:
    """One class per finished call, from its timeline and what was logged about it before."""
    reason = str(timeline.get("end_reason") or "")
    status = timeline.get("final_status")
    if timeline.get("sa_up") is not None:
        return "keyed"
    if reason == "cancelled":
        return "cancelled"
    if reason.startswith("rejected") or (status is not None and status >= 300):
        return "rejected"
    if status is None or not 200 <= status < 300:
        return "unanswered"
    if call.refused:
        return "refused"
    if call.failed:
        return "keying-failed"
    if call.no_flows:
        return "no-media"
    if call.srtp:
        return "srtp-end-to-end"
    # answered and keying decided, yet no SA came up and nothing failed: a dry run, or a call that
    # ended before its SA did
    return "unprotected"


class Metrics:
    """The listener: ``log.listeners.append(metrics)``. Called under the log's lock, so records
    arrive one at a time and in the order they were written."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        by_sp = ("strategy", "peer")
        self.decisions = Counter("ipsecrtp_decisions_total", "Decision log lines written, by event", ["event"],
                                 registry=r)
        self.calls_active = Gauge("ipsecrtp_calls_active", "Calls keyed right now (from the keying decision to "
                                  "the end of the dialog, or a refusal)", registry=r)
        self.calls = Counter("ipsecrtp_calls_total", "Calls over, by outcome (one per timeline line)", ["outcome"],
                             registry=r)
        self.child_sas = Gauge("ipsecrtp_child_sas_active", "CHILD_SAs charon reported up and not yet down",
                               registry=r)
        self.keying = Histogram("ipsecrtp_keying_seconds", "Set-up time of an SA this gateway asked for (initiate "
                                "sent to CHILD_SA installed; a pre-keyed install)", by_sp, buckets=SECONDS_BUCKETS,
                                registry=r)
        self.gap = Histogram("ipsecrtp_post_answer_gap_seconds", "From the 2xx to the call's CHILD_SA up on this "
                             "gateway (0: up before the answer)", by_sp, buckets=SECONDS_BUCKETS, registry=r)
        self.failures = Counter("ipsecrtp_keying_failures_total", "Keying failures, by reason class", ["reason"],
                                registry=r)
        self.refused = Counter("ipsecrtp_flows_refused_total", "Media flows refused keying, by reason class",
                               ["reason"], registry=r)
        self.clear = Counter("ipsecrtp_rtp_clear_packets_total", "RTP/RTCP packets of a call seen in clear on the "
                             "WAN between its answer and its first ESP packet", by_sp, registry=r)
        self.clear_later = Counter("ipsecrtp_rtp_clear_after_protection_packets_total", "RTP/RTCP of a call this "
                                   "gateway sent in clear on the WAN after the call had been protected (its SA "
                                   "lost mid-call, protect = opportunistic)", by_sp, registry=r)
        self.ike_retransmissions = Counter("ipsecrtp_ike_retransmissions_total", "IKE requests sent again while "
                                           "keying a call (seen on the wire)", by_sp, registry=r)
        self.sip_rejected = Counter("ipsecrtp_sip_messages_rejected_total", "SIP messages not accepted, by reason "
                                    "class", ["reason"], registry=r)
        self.events_lost = Counter("ipsecrtp_vici_events_lost_total", "Times charon's event stream broke",
                                   registry=r)
        self.charon_timeouts = Counter("ipsecrtp_charon_timeouts_total", "VICI commands charon did not answer "
                                       "in time (hung), by operation", ["operation"], registry=r)
        self.reconnects = Counter("ipsecrtp_vici_reconnects_total", "Times a VICI session was opened again after it "
                                  "broke", registry=r)
        self.sas_lost = Counter("ipsecrtp_sas_lost_total", "Live calls' CHILD_SAs gone while the call went on "
                                "(charon restarted here, or reported down unasked: the peer lost), by reason",
                                ["reason"], registry=r)
        self.sa_recovery = Histogram("ipsecrtp_sa_recovery_seconds", "From a live call's SA lost to its new SA up "
                                     "(this gateway keyed it again), by reason", ["reason"],
                                     buckets=SECONDS_BUCKETS + (60.0, 180.0), registry=r)
        self.evicted = Counter("ipsecrtp_dialogs_evicted_total", "Dialogs dropped to make room under a dialogs cap "
                               "(the oldest ended, else unanswered, first), by cap and the dialog's state",
                               ["cap", "state"], registry=r)
        self.cap_hits = Counter("ipsecrtp_cap_hits_total", "Inputs beyond a cap of [controller] (max_* keys), by cap; "
                                "for sip-per-source-per-s the messages dropped unparsed (reported at most once a "
                                "second per source)", ["cap"], registry=r)
        self.blocked = Counter("ipsecrtp_media_blocked_packets_total", "Media packets the xfrm block policies "
                               "kept from the WAN (kernel-netlink, protect = required; the kernel counts them "
                               "per namespace, not per call)", registry=r)
        self.errors = Counter("ipsecrtp_metrics_errors_total", "Decision records the metrics could not read",
                              registry=r)
        # every series of a bounded label set exists from the start at 0: a rate() or an alert on a
        # class that has not happened yet then sees 0, not an absent series
        for labels, values in ((self.calls, OUTCOMES), (self.sip_rejected, SIP_REJECTIONS),
                               (self.failures, [c for _, c in FAILURE_CLASSES] + ["other"]),
                               (self.refused, [c for _, c in REFUSAL_CLASSES] + ["other"]),
                               (self.sas_lost, SA_LOST_REASONS), (self.sa_recovery, SA_LOST_REASONS),
                               (self.charon_timeouts, (*OPERATIONS, "other")), (self.cap_hits, (*CAPS, "other"))):
            for v in values:
                labels.labels(v)
        for cap in EVICTION_CAPS:
            for state in EVICTED_STATES:
                self.evicted.labels(cap, state)
        self._calls: collections.OrderedDict[str, _Call] = collections.OrderedDict()
        self._keyed: set[str] = set()
        self._children: set[str] = set()
        self._handlers = {
            "keying": self._keying, "keying-speculative": self._keying, "refused": self._refused,
            "no-flows": self._no_flows, "keying-failed": self._failed, "unkeying": self._unkeying,
            "srtp-end-to-end": self._srtp,
            "dialog-ended": self._ended, "sa-up": self._sa_up, "sa-down": self._sa_down,
            "sa-initiated": self._initiated, "timeline": self._timeline, "sip-rejected": self._sip_rejected,
            "events-lost": lambda rec: self.events_lost.inc(),
            "charon-timeout": lambda rec: self.charon_timeouts.labels(
                rec["op"] if rec.get("op") in OPERATIONS else "other").inc(),
            "sa-lost": lambda rec: self.sas_lost.labels(_bounded(rec.get("reason"), SA_LOST_REASONS)).inc(),
            "sa-recovered": lambda rec: self.sa_recovery.labels(
                _bounded(rec.get("reason"), SA_LOST_REASONS)).observe(float(rec["outage_s"])),
            "cap-hit": lambda rec: self.cap_hits.labels(_bounded(rec.get("cap"), CAPS)).inc(int(rec.get("dropped", 1))),
            "dialog-evicted": lambda rec: self.evicted.labels(_bounded(rec.get("cap"), EVICTION_CAPS),
                                                              _bounded(rec.get("state"), EVICTED_STATES)).inc(),
            # charon answers again after a restart or a hang (the shell reconnected, issue 15)
            "vici-reconnected": lambda rec: self.reconnects.inc(),
            "media-blocked": lambda rec: self.blocked.inc(int(rec["packets"])),
        }

    def __call__(self, rec: dict[str, Any]) -> None:
        event = str(rec.get("event", ""))
        self.decisions.labels(event).inc()
        handler = self._handlers.get(event)
        if handler is None:
            return
        try:
            handler(rec)
        except Exception:  # noqa: BLE001 - a record of an unexpected shape must never stop the logging
            self.errors.inc()

    # -- per-call memory -------------------------------------------------------------------------

    def _call(self, rec: dict[str, Any]) -> _Call | None:
        call_id = rec.get("call")
        if not call_id:
            return None
        c = self._calls.get(call_id)
        if c is None:
            c = self._calls[call_id] = _Call()
            while len(self._calls) > CALL_MEMORY:
                self._calls.popitem(last=False)
        return c

    def _labels(self, rec: dict[str, Any]) -> tuple[str, str]:
        c = self._calls.get(rec.get("call") or "")
        return (c.strategy, c.peer) if c is not None else (NONE, NONE)

    # -- handlers ---------------------------------------------------------------------------------

    def _keying(self, rec: dict[str, Any]) -> None:
        c = self._call(rec)
        if c is None:
            return
        # only strategy c keys an offer, and its keying-speculative line does not name it
        c.strategy = str(rec.get("strategy") or ("speculative" if rec["event"] == "keying-speculative" else NONE))
        c.peer = str(rec.get("peer") or NONE)
        self._keyed.add(rec["call"])
        self.calls_active.set(len(self._keyed))

    def _refused(self, rec: dict[str, Any]) -> None:
        self.refused.labels(classify(rec.get("reason"), REFUSAL_CLASSES)).inc(max(1, len(rec.get("flows") or ())))
        c = self._call(rec)
        if c is not None:
            c.refused = True
            self._end(rec)  # a re-INVITE's refused media: the call is no longer keyed

    def _no_flows(self, rec: dict[str, Any]) -> None:
        c = self._call(rec)
        if c is not None:
            c.no_flows = True

    def _srtp(self, rec: dict[str, Any]) -> None:
        c = self._call(rec)
        if c is not None:
            c.srtp = True

    def _failed(self, rec: dict[str, Any]) -> None:
        self.failures.labels(classify(rec.get("reason"), FAILURE_CLASSES)).inc()
        c = self._call(rec)
        if c is not None:
            c.failed = True

    def _unkeying(self, rec: dict[str, Any]) -> None:
        if rec.get("reason") != "media-changed":  # a re-key: keyed again at once
            self._end(rec)

    def _ended(self, rec: dict[str, Any]) -> None:
        self._end(rec)

    def _end(self, rec: dict[str, Any]) -> None:
        self._keyed.discard(rec.get("call") or "")
        self.calls_active.set(len(self._keyed))

    def _sa_up(self, rec: dict[str, Any]) -> None:
        if rec.get("child") == "pre-keyed":  # xfrm states this gateway installed, no CHILD_SA
            self.keying.labels(*self._labels(rec)).observe(float(rec["keying_ms"]) / 1000.0)
            return
        if rec.get("sa"):
            self._children.add(str(rec["sa"]))
            self.child_sas.set(len(self._children))

    def _sa_down(self, rec: dict[str, Any]) -> None:
        if rec.get("sa"):
            self._children.discard(str(rec["sa"]))
            self.child_sas.set(len(self._children))

    def _initiated(self, rec: dict[str, Any]) -> None:
        self.keying.labels(*self._labels(rec)).observe(float(rec["keying_ms"]) / 1000.0)

    def _timeline(self, rec: dict[str, Any]) -> None:
        call_id = rec.get("call") or ""
        c = self._calls.pop(call_id, None) or _Call()
        self._keyed.discard(call_id)
        self.calls_active.set(len(self._keyed))
        if c.strategy == NONE and rec.get("strategy"):
            c.strategy = str(rec["strategy"])
        m = rec.get("metrics") or {}
        labels = (c.strategy, c.peer)
        self.calls.labels(call_outcome(rec, c)).inc()
        if m.get("post_answer_gap_ms") is not None:
            self.gap.labels(*labels).observe(float(m["post_answer_gap_ms"]) / 1000.0)
        if m.get("clear_rtp_after_answer"):
            self.clear.labels(*labels).inc(int(m["clear_rtp_after_answer"]))
        if m.get("clear_rtp_after_protection"):
            self.clear_later.labels(*labels).inc(int(m["clear_rtp_after_protection"]))
        if m.get("ike_retransmissions"):
            self.ike_retransmissions.labels(*labels).inc(int(m["ike_retransmissions"]))

    def _sip_rejected(self, rec: dict[str, Any]) -> None:
        self.sip_rejected.labels("bad-sdp" if str(rec.get("reason", "")).startswith("bad SDP") else "malformed").inc()


class Exporter:
    """``prometheus_client``'s HTTP server for one :class:`Metrics`, on a daemon thread: a scrape
    never runs on the controller's loop."""

    def __init__(self, address: tuple[str, int], metrics: Metrics, process: bool = True) -> None:
        self.address, self.metrics = address, metrics
        if process:  # the controller's CPU, memory and open files, under the usual process_ names
            ProcessCollector(registry=metrics.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

    def start(self) -> None:
        """Bind and serve; OSError (address in use, not local) is the caller's to report."""
        host, port = self.address
        self._server, self._thread = start_http_server(port, host, registry=self.metrics.registry)
        self.address = (host, int(self._server.server_address[1]))  # port 0: the one the kernel chose

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
