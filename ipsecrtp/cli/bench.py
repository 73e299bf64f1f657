"""``ipsecrtp bench ...``: figures from the lab, printed (not asserted: the tests assert)."""

from __future__ import annotations

import json
import os

import click

from .progress import steps


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of numbers, not {value!r}") from None


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("the lab benchmarks need root (network namespaces)")


@click.group()
def bench() -> None:
    """Benchmarks that drive the lab and print figures."""


@bench.command()
@click.option("--rtt", "rtts", default="0,20,100,300", show_default=True, help="RTTs in ms, comma-separated")
@click.option("--calls", default=3, show_default=True, help="calls per RTT and strategy")
@click.option("--strategy", "strategies", default="a,b,c", show_default=True,
              help="a (IKE_SA per call), b (CHILD_SA per call on a long-lived IKE_SA), c (speculative)")
@click.option("--ring", default=1.0, show_default=True, help="seconds the callee rings before answering")
@click.option("--talk", default=1.0, show_default=True)
@click.option("--pause", default=2.0, show_default=True,
              help="seconds between calls (0: back to back, the last call's DELETE then delays the next set-up)")
@click.option("--budget", default="e721-toll", show_default=True)
@click.option("--no-baseline", is_flag=True, help="skip the run without keying (SRD added is then unknown)")
@click.option("--json", "as_json", is_flag=True)
def pdd(rtts: str, calls: int, strategies: str, ring: float, talk: float, pause: float, budget: str,
        no_baseline: bool, as_json: bool) -> None:
    """Real calls through the emulated WAN: SRD added, post-answer gap, RTTs, verdict."""
    from ..netns.pdd import STRATEGY_LETTERS, run
    from ..timing import BUDGETS

    _need_root()
    if budget not in BUDGETS:
        raise click.BadParameter(f"budget must be one of {', '.join(BUDGETS)}")
    strat = [s.strip() for s in strategies.split(",") if s.strip()]
    bad = [s for s in strat if s not in STRATEGY_LETTERS and s not in STRATEGY_LETTERS.values()]
    if bad:
        raise click.BadParameter(f"unknown strategy {bad[0]!r}")
    with steps("bench pdd", as_json) as progress:
        report = run(_floats(rtts), strat, calls=calls, ring=ring, talk=talk, budget=budget,
                     baseline=not no_baseline, pause=pause, progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    b = report["budget"]
    click.echo(f"budget {b['name']}: PDD mean {b['pdd_mean_s']} s, post-answer gap {b['gap_ms']} ms "
               f"({'verified' if b['verified'] else 'figures from memory, unverified'}); ring {ring} s, "
               f"{pause} s between calls")
    head = (f"{'RTT':>5} {'measured':>8} {'strategy':<15} {'SRD':>7} {'+SRD':>6} {'gap':>7} {'gap/RTT':>7} "
            f"{'clear':>5} {'keying':>7} {'RTTs':>5} {'IKE':>3}  verdict")
    click.echo(head)
    for r in report["rows"]:
        def f(v, w):
            return f"{'-':>{w}}" if v is None else f"{v:>{w}}"
        verdict = "-" if r["fits_budget"] is None else ("fits" if r["fits_budget"] else "over budget")
        click.echo(f"{r['rtt_set_ms']:>5.0f} {r['rtt_measured_ms']:>8.1f} {r['strategy']:<15} {f(r['srd_ms'], 7)} "
                   f"{f(r['srd_added_ms'], 6)} {f(r['post_answer_gap_ms'], 7)} {f(r['gap_in_rtt'], 7)} "
                   f"{f(r['clear_rtp_after_answer'], 5)} {f(r['keying_ms'], 7)} {f(r['keying_rtts'], 5)} "
                   f"{f(r['ike_exchanges'], 3)}  {verdict}")
    click.echo("times in ms; gap: 2xx to CHILD_SA installed (worse gateway); clear: RTP/RTCP of the call on the "
               "WAN in clear after the answer; keying and RTTs at the initiating gateway")
    for rtt, rows in report["what_if"].items():
        click.echo(f"what-if at {rtt} ms RTT against the {b['gap_ms']:.0f} ms post-answer budget "
                   f"(keyed at the answer / keyed from the offer, ringing {ring} s):")
        for w in rows:
            click.echo(f"  {w['scheme']:<45} {w['rtts']:>4} RTT {w['cost_ms']:>7.1f} ms "
                       f"{'fits' if w['fits_at_answer'] else 'over':<5} / gap {w['gap_ms']:>6.1f} ms "
                       f"{'fits' if w['fits_speculative'] else 'over'}")


@bench.command()
@click.option("--rtt", "rtts", default="0,20,100,300", show_default=True)
@click.option("--probes", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def wan(rtts: str, probes: int, as_json: bool) -> None:
    """The emulated WAN measured: ping RTT and capture-timestamped one-way delay per setting."""
    import secrets

    from ..netns.lab import Lab
    from ..netns.wancheck import measure
    from ..netns.wanem import LinkSettings

    _need_root()
    lab = Lab("b" + secrets.token_hex(3))
    out = []
    try:
        with steps("bench wan", as_json, total=1 + len(_floats(rtts))) as progress:
            lab.up(wan=LinkSettings(), keying=False)
            progress(f"lab {lab.name} up")
            for rtt in _floats(rtts):
                lab.set_wan(LinkSettings(delay_ms=rtt / 2))
                m = measure(lab, probes=probes).to_json()
                m["rtt_set_ms"] = rtt
                out.append(m)
                progress(f"RTT {rtt:g} ms: ping {m['rtt_ms']} ms")
    finally:
        lab.down()
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"{'set':>5} {'ping avg':>9} {'min':>8} {'max':>8} {'one-way mean':>12} {'min':>8} {'max':>8}  (ms)")
    for m in out:
        click.echo(f"{m['rtt_set_ms']:>5.0f} {m['rtt_ms']:>9.3f} {m['rtt_min_ms']:>8.3f} {m['rtt_max_ms']:>8.3f} "
                   f"{m['one_way_mean_ms']:>12.3f} {m['one_way_min_ms']:>8.3f} {m['one_way_max_ms']:>8.3f}")


@bench.command("ike-loss")
@click.option("--loss", "losses", default="1,5", show_default=True, help="IKE packet loss in percent")
@click.option("--rtt", default=100.0, show_default=True)
@click.option("--children", default=100, show_default=True, help="CHILD_SAs set up per setting")
@click.option("--tuned", default="retransmit_timeout = 0.5|retransmit_base = 1.4|retransmit_tries = 6",
              show_default=True, help="charon settings for the tuned run, '|'-separated")
@click.option("--json", "as_json", is_flag=True)
def ike_loss(losses: str, rtt: float, children: int, tuned: str, as_json: bool) -> None:
    """CHILD_SA setup time under IKE packet loss, default (4 s) and tuned retransmission timers."""
    from ..netns.ikeloss import run

    _need_root()
    with steps("bench ike-loss", as_json) as progress:
        report = run(_floats(losses), rtt, children, tuned.split("|"), progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"CHILD_SA set-up on an established IKE_SA at {rtt:.0f} ms RTT, {children} per row "
               "(IKE packets dropped at random in both directions):")
    click.echo(f"{'timers':<8} {'loss':>5} {'median':>8} {'p95':>8} {'max':>8} {'>1 s':>5} {'failed':>6}  (ms)")
    for r in report["rows"]:
        click.echo(f"{r['timers']:<8} {r['loss_pct']:>4.0f}% {r['median_ms']:>8.1f} {r['p95_ms']:>8.1f} "
                   f"{r['max_ms']:>8.1f} {r['over_1s']:>5} {r['failed']:>6}")
    click.echo(f"tuned timers: {report['tuned']}")


def _default_results(day: str, name: str = "load") -> str | None:
    """bench/results/NAME-DAY.txt of the checkout this package runs from (None when installed elsewhere)."""
    results = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "bench", "results")
    return os.path.join(results, f"{name}-{day}.txt") if os.path.isdir(results) else None


