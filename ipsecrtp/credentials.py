"""A peer's IKE credentials, read from files at start: a pre-shared key, or (``auth = "pubkey"``) a
certificate, its private key and the CA that must have issued the peer's certificate.

Each file is read once; a secret file (the PSK, the private key) must be readable by its owner
only. Certificates are checked for their PEM shape here and parsed by charon when loaded (a bad
one stops the controller at start in one line); key material never reaches a repr or a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class CredentialError(ValueError):
    """One line: which file, what is wrong with it."""


@dataclass(frozen=True)
class Pubkey:
    cert: bytes  # our certificate (PEM), sent to the peer in IKE_AUTH
    key: bytes = field(repr=False)  # its private key (PEM)
    ca: bytes = b""  # the CA certificate the peer's certificate must chain to (PEM)


def _read(path: str, what: str, secret: bool) -> bytes:
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CredentialError(f"{what} {path}: {exc.strerror}") from None
    if secret and st.st_mode & 0o077:
        raise CredentialError(f"{what} {path} is readable by others (chmod 600)")
    return data


def read_psk(path: str) -> bytes:
    psk = _read(path, "psk_file", secret=True).strip()
    if len(psk) < 16:
        raise CredentialError("the pre-shared key must be at least 16 bytes")
    return psk


def read_pubkey(cert_file: str, key_file: str, ca_file: str) -> Pubkey:
    cert = _read(cert_file, "cert_file", secret=False)
    key = _read(key_file, "key_file", secret=True)
    ca = _read(ca_file, "ca_file", secret=False)
    for data, what, path in ((cert, "cert_file", cert_file), (ca, "ca_file", ca_file)):
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise CredentialError(f"{what} {path}: not a PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise CredentialError(f"key_file {key_file}: not a PEM private key")
    return Pubkey(cert, key, ca)
