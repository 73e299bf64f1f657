"""Every program the source runs is in the registry (ipsecrtp/programs.py), so `ipsecrtp doctor`
checks it, and every registry package is installed by scripts/setup.sh: a missing install step
fails here, on any machine, instead of on a fresh one only. No root needed: the source is read."""

import os
import re
import tomllib

import pytest

from ipsecrtp.programs import KAMAILIO_MODULES, PIP, PLUGINS, PROGRAMS, lookup

from .progscan import scan_sources, scan_tree, shell_programs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("ipsecrtp", "tests", "bench", "fuzz")
# functions that take the program from the registry itself (the doctor looks each one up)
FROM_REGISTRY = {"ipsecrtp.doctor.locate"}


@pytest.fixture(scope="module")
def scan():
    return scan_tree(ROOT, SCANNED)


def setup_packages() -> set[str]:
    with open(os.path.join(ROOT, "scripts", "setup.sh")) as f:
        text = f.read()
    m = re.search(r"^PKGS=\((.*?)\)", text, re.S | re.M)
    assert m, "scripts/setup.sh has no PKGS=( ... ) array"
    return {w for line in m.group(1).splitlines() for w in line.split("#")[0].split()}


def test_every_program_the_source_runs_is_registered(scan):
    missing = sorted({f"{f.program} ({f.path}:{f.line})" for f in scan.found if lookup(f.program) is None})
    assert missing == [], "add these to ipsecrtp/programs.py (and their package to scripts/setup.sh)"


def test_every_call_site_names_its_program(scan):
    """A program the scan cannot follow is only allowed where it comes from the registry itself."""
    bad = [u for u in scan.unresolved if u.function not in FROM_REGISTRY]
    assert bad == [], "pass the program as a literal, a constant or a wrapper's parameter"


def test_the_labs_wrappers_are_found_by_themselves(scan):
    assert scan.wrappers["ipsecrtp.netns.proc.run"] == {("varargs", 1, "argv")}
    assert scan.wrappers["ipsecrtp.netns.proc.spawn"] == {("argv", 1, "argv")}
    assert scan.wrappers["ipsecrtp.netns.siplab.SipLab._spawn"] == {("argv", 3, "argv")}


def test_the_registry_has_no_stale_entry(scan):
    used = {lookup(f.program) for f in scan.found}
    stale = [p.name for p in PROGRAMS if p.via is None and p not in used]
    assert stale == [], "registered but never run: remove, or say which dependency runs it (via=...)"


def test_every_registered_package_is_installed_by_setup_sh():
    pkgs = setup_packages()
    debian = {p.package for p in PROGRAMS if not p.package.startswith(PIP) and not p.optional} | set(PLUGINS.values())
    debian |= set(KAMAILIO_MODULES.values())
    # libstrongswan and strongswan-libcharon come with strongswan-charon, which depends on them
    implied = {"libstrongswan", "strongswan-libcharon"}
    assert sorted(debian - pkgs - implied) == []
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    pip = " ".join(project["dependencies"] + sum(project["optional-dependencies"].values(), []))
    for p in PROGRAMS:
        if p.package.startswith(PIP) and not p.optional:
            assert p.package[len(PIP):] in pip, p


def test_the_plugins_are_what_the_lab_loads():
    from ipsecrtp.netns.labdaemons import STRONGSWAN_CONF

    load = re.search(r"^\s*load = (.*)$", STRONGSWAN_CONF, re.M).group(1).replace("{backend}", "")
    assert set(load.split()) | {"kernel-libipsec", "kernel-netlink"} == set(PLUGINS)


def test_setup_sh_ends_by_running_the_doctor():
    with open(os.path.join(ROOT, "scripts", "setup.sh")) as f:
        lines = [x for x in f.read().splitlines() if x.strip() and not x.startswith("#")]
    assert any(".venv/bin/ipsecrtp doctor" in x for x in lines[-3:])


# -- the scan itself, on synthetic sources: a new program must not slip through --------------

def programs_in(text: str, module: str = "ipsecrtp.snippet") -> tuple[set[str], list[str]]:
    # scanned with the real ipsecrtp/netns/proc.py, so that its wrappers are known as in the package
    with open(os.path.join(ROOT, "ipsecrtp", "netns", "proc.py")) as f:
        proc = f.read()
    scan = scan_sources({"snippet.py": (module, text), "ipsecrtp/netns/proc.py": ("ipsecrtp.netns.proc", proc)})
    return ({f.program for f in scan.found if f.path == "snippet.py"},
            [u.reason for u in scan.unresolved if u.path == "snippet.py"])


