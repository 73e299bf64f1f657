"""A real baresip call kept up while a test breaks something (charon, the controller), with a
capture of the WAN beyond gwb: the independent view of what crossed it meanwhile."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ipsecrtp.netns.calls import CallResult, Capture, Phones, child_sas, flow_rules
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.pdd import wait_ike


@dataclass
class LiveCall:
    capture: str  # the pcap path, complete once the context has ended
    result: dict = field(default_factory=dict)

    @property
    def call(self) -> CallResult:
        return self.result["r"]


@contextlib.contextmanager
def live_call(lab: Lab, talk: float = 8.0) -> Iterator[LiveCall]:
    """gwa's phone calls gwb's (so gwb initiates the CHILD_SA); yields once gwb holds the SA, and
    returns after the caller's BYE."""
    lab.up()
    lab.start_uas()
    wait_ike(lab)
    cap = Capture(lab, "gwb", os.path.join(lab.dir, "wan.pcap"))
    phones = Phones(lab)
    live = LiveCall(cap.path)
    t = threading.Thread(target=lambda: live.result.update(r=phones.call("caller-hangup", talk=talk)))
    t.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not child_sas(lab, "gwb"):
            time.sleep(0.1)
        time.sleep(1.0)
        yield live
    finally:
        t.join(timeout=30)
        phones.close()
        cap.stop()


def assert_nothing_left(lab: Lab, teardown_s: float = 2.5) -> None:
    """After the last call's BYE (its SA outlives it by the teardown delay): no CHILD_SA in charon
    and no keyed flow in the data plane on either gateway."""
    time.sleep(teardown_s)
    for role in ("gwa", "gwb"):
        assert child_sas(lab, role) == []
        assert flow_rules(lab, role) == []
