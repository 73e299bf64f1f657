"""The lab's own promises: status tells what exists, and down removes everything, also after a
crash of 'lab up' halfway through."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from ipsecrtp.netns import proc
from ipsecrtp.netns.lab import Lab

pytestmark = pytest.mark.lab


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ipsecrtp", *args], capture_output=True, text=True, timeout=120,
                          **kw)


def namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


def test_down_after_up_was_killed_halfway():
    name = "k" + secrets.token_hex(4)
    lab = Lab(name)
    p = subprocess.Popen([sys.executable, "-m", "ipsecrtp", "lab", "up", "--name", name],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorded: list[dict] = []
    try:
        deadline = time.monotonic() + 30
        # kill 'up' as soon as the first charon runs: namespaces exist, controllers do not yet
        while time.monotonic() < deadline:
            try:
                recorded = json.load(open(lab.state_path))["procs"]
            except (OSError, ValueError):
                recorded = []
            if any(r["kind"] == "charon" for r in recorded):
                break
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert any(r["kind"] == "charon" for r in recorded), "up never reached charon"
        assert {f"irtp-{name}-gwa", f"irtp-{name}-gwb"} & namespaces()
    finally:
        r = cli("lab", "down", "--name", name)
    assert r.returncode == 0, r.stderr
    state = recorded
    assert not {f"irtp-{name}-gwa", f"irtp-{name}-gwb"} & namespaces()
    for rec in state:
        assert not proc.alive(rec["pid"], rec["start"]), rec
    assert not os.path.exists(lab.dir)
    # no charon of this lab survives anywhere (its command line names the lab's config)
    out = subprocess.run(["pgrep", "-af", lab.dir], capture_output=True, text=True).stdout
    assert out.strip() == ""


def test_status_json_describes_the_lab(lab):
    r = cli("lab", "status", "--name", lab.name, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["backend"] in ("kernel-libipsec", "kernel-netlink")
    assert st["mode"] == "host"
    gws = st["gateways"]
    assert set(gws) == {"gwa", "gwb"}
    for role, addr in (("gwa", "198.51.100.1/24"), ("gwb", "198.51.100.2/24")):
        g = gws[role]
        assert g["namespace"] == f"irtp-{lab.name}-{role}" and g["exists"]
        wan = [i for i in g["interfaces"] if i["name"] == "wan0"]
        assert wan and addr in wan[0]["addresses"]
        assert g["capture_hint"].endswith("tcpdump -ni wan0")
    kinds = sorted(p["kind"] for p in st["processes"] if p["alive"])
    assert kinds.count("charon") == 2 and kinds.count("controller") == 2
    # the backend the lab chose is the one charon reports over VICI
    ctl = [e for e in open(lab.controller_log("gwa")).read().splitlines() if '"event":"backend"' in e]
    assert json.loads(ctl[0])["charon_backend"] == st["backend"]
