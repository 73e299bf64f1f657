"""The configuration's schema (msgspec) and `ipsecrtp check-config`: the whole file's types checked
before any value is used, each error one line naming the key; unknown keys refused by check-config
with the closest known one; and the schema and config.py read the same keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ipsecrtp import config as config_module
from ipsecrtp.config import ConfigError, load
from ipsecrtp.configschema import KNOWN, LIMIT_KEYS

BASE = """\
[controller]
name = "gw1"
interfaces = ["wan0"]
vici = "unix:///nonexistent/charon.vici"
{controller}

[[peer]]
name = "gwb"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["192.0.2.0/24"]
remote_media = ["203.0.113.0/24"]
psk_file = "{dir}/psk"
{peer}
"""


def write(tmp_path, controller: str = "", peer: str = "") -> str:
    (tmp_path / "psk").write_text("k" * 32)
    os.chmod(tmp_path / "psk", 0o600)
    path = tmp_path / "c.toml"
    path.write_text(BASE.format(dir=tmp_path, controller=controller, peer=peer))
    return str(path)


def test_every_key_config_py_reads_is_in_the_schema():
    """A key added to config.py and not to the schema fails here (check-config would call it unknown)."""
    src = open(config_module.__file__).read()
    read = {m.group(1): set() for m in re.finditer(r"\b([cp])(?:\.get\(|\[)\"", src)}
    for table, key in re.findall(r"\b([cp])(?:\.get\(|\[)\"([a-z_]+)\"", src):
        read[table].add(key)
    assert read["c"] | set(LIMIT_KEYS) <= set(KNOWN["controller"])
    assert read["p"] <= set(KNOWN["peer"])


@pytest.mark.parametrize(("controller", "peer", "words"), [
    ('dry_run = "false"', "", 'controller.dry_run: must be true or false, not \'false\''),
    ('media_interfaces = "lan0"', "", "controller.media_interfaces: must be a list, not 'lan0'"),
    ('media_timeout = "30s"', "", "controller.media_timeout: must be a number, not '30s'"),
    ('sip_ports = ["5060"]', "", "controller.sip_ports[0]: must be a whole number, not '5060'"),
    ("", "ike_pool = 2.5", "peer[0].ike_pool: must be a whole number, not 2.5"),
    ("", 'esp_proposals = "aes128-sha256"', "peer[0].esp_proposals: must be a list, not 'aes128-sha256'"),
])
def test_a_wrong_type_is_one_line_naming_the_key(tmp_path, controller, peer, words):
    path = write(tmp_path, controller, peer)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert str(exc.value) == f"{path}: {words}"


def test_values_that_were_silently_misread_before_are_refused(tmp_path):
    """Before the schema: dry_run = "false" was bool("false") = True (keying off), media_interfaces =
    "lan0" was four interfaces l, a, n, 0, media_timeout = "30s" a traceback."""
    assert load(write(tmp_path, "dry_run = false")).dry_run is False
    assert load(write(tmp_path, 'media_interfaces = ["lan0"]')).media_interfaces == ("lan0",)
    for bad in ('dry_run = "false"', 'media_interfaces = "lan0"', 'media_timeout = "30s"'):
        with pytest.raises(ConfigError):
            load(write(tmp_path, bad))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecrtp", *args], capture_output=True, text=True)


def test_check_config_accepts_a_good_file_and_asks_nothing_of_charon(tmp_path):
    path = write(tmp_path, 'control_socket = "/run/ipsecrtp/gw1.sock"')
    r = cli("check-config", path)  # its VICI socket does not exist: nothing was asked of charon
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.strip() == f"{path}: ok: 1 peers (gwb), control socket /run/ipsecrtp/gw1.sock, metrics off"
    out = json.loads(cli("check-config", path, "--json").stdout)
    assert out["ok"] is True and out["peers"] == ["gwb"] and out["problems"] == []


def test_check_config_refuses_unknown_keys_with_a_hint(tmp_path):
    path = write(tmp_path, "teardown_dealy = 2.0", "stratgy = \"c\"")
    load(path)  # `run` ignores them (a newer file on an older controller still starts) ...
    r = cli("check-config", path)  # ... check-config does not
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"{path}: controller.teardown_dealy: unknown key (did you mean teardown_delay?)",
        f"{path}: peer[0].stratgy: unknown key (did you mean strategy?)"]


def test_check_config_reports_what_run_would_refuse(tmp_path):
    path = write(tmp_path, "", 'strategy = "z"')
    r = cli("check-config", path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "peer[0].strategy: 'z' is not one of" in r.stderr
    good = write(tmp_path)
    os.chmod(tmp_path / "psk", 0o644)  # the key file others may read: refused as by `run`
    r = cli("check-config", good)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"{good}: peer[0]: psk_file {tmp_path}/psk is readable by others (chmod 600)"]
