"""A responder's CHILD_SA that came up before its gateway knew the call.

With captured SIP both gateways see the answer on the wire before the initiator's
CREATE_CHILD_SA arrives. With a SIP proxy in front of each gateway (ng control), the answering
side's proxy tells its gateway first, that gateway keys at once, and the SA can be up at the
responder before the responder's own proxy has relayed the answer and told it: seen in the TLS
lab, child-updown 7 ms ahead of the ng answer. Such an SA is remembered here by its flows (a few
hundred at most, each until it goes down), and claimed by the call whose keying names those flows.
"""

from __future__ import annotations

import collections

from ..selectors import FlowRule
from .actions import ChildUpDown
from .state import KeyState, SaKeying

KEEP = 256  # unclaimed SAs remembered at most, the oldest going first (each is forgotten when it goes down)


class EarlyChildren:
    def __init__(self) -> None:
        self.up: collections.OrderedDict[str, tuple[float, frozenset[FlowRule], ChildUpDown]] = \
            collections.OrderedDict()  # SA unique id -> (when it came up, its flows, charon's event)

    def note(self, rules: set[FlowRule], ev: ChildUpDown, now: float) -> None:
        """A child-updown no call claimed: kept if up, forgotten if down."""
        sa = str(ev.child.get("uniqueid", ""))
        if not ev.up:
            self.up.pop(sa, None)
            return
        self.up[sa] = (now, frozenset(rules), ev)
        while len(self.up) > KEEP:
            self.up.popitem(last=False)

    def claim(self, st: SaKeying | None) -> tuple[float, ChildUpDown] | None:
        """The SA already up for this responder's keying (its flows all among the SA's), if any."""
        if st is None or st.role != "responder" or st.state is not KeyState.WAITING or not st.rules:
            return None
        for sa, (t, rules, ev) in self.up.items():
            if st.rules <= rules:
                del self.up[sa]
                return t, ev
        return None
