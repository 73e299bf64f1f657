"""CHILD_SA set-up time under IKE packet loss, with charon's default retransmission timers
(first retransmission after 4 s) and with timers tuned for a post-dial-delay budget.

A lab per timer setting (charon reads its timers at start), charons only; a connection of the
benchmark's own on both gateways, its IKE_SA established before any loss; then, per loss rate,
``children`` CHILD_SAs initiated one after the other on that IKE_SA while the emulated WAN drops
IKE packets (UDP 500, and 4500 with the zero marker) at random in both directions. Children are
not deleted in between: a lost DELETE would hold the IKE_SA's single exchange slot and inflate
the next measurement.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable

from ..keying.charontimers import CHARON_DEFAULTS
from ..keying.strongswan import Charon, KeyingError
from ..selectors import PeerConfig
from .lab import Lab
from .wanem import LinkSettings

PORT = 30000


def _peer(lab: Lab, me: str, other: str) -> PeerConfig:
    with open(f"{lab.dir}/psk", "rb") as f:
        psk = f.read().strip()
    a = lab.state["gateways"][me]["wan"].split("/")[0]
    b = lab.state["gateways"][other]["wan"].split("/")[0]
    return PeerConfig(name=f"bench-{other}", ike_local=a, ike_remote=b, local_media=(f"{a}/32",),
                      remote_media=(f"{b}/32",), psk=psk)


def run(losses: list[float], rtt: float, children: int, tuned: list[str],
        progress: Callable[[str], None] = print) -> dict:
    rows = []
    # the lab runs the recommended timers: the default row says charon's defaults explicitly
    for timers, lines in (("default", CHARON_DEFAULTS.conf_lines()), ("tuned", tuned)):
        extra = "\n".join("  " + t.strip() for t in lines if t.strip())
        lab = Lab("i" + secrets.token_hex(3))
        try:
            lab.up(wan=LinkSettings(delay_ms=rtt / 2), charon_extra=extra, controllers=False)
            peers = {r: _peer(lab, r, o) for r, o in (("gwa", "gwb"), ("gwb", "gwa"))}
            ch = {r: Charon(lab.vici(r)) for r in peers}
            try:
                n = children * len(losses)
                for r, p in peers.items():
                    ch[r].load_secret(p)
                    a, b = p.ike_local, p.ike_remote
                    # one child config per measurement: charon will not set up a second CHILD_SA of a config
                    ch[r].load_bench_conn(p, "bench", {
                        f"c{i}": ([f"{a}/32[udp/{PORT + i}]"], [f"{b}/32[udp/{PORT + i}]"]) for i in range(n)})
                k = 0
                _establish(ch["gwb"])
                for loss in losses:
                    lab.set_wan(LinkSettings(delay_ms=rtt / 2, ike_loss=loss / 100, seed=int(loss * 100) + 1))
                    times, failed = [], 0
                    for _ in range(children):
                        t0 = time.monotonic()
                        k += 1
                        try:
                            ch["gwb"].initiate_child("bench", f"c{k - 1}", timeout_s=60)
                            times.append((time.monotonic() - t0) * 1000)
                        except KeyingError:
                            failed += 1
                    times.sort()
                    row = {"timers": timers, "loss_pct": loss, "rtt_ms": rtt, "children": children,
                           "median_ms": round(statistics.median(times), 1) if times else None,
                           "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1) if times else None,
                           "max_ms": round(times[-1], 1) if times else None,
                           "over_1s": sum(t > 1000 for t in times), "failed": failed}
                    rows.append(row)
                    progress(f"{timers} timers, {loss}% IKE loss: median {row['median_ms']} ms, "
                             f"max {row['max_ms']} ms, {row['over_1s']} over 1 s")
            finally:
                for c in ch.values():
                    c.close()
        finally:
            lab.down()
    return {"rows": rows, "tuned": tuned, "rtt_ms": rtt}


def _establish(charon: Charon) -> None:
    """The benchmark connection's IKE_SA, before any loss is switched on."""
    try:
        for _log in charon.session.initiate({"ike": "bench", "timeout": 20000, "init-limits": "no"}):
            pass
    except Exception as exc:  # noqa: BLE001 - vici's CommandException; one line for the CLI
        raise KeyingError(f"bench IKE_SA not established: {exc}") from None
