"""Authorisation: a flow is keyed only between this gateway's and a peer's configured media
prefixes, on the RTP port range; anything else (hostile SDP pointing at other hosts or at port
5060, say) is refused with one reason per peer and no SA. Pure."""

from __future__ import annotations

from ..media import Flow, MediaPolicy
from ..selectors import PeerConfig
from .actions import Outbox
from .natfix import NatFix


def authorise(policies: list[tuple[PeerConfig, MediaPolicy]], nat: NatFix, out: Outbox, call_id: str,
              flows: tuple[Flow, ...], t: float, trigger: str) -> tuple[PeerConfig, MediaPolicy] | None:
    """The peer whose policy admits every flow, or None with a `refused` line giving the reason
    for each peer (and for a NAT that makes the flows impossible to key as seen)."""
    if not flows:
        out.log("no-flows", call=call_id, t=t, trigger=trigger,
                reason="every stream rejected (port 0) or on hold (0.0.0.0)")
        return None
    reasons = []
    for peer, pol in policies:
        problems = [r for r in (pol.check(f) for f in flows) if r]
        if not problems:
            return peer, pol
        reasons.append(f"{peer.name}: {problems[0]}")
    reasons[:0] = nat.refusal_reasons(call_id, flows)
    out.log("refused", call=call_id, t=t, trigger=trigger, flows=[f.to_json() for f in flows],
            reason="; ".join(reasons))
    return None


def srtp_skips(peer: PeerConfig, out: Outbox, call_id: str, srtp: str, t: float, trigger: str) -> bool:
    """Whether a call both ends protect with SRTP (``srtp``: "sdes", "dtls", "" for none) is left
    unkeyed under the peer's ``srtp = "skip"`` (logged ``srtp-end-to-end``). SDES keys travel in
    the SDP, which this gateway reads off the wire: over ``signalling = "clear"`` anyone on the path
    reads them too, so such a call is keyed all the same (``srtp-keys-in-clear``)."""
    if not srtp or peer.srtp != "skip":
        return False
    if srtp == "sdes" and peer.signalling != "protected":
        out.log("srtp-keys-in-clear", call=call_id, t=t, trigger=trigger, peer=peer.name, srtp=srtp,
                consequence="keyed as with srtp = protect: the SRTP keys crossed the WAN in clear SIP")
        return False
    out.log("srtp-end-to-end", call=call_id, t=t, trigger=trigger, peer=peer.name, srtp=srtp,
            consequence="no SA: both ends encrypt the media themselves (srtp = skip)")
    return True
