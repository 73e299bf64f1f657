"""How long the shell waits for charon, and whether charon's IKE retransmission timers fit, both
from the post-dial-delay budget (``budget`` in ``[controller]``, :data:`~ipsecrtp.timing.BUDGETS`).
Pure: numbers in, numbers and one-line verdicts out.

A call's set-up is two VICI commands on one worker: ``load-conn``, then ``initiate``. Neither may
hold the worker longer than the budget's 95th-percentile post-dial delay, since a caller past it
has given up on the call whatever we do:

- ``initiate`` gets the budget's *mean* post-dial delay as charon's own ``timeout``: charon then
  answers "failed" itself (the session stays usable) and goes on with the exchange in the
  background (a late SA is still used, and removed with its call);
- one more second for that answer to reach us (charon answers in milliseconds once its timer
  fires);
- every other command the rest: p95 - mean - 1 s, which is 2 s for each of the three budgets. A
  healthy charon answers ``load-conn``, ``list-sas`` or ``version`` in about a millisecond, so 2 s
  of silence means it is hung (SIGSTOP, a deadlock), not busy.

charon's retransmissions (``retransmit_timeout`` T, ``retransmit_base`` B, ``retransmit_tries``
N): the k-th retransmission leaves at T·(1 + B + … + B^(k-1)). They fit the budget when an exchange
that loses :data:`LOSSES_TOLERATED` packets in a row (request or response) is still retransmitted
before ``initiate``'s time-out, so that the SA comes up within the set-up's limit.
"""

from __future__ import annotations

from dataclasses import dataclass

# one second for charon's own "failed" answer to come back after its initiate time-out fired
ANSWER_MARGIN_S = 1.0
# packets an exchange may lose in a row and still finish within initiate's time-out: at 5 % loss
# per packet a round trip fails with p ~ 0.1, two in a row with ~ 0.01 (1 set-up in 100 would be
# late), three with ~ 0.001
LOSSES_TOLERATED = 2


@dataclass(frozen=True)
class ViciLimits:
    command_s: float  # any command but initiate: no answer by then means charon is hung
    initiate_s: float  # initiate's own timeout (charon answers "failed" at it)

    @property
    def initiate_wait_s(self) -> float:
        """How long the socket waits for initiate's answer: charon's time-out plus its answer."""
        return self.initiate_s + ANSWER_MARGIN_S


def vici_limits(pdd_mean_s: float, pdd_p95_s: float) -> ViciLimits:
    """The waits for a budget (its post-dial delay, mean and 95th percentile, in seconds)."""
    command = max(0.5, pdd_p95_s - pdd_mean_s - ANSWER_MARGIN_S)
    return ViciLimits(command_s=command, initiate_s=pdd_mean_s)


def limits_for(budget_name: str) -> ViciLimits:
    """The waits for a budget of :data:`~ipsecrtp.timing.BUDGETS` by name."""
    from ..timescale import time_scale
    from ..timing import BUDGETS

    b = BUDGETS[budget_name]
    limits, k = vici_limits(b.pdd_mean_s, b.pdd_p95_s), time_scale()  # a far slower machine (timescale.py)
    return ViciLimits(limits.command_s * k, limits.initiate_s * k) if k > 1 else limits


@dataclass(frozen=True)
class Timers:
    """charon's IKE retransmission settings (strongswan.conf ``charon.retransmit_*``)."""

    timeout: float = 4.0  # charon's defaults (strongSwan 5.9)
    base: float = 1.8
    tries: int = 5

    def sent_at(self, k: int) -> float:
        """When the k-th retransmission leaves, seconds after the first transmission."""
        return sum(self.timeout * self.base ** i for i in range(k))

    def gives_up_at(self) -> float:
        """When charon gives up on the exchange (after its last retransmission's time-out)."""
        return self.sent_at(self.tries + 1)

    def scaled(self, k: float) -> Timers:
        """The same timers on a machine ``k`` times slower (IPSECRTP_TIME_SCALE): the time-out must
        stay above the peer's processing, or charon retransmits what was not lost and, after its
        last try, gives up on a peer that was only slow (both seen in a loaded TCG guest)."""
        return Timers(self.timeout * k, self.base, self.tries) if k > 1 else self

    def conf_lines(self) -> list[str]:
        return [f"retransmit_timeout = {self.timeout:g}", f"retransmit_base = {self.base:g}",
                f"retransmit_tries = {self.tries}"]


CHARON_DEFAULTS = Timers()
# what the README recommends and the lab runs: measured with 5 % IKE loss at 100 ms RTT, worst
# set-up 605 ms against 4.1 s with the defaults (bench/results/ike-loss-2026-11-28.txt); T must stay
# above the WAN's RTT plus charon's processing, or charon retransmits what was not lost
RECOMMENDED = Timers(timeout=0.5, base=1.4, tries=6)


def check(timers: Timers, budget_name: str, limits: ViciLimits) -> str | None:
    """None when the timers fit the budget (its limits), else the one-line warning."""
    limit, k = limits.initiate_s, LOSSES_TOLERATED
    if timers.tries < k:
        return (f"charon retransmits an IKE request only {timers.tries} times (retransmit_tries): a set-up that "
                f"loses {k} packets in a row fails; README (IKE loss) recommends {', '.join(RECOMMENDED.conf_lines())}")
    at = timers.sent_at(k)
    if at <= limit:
        return None
    return (f"charon's IKE timers (retransmit_timeout {timers.timeout:g} s, base {timers.base:g}) send the "
            f"retransmission after {k} lost packets at {at:.1f} s, past initiate's {limit:g} s limit for budget "
            f"{budget_name}: such set-ups fail; README (IKE loss) recommends {', '.join(RECOMMENDED.conf_lines())}")
