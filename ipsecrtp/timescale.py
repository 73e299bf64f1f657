"""One factor for the waits on another process's answer, for a machine far slower than the ones
the limits were chosen on: ``IPSECRTP_TIME_SCALE=10`` multiplies the controller's VICI limits and
the tools' and the lab's waits for charon, the phones and the logs. The real-kernel tier sets it in
its TCG guest, where charon answers a command in seconds, not milliseconds (a 2 s limit there
failed calls that were only slow). Never below 1: it only ever lengthens a wait; unset, empty or
not a number: 1."""

from __future__ import annotations

import math
import os

VARIABLE = "IPSECRTP_TIME_SCALE"


def time_scale() -> float:
    try:
        v = float(os.environ.get(VARIABLE, "") or 1.0)
    except ValueError:
        return 1.0
    return v if math.isfinite(v) and v > 1.0 else 1.0


def scaled(seconds: float) -> float:
    return seconds * time_scale()
