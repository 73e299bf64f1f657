"""controller.ng_listen / ng_allow: off by default, loopback-only sources by default, bad values
refused with one line naming the field."""

from __future__ import annotations

import os

import pytest

from ipsecrtp.config import ConfigError, load

BASE = """\
[controller]
interfaces = ["eth0"]
vici = "unix:///run/charon.vici"
{extra}

[[peer]]
name = "b"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["192.0.2.0/24"]
remote_media = ["203.0.113.0/24"]
psk_file = "{psk}"
"""


def write(tmp_path, extra: str = "") -> str:
    psk = tmp_path / "psk"
    psk.write_text("k" * 32)
    os.chmod(psk, 0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.format(extra=extra, psk=psk))
    return str(cfg)


def test_off_by_default_and_only_loopback_may_use_it(tmp_path):
    cfg = load(write(tmp_path))
    assert cfg.ng_listen is None
    assert cfg.ng_allow == ("127.0.0.1/32", "::1/128")


def test_configured(tmp_path):
    cfg = load(write(tmp_path, 'ng_listen = "127.0.0.1:22222"\nng_allow = ["127.0.0.1", "10.0.0.0/29"]'))
    assert cfg.ng_listen == ("127.0.0.1", 22222) and cfg.ng_allow == ("127.0.0.1/32", "10.0.0.0/29")


@pytest.mark.parametrize(("extra", "field"), [
    ('ng_listen = "localhost:22222"', "controller.ng_listen"),
    ('ng_listen = "127.0.0.1"', "controller.ng_listen"),
    ('ng_allow = []', "controller.ng_allow"),
    ('ng_allow = ["any"]', "controller.ng_allow"),
    ('ng_allow = ["10.0.0.1/8"]', "controller.ng_allow"),
])
def test_bad_values_name_the_field(tmp_path, extra, field):
    with pytest.raises(ConfigError, match=field):
        load(write(tmp_path, extra))