PROGRAM_SNIPPETS = {
    "plain run": 'import subprocess\nsubprocess.run(["frobnicate", "-x"])',
    "alias": 'import subprocess as sp\nsp.Popen(["frobnicate"])',
    "from-import": 'from subprocess import check_output as co\nco(["frobnicate"])',
    "local argv": 'import subprocess\ndef f():\n    argv = ["frobnicate", "a"]\n    subprocess.call(argv + ["b"])',
    "conditional": 'import subprocess\ndef f(x):\n    subprocess.run(["ls"] if x else ["frobnicate"])',
    "constant": 'import subprocess\nTOOL = "/usr/bin/frobnicate"\nsubprocess.run([TOOL])',
    "shell=True": 'import subprocess\nsubprocess.run("A=1 frobnicate | grep x", shell=True)',
    "os.system": 'import os\nos.system("cd /tmp && frobnicate")',
    "os.exec": 'import os\nos.execvp("frobnicate", ["frobnicate"])',
    "sh -c": 'import subprocess\ndef f(conf):\n'
             '    subprocess.run(["sh", "-c", f"mount x && X={conf} exec frobnicate"])',
    "ip netns exec": 'import subprocess\nsubprocess.run(["ip", "netns", "exec", "ns", "frobnicate"])',
    "proc.run": 'from .netns import proc\nproc.run("ns", "frobnicate", "-v")',
    "proc.run starred": 'from .netns import proc\ndef f():\n    argv = ["frobnicate"]\n    proc.run(None, *argv)',
    "proc.spawn": 'from .netns import proc\nproc.spawn("ns", ["frobnicate"], "/tmp/log")',
    "which": 'import shutil\nshutil.which("frobnicate")',
    "which-or-path": 'import os, shutil, subprocess, sys\ndef f():\n'
                     '    t = shutil.which("frobnicate") or \\\n'
                     '        os.path.join(os.path.dirname(sys.executable), "frobnicate")\n'
                     '    subprocess.Popen([t, "--run"])',
    "loop": 'import shutil\nfor t in ("ls", "frobnicate"):\n    shutil.which(t)',
    "asyncio": 'import asyncio\nasyncio.create_subprocess_exec("frobnicate")',
    "wrapper": 'from .netns import proc\ndef w(ns, *argv):\n    proc.run(ns, *argv)\nw("n", "frobnicate")',
    "wrapper of a wrapper": 'import subprocess\ndef w(argv):\n    subprocess.run(["ip", "netns", "exec", "n", *argv])\n'
                            'def w2(x, argv):\n    w(argv)\nw2(1, ["frobnicate"])',
    "wrapper method": 'import subprocess\nclass L:\n    def _go(self, tool):\n        subprocess.run([tool])\n'
                      '    def f(self):\n        self._go("frobnicate")\ndef g(lab):\n    lab._go("frobnicate")',
    "nested wrapper": 'import subprocess\ndef f():\n    def w(*argv):\n        subprocess.run(argv)\n'
                      '    w("frobnicate", "-x")',
    "path helper": 'import os, shutil, subprocess, sys\ndef tool():\n'
                   '    here = os.path.join(os.path.dirname(sys.executable), "frobnicate")\n'
                   '    return here if os.path.exists(here) else shutil.which("frobnicate")\n'
                   'def f():\n    subprocess.run([tool() or "frobnicate", "-x"])',
    "shell wrapper": 'import os\ndef sh(line):\n    os.system(line)\nsh("frobnicate -x")',
}


@pytest.mark.parametrize("name", sorted(PROGRAM_SNIPPETS))
def test_the_scan_finds_a_new_program(name):
    progs, unresolved = programs_in(PROGRAM_SNIPPETS[name])
    assert unresolved == []
    assert {os.path.basename(p) for p in progs} >= {"frobnicate"}
    assert any(lookup(p) is None for p in progs)  # and the registry test would fail on it


UNRESOLVED_SNIPPETS = {
    "argv from a call": 'import subprocess\ndef f(cmd):\n    subprocess.run(cmd)\nf(make_argv())',
    "attribute": 'import subprocess\ndef f(o):\n    subprocess.run([o.tool])',
    "runner as value": 'import functools, subprocess\nrun = functools.partial(subprocess.run, check=True)',
    "computed shell": 'import os\ndef f(t):\n    os.system(f"{t} -x")',
    "**kwargs": 'import subprocess\ndef f(**kw):\n    subprocess.run(kw)',
    "wrapper called with an attribute": 'import subprocess\ndef w(argv):\n    subprocess.run(argv)\n'
                                        'def f(o):\n    w(o.argv)',
}


@pytest.mark.parametrize("name", sorted(UNRESOLVED_SNIPPETS))
def test_the_scan_reports_what_it_cannot_follow(name):
    _, unresolved = programs_in(UNRESOLVED_SNIPPETS[name])
    assert unresolved, name


def test_registered_programs_pass_and_a_shell_line_is_split():
    progs, unresolved = programs_in('import subprocess\nsubprocess.run(["ip", "-j", "addr"])')
    assert progs == {"ip"} and unresolved == [] and lookup("ip") is not None
    assert shell_programs("A=1 B=2 exec /usr/lib/ipsec/charon; echo ok || true") == {"/usr/lib/ipsec/charon", "echo",
                                                                                   "true"}
    assert lookup("/usr/lib/ipsec/charon").name == "charon"
    assert lookup("busybox-static").name == "busybox"
