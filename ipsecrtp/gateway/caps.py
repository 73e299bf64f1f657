"""The gateway core's lines for the SIP core's cap events (issue 19): one ``cap-hit`` per hit, naming
the cap (``sip.limits.CAPS``, a bounded label for metrics), a ``dialog-evicted`` per eviction, and for
an offer/answer refused beyond a cap a ``refused`` line like any hostile SDP's, its old SA removed."""

from __future__ import annotations

from ..sip.events import CapHit, DialogEvicted, Event, MediaRefused
from .actions import Outbox
from .keying import Keying

CAP_EVENTS = (CapHit, DialogEvicted, MediaRefused)


def log_cap_event(ev: Event, out: Outbox, k: Keying) -> None:
    if isinstance(ev, CapHit):
        out.log("cap-hit", cap=ev.cap, limit=ev.limit, call=ev.call_id or None, reason=ev.detail,
                source=f"{ev.source[0]}:{ev.source[1]}" if ev.source else None, t=ev.time)
    elif isinstance(ev, DialogEvicted):
        out.log("dialog-evicted", call=ev.call_id, cap=ev.cap, state=ev.state, t=ev.time,
                source=ev.source[0] if ev.source else None)
    elif isinstance(ev, MediaRefused):
        out.log("cap-hit", cap=ev.cap, limit=ev.limit, call=ev.call_id, reason=ev.reason, t=ev.time)
        if ev.call_id in k.calls:  # the media moved beyond the cap: the SA on the old flows goes
            k.unkey(ev.call_id, "media-changed" if ev.old else "answer-refused", ev.time)
        out.log("refused", call=ev.call_id, t=ev.time, trigger=ev.trigger, flows=[], reason=ev.reason)
