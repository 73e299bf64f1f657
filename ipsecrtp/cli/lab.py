"""``ipsecrtp lab ...``: build, inspect, demonstrate and remove the namespace lab."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import click

from .progress import ticking

if TYPE_CHECKING:  # the lab is imported by the commands that use it: the CLI starts without it
    from ..netns.calls import CallResult, WireStats

DEFAULT_NAME = "demo"


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


@click.group()
def lab() -> None:
    """Network-namespace lab: two gateways, each with charon and a controller."""


def wan_options(f):
    """--rtt/--jitter/--loss/--ike-loss/--rate: the emulated WAN link."""
    for opt in reversed([
        click.option("--rtt", type=float, default=None, help="round-trip time in ms (half each way)"),
        click.option("--jitter", type=float, default=0.0, show_default=True, help="+- ms per direction"),
        click.option("--loss", type=float, default=0.0, show_default=True, help="loss, percent of all frames"),
        click.option("--ike-loss", type=float, default=0.0, show_default=True, help="loss, percent of IKE packets"),
        click.option("--rate", type=float, default=0.0, show_default=True, help="kbit/s per direction, 0: none"),
    ]):
        f = opt(f)
    return f


def link_settings(rtt, jitter, loss, ike_loss, rate):
    from ..netns.wanem import LinkSettings

    if rtt is None and not (jitter or loss or ike_loss or rate):
        return None
    rtt = rtt or 0.0
    if rtt < 0 or jitter < 0 or jitter > rtt / 2 or not (0 <= loss <= 100 and 0 <= ike_loss <= 100):
        raise click.BadParameter("need rtt >= 0, 0 <= jitter <= rtt/2, losses within 0-100 %")
    return LinkSettings(delay_ms=rtt / 2, jitter_ms=jitter, loss=loss / 100, ike_loss=ike_loss / 100,
                        rate_kbit=rate)


@lab.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True)
@click.option("--media-timeout", default=30.0, show_default=True, help="seconds without media before un-keying")
@click.option("--strategy", default="child-per-call", show_default=True,
              help="keying strategy: ike-per-call (a), child-per-call (b), speculative (c)")
@click.option("--topology", type=click.Choice(["direct", "nat", "phone-nat"]), default="direct", show_default=True,
              help="nat: a NAT router (nftables masquerade) between the gateways; phone-nat (router mode): "
                   "a NAT between gwa's phone and gwa")
@click.option("--sip-alg", is_flag=True, help="with a NAT topology: the kernel's SIP ALG rewrites SIP and SDP")
@click.option("--mode", type=click.Choice(["host", "router"]), default="host", show_default=True,
              help="host: the gateways are the media endpoints; router: a phone behind each gateway (kernel ESP)")
@click.option("--no-keying", is_flag=True, help="no charon: the controllers only observe and decide")
@click.option("--nat-random-ports", is_flag=True, help="with phone-nat: the NAT picks random source ports")
@click.option("--rtp-ports", default=None,
              help="LO-HI: the media ports the controllers key and the user agents use [default: the lab's, "
                   "10000-10199]")
@click.option("--signalling", type=click.Choice(["clear", "tls"]), default="clear", show_default=True,
              help="tls: a Kamailio on each gateway, SIP between them over TLS only, each driving its "
                   "controller over rtpengine's ng protocol")
@click.option("--auth", type=click.Choice(["psk", "pubkey"]), default="psk", show_default=True,
              help="pubkey: IKE with certificates from a per-lab CA (strongSwan's pki), one per gateway")
@click.option("--legs", type=click.Choice(["per-leg", "shared"]), default="per-leg", show_default=True,
              help="shared: the calls between the gateways share one CHILD_SA")
@click.option("--ipv6", is_flag=True, help="the WAN, IKE, SIP, SDP and media over IPv6 (2001:db8::/32)")
@wan_options
def up(name: str, media_timeout: float, strategy: str, topology: str, sip_alg: bool, mode: str, no_keying: bool,
       nat_random_ports: bool, rtp_ports: str, signalling: str, auth: str, legs: str, ipv6: bool, rtt, jitter, loss,
       ike_loss, rate) -> None:
    """Create the lab (namespaces, WAN link, charons, controllers).

    With --rtt/--jitter/--loss/--ike-loss/--rate the WAN goes through a user-space link
    emulator in a third namespace (this kernel has no netem)."""
    from ..config import STRATEGIES
    from ..netns.lab import Lab
    from ..netns.labstate import RTP_PORTS, LabError, parse_port_range

    strategy = STRATEGIES.get(strategy, strategy)
    if strategy not in STRATEGIES.values():
        raise click.BadParameter(f"{strategy!r} is not one of {', '.join(STRATEGIES.values())}")
    try:
        ports = parse_port_range(rtp_ports) if rtp_ports else RTP_PORTS
    except LabError as exc:
        raise click.BadParameter(str(exc), param_hint="--rtp-ports") from None
    wan = link_settings(rtt, jitter, loss, ike_loss, rate)
    if signalling == "tls" and (topology != "direct" or mode != "host" or no_keying or wan is not None
                                or auth != "psk" or legs != "per-leg" or ipv6):
        raise click.BadParameter("builds the default topology only (host mode, direct WAN, keying)",
                                 param_hint="--signalling tls")
    lab_ = Lab(name)
    try:
        if signalling == "tls":
            from ..netns import proxylab

            proxylab.up_tls(lab_, media_timeout, strategy=strategy, rtp_ports=ports)
        else:
            lab_.up(media_timeout=media_timeout, wan=wan, strategy=strategy,
                    nat={"nat": "between", "phone-nat": "phone"}.get(topology), sip_alg=sip_alg, mode=mode,
                    keying=not no_keying, nat_random_ports=nat_random_ports, rtp_ports=ports, auth=auth,
                    legs=legs, ipv6=ipv6)
    except (LabError, RuntimeError, OSError) as exc:
        lab_.down()
        raise _fail(exc) from None
    st = lab_.status()
    click.echo(f"lab {name} up: backend {st['backend']} ({st['esp_probe']}), strategy {strategy}, mode {mode}, "
               f"topology {topology}{' with the SIP ALG' if sip_alg else ''}, RTP ports {ports[0]}-{ports[1]}"
               + (", IKE with certificates from the lab's CA" if auth == "pubkey" else "")
               + (", legs shared" if legs == "shared" else "") + (", IPv6" if ipv6 else ""))
    for role, g in st["gateways"].items():
        if g.get("phone"):
            click.echo(f"  {role}'s phone: namespace {g['phone']['namespace']}, address {g['phone']['address']}")
    if signalling == "tls":
        click.echo("  signalling: a Kamailio on each gateway (phones on :5062 through it), SIP between them over "
                   "TLS on :5061 only, each proxy's rtpengine module on its controller's ng endpoint 127.0.0.1:22222")
    if wan is not None:
        click.echo(f"  wan: emulated link {wan.__dict__}")
    for role, gw in st["gateways"].items():
        click.echo(f"  {role}: namespace {gw['namespace']}, wan {gw['wan']}  capture: {gw['capture_hint']}")


@lab.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True)
@click.option("--measure/--no-measure", default=True, show_default=True, help="ping and capture after the change")
@wan_options
def wan(name: str, measure: bool, rtt, jitter, loss, ike_loss, rate) -> None:
    """Change the emulated WAN link of a running lab, then measure it."""
    from ..netns.lab import Lab
    from ..netns.labstate import LabError
    from ..netns.wancheck import measure as measure_link

    settings = link_settings(rtt, jitter, loss, ike_loss, rate)
    if settings is None:
        raise click.UsageError("give at least --rtt")
    try:
        lab_ = Lab.load(name)
        lab_.set_wan(settings)
    except LabError as exc:
        raise _fail(exc) from None
    click.echo(f"lab {name}: wan now {settings.__dict__}")
    if measure:
        click.echo(f"  measured: {measure_link(lab_).to_json()}")


@lab.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def status(name: str, as_json: bool) -> None:
    """Namespaces, roles, addresses, interfaces, processes and charon's kernel backend."""
    from ..netns.lab import Lab
    from ..netns.labstate import LabError

    try:
        st = Lab.load(name).status()
    except LabError as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    click.echo(f"lab {name}: backend {st['backend']} ({st['esp_probe']}), mode {st['mode']}")
    for role, gw in st["gateways"].items():
        addrs = ", ".join(f"{i['name']}={'/'.join(i['addresses'])}" for i in gw["interfaces"])
        click.echo(f"  {role}: {gw['namespace']} [{addrs}]")
        if gw.get("metrics"):  # the controller's exporter listens on the namespace's own loopback
            click.echo(f"    metrics: ip netns exec {gw['namespace']} curl -s {gw['metrics']}")
    for p in st["processes"]:
        click.echo(f"  {p['kind']:<10} {p['role']} pid {p['pid']} {'running' if p['alive'] else 'gone'}")


