"""Per-peer IKE credentials in the configuration (issue 16, certificates): ``auth = "pubkey"`` needs a
certificate, an owner-only private key and the CA; each mistake is one line naming the file; the
private key never shows in a repr; a PSK stays needed for pre-keyed. (Charon with real certificates
from ``pki``: tests/lab/test_certificates.py.)"""

from __future__ import annotations

import os

import pytest

from ipsecrtp.config import ConfigError, load

from .test_cli import write_cfg

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN EC PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END EC PRIVATE KEY-----\n"


def pubkey_cfg(tmp_path, key_mode: int = 0o600, cert: str = CERT, drop: str = "") -> str:
    files = {"cert_file": ("gw.crt", cert, 0o644), "key_file": ("gw.key", KEY, key_mode),
             "ca_file": ("ca.crt", CERT, 0o644)}
    lines = ['auth = "pubkey"']
    for key, (name, text, mode) in files.items():
        path = tmp_path / name
        path.write_text(text)
        os.chmod(path, mode)
        if key != drop:
            lines.append(f'{key} = "{path}"')
    return write_cfg(tmp_path, "/nonexistent.vici", peer_extra="\n".join(lines))


def test_certificates_are_read_and_the_key_is_never_shown(tmp_path):
    (p,) = load(pubkey_cfg(tmp_path)).peers
    assert p.auth == "pubkey" and p.pubkey is not None and p.pubkey.cert == CERT.encode()
    assert b"SECRETKEYMATERIAL" in p.pubkey.key
    assert "SECRETKEYMATERIAL" not in repr(p) and "SECRETKEYMATERIAL" not in repr(p.pubkey)


@pytest.mark.parametrize(("kw", "error"), [
    ({"drop": "key_file"}, "needs 'key_file' (auth = 'pubkey')"),
    ({"drop": "ca_file"}, "needs 'ca_file' (auth = 'pubkey')"),
    ({"key_mode": 0o644}, "gw.key is readable by others (chmod 600)"),
    ({"cert": "hello"}, "gw.crt: not a PEM certificate"),
])
def test_each_mistake_is_one_line_naming_the_file(tmp_path, kw, error):
    with pytest.raises(ConfigError) as e:
        load(pubkey_cfg(tmp_path, **kw))
    assert error in str(e.value) and "\n" not in str(e.value)


def test_psk_stays_the_default_and_prekeyed_needs_it(tmp_path):
    (p,) = load(write_cfg(tmp_path, "/nonexistent.vici")).peers
    assert p.auth == "psk" and p.pubkey is None
    cfg = pubkey_cfg(tmp_path)
    text = open(cfg).read()
    no_psk = "\n".join(ln for ln in text.splitlines() if not ln.startswith("psk_file"))
    with open(cfg, "w") as f:
        f.write(no_psk + '\nstrategy = "pre-keyed"\nsignalling = "protected"\n')
    with pytest.raises(ConfigError, match="derives its keys from the peer's pre-shared key: it needs 'psk_file'"):
        load(cfg)
