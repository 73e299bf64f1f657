"""The real-kernel tier's guest run, started in the background as soon as the suite is collected.

The tier is one long TCG guest (mostly one emulated CPU's worth of host time) and the rest of the
suite is mostly lab tests waiting on real daemons: run one after the other they took ~13 + ~20 min
here, over the suite's ~25 min budget, while overlapped they take about the longer of the two.
``tests/conftest.py`` starts the run when a ``vm``-marked test is selected; the test then waits for
the result and judges it. Run alone (``pytest tests/test_vm_tier.py``) nothing changes but the order.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
from concurrent.futures import Future

from ipsecrtp.netns import vm

_lock = threading.Lock()
_runs: dict[str, Future[vm.VmResult]] = {}
_pgids: list[int] = []


def _run(command: str, timeout: float, fut: Future[vm.VmResult]) -> None:
    try:
        fut.set_result(vm.run(command, timeout=timeout, started=_pgids.append))
    except BaseException as exc:  # the test reports it, with its own traceback
        fut.set_exception(exc)


def start(command: str, timeout: float) -> Future[vm.VmResult]:
    """The guest run of ``command``, started once (in a daemon thread)."""
    with _lock:
        fut = _runs.get(command)
        if fut is None:
            fut = _runs[command] = Future()
            threading.Thread(target=_run, args=(command, timeout, fut), name="vm-tier", daemon=True).start()
        return fut


def result(command: str, timeout: float) -> vm.VmResult:
    """Wait for the run started at collection (or start it now); vm.run itself ends within timeout."""
    return start(command, timeout).result()


def stop_all() -> None:
    """At the end of the session: a guest still running (the tier deselected by -x, an interrupt) is
    killed with the whole process group vm.run started, never left behind."""
    for pgid in _pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def failure_report(output: str, limit: int = 6000) -> str:
    """What a failed guest run says about its failures (pytest's FAILURES and ERRORS sections, then
    its summary), not merely the last lines, which the durations table would fill; the whole
    output is kept in a file whose path the report names."""
    fd, path = tempfile.mkstemp(prefix="ipsecrtp-vm-tier-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(output)
    m = re.search(r"^=+ (FAILURES|ERRORS) =+$", output, re.M)
    end = output.find("slowest ", m.start()) if m else -1
    details = output[m.start():end if end > 0 else None][:limit] if m else ""
    summary = output[output.find("short test summary"):][-2000:] if "short test summary" in output else output[-2000:]
    return f"{details}\n...\n{summary}\n(the guest's whole output: {path})"
