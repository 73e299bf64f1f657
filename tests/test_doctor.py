"""`ipsecrtp doctor`: passes on a machine scripts/setup.sh prepared, fails naming the package when a
required program is hidden, and checks a gateway's configuration (PSK modes, interfaces, VICI)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ipsecrtp.doctor import Check, config_checks, elf_is_static, failed, format_line, python_checks
from ipsecrtp.programs import GATEWAY, LAB, VM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the kernel probes need root (network namespaces)")


def doctor(*args: str, env: dict | None = None) -> tuple[int, list[dict]]:
    r = subprocess.run([sys.executable, "-m", "ipsecrtp", "doctor", "--json", *args], capture_output=True,
                       text=True, timeout=120, env=env)
    return r.returncode, json.loads(r.stdout)


@needs_root
def test_a_prepared_machine_passes_and_every_check_says_what_and_fix():
    code, checks = doctor()
    assert code == 0, [c for c in checks if c["required"] and not c["ok"]]
    assert {"program:sipp", "program:busybox", "plugin:vici", "kernel:esp", "charon:version"} <= {
        c["name"] for c in checks}
    for c in checks:
        assert {"name", "ok", "required", "what", "detail", "fix", "package"} <= set(c), c
        assert c["what"] and (c["ok"] or c["fix"]), c


def path_without(tmp_path, program: str) -> str:
    """A PATH of symlinks to everything in /usr/bin and /usr/sbin but ``program``: only it is hidden."""
    d = tmp_path / "bin"
    d.mkdir()
    for src in ("/usr/sbin", "/usr/bin"):
        for name in os.listdir(src):
            if name != program and not (d / name).exists():
                (d / name).symlink_to(os.path.join(src, name))
    return str(d)


def test_a_hidden_program_fails_the_doctor_and_names_its_package(tmp_path):
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed here (scripts/setup.sh)")
    before = {c["name"] for c in doctor()[1] if c["required"] and not c["ok"]}
    code, checks = doctor(env=dict(os.environ, PATH=path_without(tmp_path, "sipp")))
    assert code != 0
    (sipp,) = [c for c in checks if c["name"] == "program:sipp"]
    assert not sipp["ok"] and sipp["required"] and sipp["package"] == "sip-tester" and "sip-tester" in sipp["fix"]
    # nothing else changed: the check sees exactly the one program that went missing
    assert {c["name"] for c in checks if c["required"] and not c["ok"]} - before == {"program:sipp"}


def test_human_output_is_one_line_per_check_and_a_summary():
    r = subprocess.run([sys.executable, "-m", "ipsecrtp", "doctor"], capture_output=True, text=True, timeout=120)
    lines = r.stdout.strip().splitlines()
    n = len(json.loads(subprocess.run([sys.executable, "-m", "ipsecrtp", "doctor", "--json"], capture_output=True,
                                      text=True, timeout=120).stdout))
    assert len(lines) == n + 1 and lines[-1].startswith(f"{n} checks as a lab and test machine")
    assert all(x.split()[0] in ("ok", "FAIL", "warn") for x in lines[:-1])


def test_format_line_and_failed():
    bad = Check("program:x", False, True, "x: a tool", "not found in PATH", "apt-get install x-pkg", "x-pkg")
    optional = Check("program:y", False, False, "y", "not found in PATH", "apt-get install y")
    good = Check("root", True, True, "root", "uid 0")
    assert format_line(bad).startswith("FAIL") and format_line(bad).endswith("-> apt-get install x-pkg")
    assert format_line(optional).startswith("warn") and format_line(good).startswith("ok")
    assert failed([bad, optional, good]) == [bad]


def test_python_dependencies_are_checked_the_tests_only_on_a_lab_machine():
    lab = by_name(python_checks(frozenset({GATEWAY, LAB, VM})))
    gateway = by_name(python_checks(frozenset({GATEWAY})))
    assert lab["python:prometheus_client"].ok and lab["python:prometheus_client"].required  # the metrics exporter
    assert lab["python:vici"].required and gateway["python:vici"].required
    assert lab["python:pytest"].required and not gateway["python:pytest"].required


def test_static_elf_is_told_from_a_dynamic_one(tmp_path):
    assert elf_is_static("/bin/sh") is False
    (tmp_path / "text").write_text("#!/bin/sh\n")
    assert elf_is_static(str(tmp_path / "text")) is None
    busybox = shutil.which("busybox")
    if busybox:  # Debian's busybox-static
        assert elf_is_static(busybox) is True


def write_cfg(tmp_path, psk_mode: int = 0o600, iface: str = "lo", vici: str = "none.vici") -> str:
    psk = tmp_path / "psk"
    psk.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(psk, psk_mode)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""[controller]
interfaces = ["{iface}"]
vici = "unix://{tmp_path / vici}"
[[peer]]
name = "gw-b"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["198.51.100.1/32"]
remote_media = ["198.51.100.2/32"]
psk_file = "{psk}"
""")
    return str(cfg)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_a_gateway_config_with_a_readable_psk_a_missing_interface_and_no_charon(tmp_path):
    c = by_name(config_checks(write_cfg(tmp_path, psk_mode=0o644, iface="nosuch0"), esp=False))
    assert not c["config"].ok and "readable by others" in c["config"].detail
    assert not c["psk:gw-b"].ok and c["psk:gw-b"].fix.startswith("chmod 600 ")
    assert not c["interface:nosuch0"].ok
    assert not c["vici"].ok and "no charon VICI socket" in c["vici"].detail
    assert all(x.required for x in c.values())


def test_a_good_gateway_config_passes_up_to_charon(tmp_path):
    c = by_name(config_checks(write_cfg(tmp_path), esp=False))
    assert c["config"].ok and c["psk:gw-b"].ok and c["interface:lo"].ok
    assert not c["vici"].ok  # no charon listens on that socket


@needs_root
def test_the_cli_with_config_checks_as_a_gateway(tmp_path):
    code, checks = doctor("--config", write_cfg(tmp_path, psk_mode=0o640))
    assert code != 0
    c = {x["name"]: x for x in checks}
    assert not c["psk:gw-b"]["ok"] and not c["vici"]["ok"]
    # as a gateway, the lab's tools are reported but not required
    assert not c["program:kamailio"]["required"] and c["program:charon"]["required"]