@bench.command()
@click.option("--rate", default=20.0, show_default=True, help="calls offered a second")
@click.option("--calls", default=300, show_default=True)
@click.option("--hold", default=10.0, show_default=True, help="seconds each call lasts after the answer")
@click.option("--rtt", default=0.0, show_default=True, help="ms; 0: a plain veth, else the WAN emulator")
@click.option("--strategy", default="child-per-call", show_default=True,
              help="ike-per-call (a), child-per-call (b), speculative (c)")
@click.option("--ike-pool", default=1, show_default=True, type=click.IntRange(min=1),
              help="IKE_SAs per peer (ike_pool in [[peer]]); calls go round robin over them")
@click.option("--rtp-ports", default="10000-19999", show_default=True, help="LO-HI, the lab's media range")
@click.option("--ptime", default=100.0, show_default=True,
              help="ms of audio per RTP packet: one packet every ptime ms each way per call (20: a phone's rate)")
@click.option("--raw-seconds", default=3.0, show_default=True, help="how long the raw charon figure is measured")
@click.option("--charon", "charon_lines", multiple=True,
              help="a line for both charons' strongswan.conf section charon { } (repeatable), e.g. "
                   "'retransmit_timeout = 0.5': tuning measured in the same bench")
@click.option("--charon-rcvbuf", default=0, show_default=True,
              help="bytes: receive buffer forced on both charons' IKE/NAT-T sockets (0: the system's)")