@lab.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True)
def down(name: str) -> None:
    """Remove everything the lab created (also after a failed 'up')."""
    from ..netns.lab import Lab
    from ..netns.labstate import LabError

    try:
        lab_ = Lab.load(name)
    except LabError as exc:
        raise _fail(exc) from None
    removed = lab_.down()
    click.echo(f"lab {name} down: removed {len(removed)} items")


@lab.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True)
@click.option("--keep", is_flag=True, help="leave the lab up afterwards")
@click.option("--talk", default=3.0, show_default=True, help="seconds of media per answered call")
@click.option("--signalling", type=click.Choice(["clear", "tls"]), default="clear", show_default=True,
              help="tls: the calls' SIP crosses the WAN only as TLS between two Kamailios driving ipsecrtp over ng")
def demo(name: str, keep: bool, talk: float, signalling: str) -> None:
    """Build the lab, place real baresip calls, show their per-call SAs, tear down."""
    from ..netns.calls import Capture, Phones, flow_rules, wire_stats
    from ..netns.lab import Lab
    from ..netns.labstate import LabError

    t0 = time.monotonic()
    lab_ = Lab(name)
    try:
        if signalling == "tls":
            from ..netns import proxylab

            proxylab.up_tls(lab_)  # the phones too, each behind its gateway's Kamailio
        else:
            lab_.up()
        st = lab_.status()
        click.echo(f"lab {name} up in {time.monotonic() - t0:.1f} s; charon backend: {st['backend']} "
                   f"({st['esp_probe']}); host mode; signalling {signalling}")
        if signalling != "tls":
            lab_.start_uas()
        cap = Capture(lab_, lab_.topology[0].role, os.path.join(lab_.dir, "wan.pcap"))
        phones = Phones(lab_)
        results = []
        for scenario in ("caller-hangup", "callee-hangup", "cancel"):
            r = phones.call(scenario, talk=talk)
            results.append(r)
            _echo_call(r, scenario)
        phones.close()
        cap.stop()
        _echo_wire(results, wire_stats(cap.path))
        if signalling == "tls":
            sig = proxylab.wan_signalling(cap.path)
            click.echo(f"  signalling on the WAN: {sig['tls']} TLS segments on 5061, {sig['clear_sip']} packets of "
                       "SIP in clear")
        left = {gw.role: flow_rules(lab_, gw.role) for gw in lab_.topology}
        click.echo(f"\nper-flow routing rules left after the calls: {left}")
        click.echo(f"demo finished in {time.monotonic() - t0:.1f} s")
    except (LabError, RuntimeError, OSError, TimeoutError) as exc:
        click.echo(f"demo failed: {exc}", err=True)
        if not keep:
            lab_.down()
        raise SystemExit(1) from None
    if not keep:
        lab_.down()
        click.echo(f"lab {name} removed")


