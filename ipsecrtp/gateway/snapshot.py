"""A read-only picture of the core's live calls and SAs, for the control socket's views.

Plain JSON-able dicts built from the tracker's dialogs, the keying's SAs and the timelines; nothing
here changes any of them (a test takes a snapshot between inputs and checks the decisions that
follow are the same as without it). The shell adds charon's figures (bytes, SPIs' state) to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..media import TooManyPorts, offer_endpoints
from .state import SaKeying

if TYPE_CHECKING:
    from .core import GatewayCore


def _t(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def sa_view(st: SaKeying) -> dict:
    """One SA as the core holds it: which call, which child and charon SA, in what state."""
    info = st.child_info
    return {
        "call": st.call_id, "peer": st.peer.name, "role": st.role, "strategy": st.peer.strategy,
        "state": st.state.value, "child": st.child, "sa": st.uniqueid or info.get("uniqueid"),
        "generation": st.generation, "member": st.member, "speculative": st.speculative,
        "flows": [f.to_json() for f in st.flows],
        # the exact selectors: local address and port <-> remote address and port, per flow
        "selectors": [str(r) for r in sorted(st.rules)],
        "local_ts": info.get("local-ts"), "remote_ts": info.get("remote-ts"),
        "spi_in": info.get("spi-in"), "spi_out": info.get("spi-out"),
        "answered_at": _t(st.answered_at or None), "install_started": _t(st.install_started),
        "install_finished": _t(st.install_finished),
        "keying_ms": None if st.install_started is None or st.install_finished is None
        else round((st.install_finished - st.install_started) * 1000, 3),
        "error": st.install_error or None,
    }


def sas(core: GatewayCore) -> list[dict]:
    """Every SA the core still holds: each call's current one, a speculative one it replaces, and
    those draining or being removed."""
    seen: dict[int, SaKeying] = {}
    for st in core.keying.calls.values():
        seen[id(st)] = st
        if st.spec is not None and st.spec.state.value != "gone":
            seen[id(st.spec)] = st.spec
    for st in core.keying.timed.values():
        seen.setdefault(id(st), st)
    return [sa_view(st) for st in seen.values() if st.state.value != "gone"]


def _offered(d) -> list[str]:
    """The offerer's endpoints of a dialog not (yet) answered: what was asked for."""
    if d.invite_offer is None:
        return []
    try:
        return [str(e) for e in offer_endpoints(d.invite_offer.sdp)]
    except TooManyPorts:
        return []


def calls(core: GatewayCore, now: float) -> list[dict]:
    """Every dialog the tracker holds, with its SAs and keying times."""
    by_call: dict[str, list[dict]] = {}
    for sa in sas(core):
        by_call.setdefault(sa["call"], []).append(sa)
    out = []
    for cid in sorted(set(core.tracker.dialogs) | set(by_call)):
        d = core.tracker.dialogs.get(cid)
        tl = core.timelines.get(cid)
        st = core.keying.calls.get(cid)
        row = {
            "call": cid,
            "dialog": None if d is None else {
                "state": d.state, "from_tag": d.from_tag, "to_tag": d.to_tag, "started": _t(d.started),
                "ended": _t(d.ended), "cancelled": d.cancelled, "age_s": round(now - d.started, 3)},
            "flows": [f.to_json() for f in d.flows] if d is not None else [],
            "offered": _offered(d) if d is not None and not d.flows else [],
            "role": st.role if st is not None else (tl.role if tl is not None and tl.role else None),
            "strategy": st.peer.strategy if st is not None else (tl.strategy if tl is not None else None),
            "peer": st.peer.name if st is not None else None,
            "sas": by_call.get(cid, []),
            "times": None if tl is None else {
                "invite": _t(tl.invite), "answer": _t(tl.final if tl.final_status and tl.final_status < 300
                                                      else None),
                "keying_started": _t(tl.keying_started), "sa_up": _t(tl.sa_up), "first_esp": _t(tl.first_esp),
                "clear_after_answer": tl.clear_after_answer, "dropped_clear": tl.dropped_clear},
        }
        out.append(row)
    return out
