"""Shared by the lab tests that need kernel ESP (router mode, pre-keyed): they run in the real-kernel
tier; on a kernel without ESP the lab must refuse them in one line and leave nothing behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from ipsecrtp.kernel.xfrm import probe_esp
from ipsecrtp.netns.calls import CallResult, Capture, Phones, WireStats, wire_stats
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.labstate import LabError


def assert_refused_without_esp(match: str, **up) -> None:
    if probe_esp().supported:
        pytest.skip("this kernel does ESP")
    lab = Lab("e" + secrets.token_hex(4))
    try:
        with pytest.raises(LabError, match=match):
            lab.up(**up)
    finally:
        lab.down()
    assert not os.path.exists(lab.dir)


@dataclass
class KernelCall:
    lab: Lab
    result: CallResult
    wire: dict[str, WireStats]  # per gateway, its WAN capture
    phones: dict[str, WireStats]  # router mode: per gateway, its phone's LAN capture


@contextmanager
def one_call(tmp_path, talk: float = 2.0, drive: Callable[[Phones], CallResult] | None = None, **up):
    """A lab with kernel ESP and one answered call (caller hangs up) captured on both WAN sides;
    everything removed when the block ends, also on a failed assertion. ``drive``: places the call
    itself instead (a test that must wait for something during the call)."""
    if not probe_esp().supported:
        pytest.skip("needs kernel ESP: the real-kernel tier runs this")
    lab = Lab("e" + secrets.token_hex(4))
    try:
        lab.up(**up)
        assert lab.state["backend"] == "kernel-netlink"
        lab.start_uas()
        caps = {r: Capture(lab, r, str(tmp_path / f"{r}.pcap")) for r in ("gwa", "gwb")}
        lans = {r: Capture(lab, r, str(tmp_path / f"{r}-phone.pcap"), phone=True)
                for r in ("gwa", "gwb")} if up.get("mode") == "router" else {}
        phones = Phones(lab)
        try:
            r = drive(phones) if drive is not None else phones.call("caller-hangup", talk=talk)
        finally:
            phones.close()
            for c in (*caps.values(), *lans.values()):
                c.stop()
        yield KernelCall(lab, r, {role: wire_stats(c.path) for role, c in caps.items()},
                         {role: wire_stats(c.path) for role, c in lans.items()})
    finally:
        lab.down()
    assert not os.path.exists(lab.dir)
