"""``ipsecrtp overhead``: what each protection profile costs per packet and per call (ipsecrtp/overhead.py)."""

from __future__ import annotations

import dataclasses
import json

import click

from ..overhead import CODECS, PTIMES, table


@click.command()
@click.option("--codec", "codecs", multiple=True, type=click.Choice(list(CODECS)),
              help="codec (repeatable; default: all)")
@click.option("--ptime", "ptimes", multiple=True, type=click.IntRange(1, 1000),
              help=f"packet time in ms (repeatable; default {'/'.join(map(str, PTIMES))})")
@click.option("--ip", "ips", multiple=True, type=click.Choice(["4", "6"]), help="IP version (default: both)")
@click.option("--json", "as_json", is_flag=True, help="one object per row, with each packet's field layout")
def overhead(codecs: tuple[str, ...], ptimes: tuple[int, ...], ips: tuple[str, ...], as_json: bool) -> None:
    """Bytes per RTP packet at IP level and as an Ethernet frame (header + FCS, 64-byte minimum;
    the JSON's l1_bytes adds preamble, SFD and inter-frame gap), packets and kbit/s per direction,
    and the overhead over plain RTP, for every ESP profile (cipher x tunnel/transport x with/without
    UDP encapsulation) and the RTP-level alternatives (SRTP, payload-only encryption, plain)."""
    rows = table(codecs or None, ptimes or None, tuple(int(i) for i in ips) or (4, 6))
    if not rows:
        raise click.ClickException("no such packetisation (AMR-WB packs 20 ms frames, G.729 10 ms, Opus 10 ms)")
    if as_json:
        click.echo(json.dumps([{**dataclasses.asdict(r), "layout": dict(r.layout)} for r in rows], indent=1))
        return
    group, width = None, max(len(r.label) for r in rows)
    for r in rows:
        if (r.codec, r.ptime) != group:
            group = (r.codec, r.ptime)
            click.echo(f"\n{CODECS[r.codec].label}, {r.ptime} ms: {r.payload} B payload, {r.pps:g} packets/s "
                       f"per direction")
            click.echo(f"  {'profile':<{width}} {'IP B':>5} {'L2 B':>5} {'+B':>4} {'+%':>7} "
                       f"{'kbit/s IP':>9} {'kbit/s L2':>9}  C I")
        click.echo(f"  {r.label:<{width}} {r.ip_bytes:>5} {r.l2_bytes:>5} {r.overhead_bytes:>4} "
                   f"{r.overhead_pct:>6.1f}% {r.kbps_ip:>9.1f} {r.kbps_l2:>9.1f}  {'C' if r.confidentiality else '-'} "
                   f"{'I' if r.integrity else '-'}")
    click.echo("\nIP B: the IP packet; L2 B: the Ethernet frame (14 + 4 FCS); +B, +%: over plain RTP at IP level; "
               "kbit/s: one direction, RTP only (no RTCP); C: confidentiality, I: integrity")