@click.option("--profile", "profile_dir", default=None,
              help="DIR: py-spy samples of both controllers during the calls (raw, flamegraph.pl input)")
@click.option("--logs", "logs_dir", default=None, help="DIR: keep the lab's logs, sipp's files and the capture")
@click.option("--out", default=None, help="append the text report here [default: bench/results/load-DATE.txt of "
                                          "the checkout, if there is one]")
@click.option("--json", "as_json", is_flag=True)
def load(rate: float, calls: int, hold: float, rtt: float, strategy: str, ike_pool: int, rtp_ports: str,
         ptime: float, raw_seconds: float, charon_lines: tuple[str, ...], charon_rcvbuf: int, profile_dir: str | None,
         logs_dir: str | None, out: str | None, as_json: bool) -> None:
    """A busy hour: sipp calls at a rate through a lab of their own; keying rate and delay per tenth of
    the run, RTP in clear, CPU and memory, leaks, and the raw charon figure of the same run."""
    import datetime

    from ..config import STRATEGIES
    from ..netns.labstate import LabError, parse_port_range
    from ..netns.load import run
    from ..netns.loadprocs import LoadError
    from ..netns.loadreport import format_text

    _need_root()
    strategy = STRATEGIES.get(strategy, strategy)
    if strategy not in STRATEGIES.values():
        raise click.BadParameter(f"{strategy!r} is not one of {', '.join(STRATEGIES.values())}")
    try:
        ports = parse_port_range(rtp_ports)
    except LabError as exc:
        raise click.BadParameter(str(exc), param_hint="--rtp-ports") from None
    try:
        with steps("bench load", as_json) as progress:
            report = run(rate=rate, calls=calls, hold=hold, rtt=rtt, strategy=strategy, ike_pool=ike_pool,
                         rtp_ports=ports, ptime=ptime, raw_seconds=raw_seconds, charon=charon_lines,
                         charon_rcvbuf=charon_rcvbuf, profile_dir=profile_dir, logs_dir=logs_dir,
                         progress=progress)
    except LoadError as exc:
        raise click.ClickException(str(exc)) from None
    text = format_text(report)
    click.echo(json.dumps(report, indent=1) if as_json else text, nl=as_json)
    path = out or _default_results(datetime.date.today().isoformat())
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")
        if not as_json:
            click.echo(f"(appended to {path})")


@bench.command()
@click.option("--scenario", "scenarios", multiple=True, help="one of the scenarios (repeatable) [default: all]")
@click.option("--calls", default=20, show_default=True, help="live calls during each fault")
@click.option("--hold", default=40.0, show_default=True, help="seconds each call lasts (the fault is inside)")
@click.option("--flood-rate", default=10000, show_default=True, help="SIP messages a second (sip-flood)")
@click.option("--flood-seconds", default=60.0, show_default=True)
@click.option("--protect", type=click.Choice(["required", "opportunistic"]), default="required", show_default=True,
              help="the peers' protect: with opportunistic the media in clear is what is counted")
@click.option("--out", default=None, help="append the text report here [default: bench/results/faults-DATE.txt "
                                          "of the checkout, if there is one]")
@click.option("--json", "as_json", is_flag=True)
def faults(scenarios: tuple[str, ...], calls: int, hold: float, flood_rate: int, flood_seconds: float,
           protect: str, out: str | None, as_json: bool) -> None:
    """Faults during live sipp calls, each in a lab of its own (issue 15): controller restart, charon
    kill -9 on each side, peer gateway restart, charon hung, SIP flood, wrong PSK, 5 % IKE loss; RTP in
    clear on the WAN, media dropped, seconds until every call is protected again, leaks."""
    import datetime

    from ..netns.faults import FaultError, format_text, run

    _need_root()
    try:
        with steps("bench faults", as_json) as progress:
            report = run(list(scenarios) or None, calls=calls, hold=hold, flood_rate=flood_rate,
                         flood_seconds=flood_seconds, protect=protect, progress=progress)
    except FaultError as exc:
        raise click.ClickException(str(exc)) from None
    text = format_text(report)
    click.echo(json.dumps(report, indent=1) if as_json else text, nl=as_json)
    path = out or _default_results(datetime.date.today().isoformat(), "faults")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")
        if not as_json:
            click.echo(f"(appended to {path})")


from .hostile import hostile  # noqa: E402 - a module of its own (pure, in-process: no lab)

bench.add_command(hostile)
from .conference import conference  # noqa: E402 - a module of its own (issue 17's conference lab)

bench.add_command(conference)