def _echo_call(r: CallResult, scenario: str) -> None:
    """One demo call: what the controllers logged about its keying, and the CHILD_SAs charon held."""
    click.echo(f"\ncall {r.call_id} ({scenario}):")
    for e in r.keying:
        if e["event"] in ("keying", "sa-initiated", "sa-up", "sa-down", "sa-removed", "unkeying"):
            extra = {k: e[k] for k in ("role", "child", "keying_ms", "after_answer_ms", "local_ts",
                                        "remote_ts", "reason") if k in e}
            click.echo(f"  {e['gw']} {e['event']:<13} {extra}")
    for role, children in r.children.items():
        for c in children:
            click.echo(f"  {role} charon CHILD_SA {c['name']} #{c['uniqueid']} {c['state']} "
                       f"{c['local-ts']} <-> {c['remote-ts']}")
    if not r.answered:
        click.echo("  not answered: nothing keyed")


def _echo_wire(results: list[CallResult], ws: WireStats) -> None:
    """What the WAN capture saw of the demo calls: in clear or in ESP, before, while and after keyed."""
    click.echo("\nWAN capture (tcpdump on gwa wan0):")
    click.echo(f"  SIP packets in clear: {len(ws.sip)}; ESP-in-UDP packets: {len(ws.esp)}; "
               f"cleartext RTP/RTCP packets: {len(ws.rtp_clear)}")
    for r in results:
        if not r.answered:
            continue
        both_up, first_down = max(r.sa_up.values()), min(r.sa_down.values())
        mine = [p for p in ws.rtp_clear if {p[2], p[4]} <= r.ports]
        clear = [p for p in mine if both_up < p[0] < first_down]
        before = [p for p in mine if p[0] <= both_up]
        trailing = [p for p in mine if first_down <= p[0]]
        esp = [p for p in ws.esp if both_up <= p[0] <= first_down]
        click.echo(f"  call {r.call_id[:16]}: {len(esp)} ESP packets while keyed, {len(clear)} cleartext "
                   f"RTP/RTCP while keyed, {len(before)} before the SA was up (post-answer gap "
                   f"{(both_up - r.answered_at) * 1000:.1f} ms), {len(trailing)} after it was removed")


@lab.command("vm", context_settings={"ignore_unknown_options": True})
@click.option("--timeout", default=1200.0, show_default=True, help="hard limit in seconds (the guest is killed)")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def vm_cmd(timeout: float, command: tuple[str, ...]) -> None:
    """Boot Debian's kernel under qemu and run COMMAND (default: the kernel tier's tests) in the
    checkout there; the guest's kernel does ESP, so the lab in it uses charon's kernel-netlink."""
    from ..netns import vm

    line = " ".join(command) or (".venv/bin/python -m pytest -q -p no:cacheprovider -rs tests/kernel "
                                 "tests/lab/test_calls.py")
    try:
        with ticking("lab vm: the guest runs"):
            res = vm.run(line, timeout=timeout)
    except vm.VmError as exc:
        raise _fail(exc) from None
    click.echo(res.output, nl=False)
    click.echo(f"guest: exit {res.exit_code}, booted in {res.boot_seconds or float('nan'):.1f} s, "
               f"{res.seconds:.1f} s in all")
    if res.exit_code != 0:
        raise SystemExit(1)
