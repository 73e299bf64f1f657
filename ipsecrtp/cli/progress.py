"""Progress of the long commands (``bench *``, ``lab vm``) on a terminal, with tqdm: a bar with
the current step (and the count of steps, against their total where known) and the time so far.
Nothing at all when standard error is not a terminal or with ``--json``: a log file or a pipe
gets only the command's results."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator


def wanted(as_json: bool = False) -> bool:
    return not as_json and sys.stderr.isatty()


class Steps:
    """A progress callback (``progress(message)``, as the lab's runners take): each message is one
    step done, shown after the bar."""

    def __init__(self, what: str, total: int | None, enabled: bool) -> None:
        from tqdm import tqdm  # here: every CLI start (a controller's too) would pay its import

        self.bar = tqdm(total=total, desc=what, unit="step", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc}: {n_fmt}" + ("/{total_fmt} {bar:20}" if total else " steps") +
                                   " {elapsed} {postfix}") if enabled else None

    def __call__(self, message: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(message[:100], refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def steps(what: str, as_json: bool = False, total: int | None = None) -> Iterator[Steps]:
    s = Steps(what, total, wanted(as_json))
    try:
        yield s
    finally:
        s.close()


@contextlib.contextmanager
def ticking(what: str, as_json: bool = False) -> Iterator[None]:
    """For one long blocking call (a guest run): the time so far, refreshed every second."""
    if not wanted(as_json):
        yield
        return
    from tqdm import tqdm

    bar = tqdm(total=None, desc=what, file=sys.stderr, bar_format="{desc}: {elapsed}")
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            bar.refresh()

    t = threading.Thread(target=tick, name="progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
        bar.close()
