"""Commands from a SIP proxy (rtpengine's ng protocol: ``ipsecrtp/ng/``) as one more input of the core.

An offer, answer or delete goes into the same dialog tracker as the SIP seen on the wire
(``sip/control.py``), and the events it makes go through :meth:`GatewayCore.sip_event`: the same
authorisation, initiator rule and keying as captured SIP, and a call learnt both ways is keyed
once. ``query`` and ``list`` read the core's snapshot (``snapshot.py``). The reply is a plain dict
(``result``: ok, pong or error with ``error-reason``); the SDP goes back unchanged: ipsecrtp keys
the media, it does not relay it. A refused command changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..sip.control import ControlError
from ..sip.events import CapHit, Event
from . import snapshot

if TYPE_CHECKING:
    from .core import GatewayCore

COMMANDS = ("ping", "offer", "answer", "delete", "query", "list")
LIST_LIMIT = 32  # calls listed in detail by default (rtpengine's default limit)


@dataclass(frozen=True)
class ControlRequest:
    """One checked command (``ng.protocol.parse`` makes it from a datagram)."""

    command: str
    call_id: str = ""
    from_tag: str = ""
    to_tag: str = ""
    sdp: bytes = field(default=b"", repr=False)
    source: tuple[str, int] | None = None
    limit: int = LIST_LIMIT


def handle(core: GatewayCore, now: float, req: ControlRequest) -> dict:
    """Apply one command; the reply to send back."""
    try:
        reply = _run(core, now, req)
    except ControlError as exc:
        reply = {"result": "error", "error-reason": str(exc)}
    if req.command != "ping":
        core.out.log("ng", command=req.command, call=req.call_id or None, result=reply["result"],
                     reason=reply.get("error-reason"),
                     source=f"{req.source[0]}:{req.source[1]}" if req.source else None)
    return reply


def _run(core: GatewayCore, now: float, req: ControlRequest) -> dict:
    t = core.tracker
    if req.command == "ping":
        return {"result": "pong"}
    if req.command == "offer":
        return _signal(core, req, t.control_offer(req.call_id, req.from_tag, req.to_tag or None, req.sdp, now,
                                                  req.source))
    if req.command == "answer":
        return _signal(core, req, t.control_answer(req.call_id, req.from_tag, req.to_tag, req.sdp, now,
                                                   req.source))
    if req.command == "delete":
        return _signal(core, req, t.control_delete(req.call_id, req.from_tag, now, req.to_tag))
    if req.command == "query":
        rows = [r for r in snapshot.calls(core, now) if r["call"] == req.call_id]
        if not rows:
            raise ControlError("unknown call-id")
        return {"result": "ok", **rows[0]}
    if req.command == "list":
        rows = snapshot.calls(core, now)
        return {"result": "ok", "calls": [r["call"] for r in rows], "details": rows[:max(0, req.limit)]}
    raise ControlError(f"unknown command {req.command[:40]!r}")


def _signal(core: GatewayCore, req: ControlRequest, events: list[Event]) -> dict:
    """Feed the tracker's events to the core; a cap that refused the command is an error for the proxy."""
    for ev in events:
        core.sip_event(ev)
    if events and all(isinstance(e, CapHit) for e in events):  # the tracker's caps refused it (logged)
        return {"result": "error", "error-reason": f"cap {events[0].cap}: {events[0].detail}"}
    reply: dict = {"result": "ok"}
    if req.command in ("offer", "answer"):
        reply["sdp"] = req.sdp  # unchanged
    return reply
