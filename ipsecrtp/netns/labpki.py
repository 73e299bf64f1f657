"""A per-lab certificate authority for IKE (``lab up --auth pubkey``), made with strongSwan's ``pki``.

One CA per lab, made when the lab comes up and removed with its directory: an ECDSA P-256 key and
a self-signed CA certificate valid two days; for each gateway a key and a certificate whose
subjectAltName is its WAN address, its IKE identity. Tests issue more from the same CA: a third
gateway's (valid, another identity) and an expired one. Keys are written 0600 and never logged.
"""

from __future__ import annotations

import datetime
import os

from . import proc
from .labstate import LabState

LIFETIME_DAYS = "2"


def _pki(out: str, *args: str) -> str:
    """Run ``pki`` and write its PEM output to ``out`` (created 0600: a key is secret from the start)."""
    pem = proc.run(None, "pki", *args, "--outform", "pem").stdout
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pem)
    return out


def _dir(lab: LabState) -> str:
    d = os.path.join(lab.dir, "pki")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def make_ca(lab: LabState) -> dict[str, str]:
    d = _dir(lab)
    key = _pki(os.path.join(d, "ca.key"), "--gen", "--type", "ecdsa", "--size", "256")
    crt = _pki(os.path.join(d, "ca.crt"), "--self", "--ca", "--in", key, "--type", "ecdsa",
               "--lifetime", LIFETIME_DAYS, "--dn", "CN=ipsecrtp lab CA")
    return {"key": key, "cert": crt}


def issue(lab: LabState, name: str, address: str, expired: bool = False) -> dict[str, str]:
    """A key and a certificate for ``address`` (subjectAltName, the IKE identity) from the lab's CA;
    ``expired``: valid for one hour two days ago. {"key", "cert", "ca"} paths."""
    d = _dir(lab)
    ca = lab.state["pki"]["ca"]
    key = _pki(os.path.join(d, f"{name}.key"), "--gen", "--type", "ecdsa", "--size", "256")
    validity = ["--lifetime", LIFETIME_DAYS]
    if expired:
        start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
        fmt = "%Y-%m-%d %H:%M:%S"
        validity = ["--dateform", fmt, "--not-before", start.strftime(fmt),
                    "--not-after", (start + datetime.timedelta(hours=1)).strftime(fmt)]
    crt = _pki(os.path.join(d, f"{name}.crt"), "--issue", "--in", key, "--type", "priv", "--cacert", ca["cert"],
               "--cakey", ca["key"], "--dn", f"CN={name}", "--san", address, *validity)
    return {"key": key, "cert": crt, "ca": ca["cert"]}


def make(lab: LabState) -> None:
    """The CA and each gateway's credentials, recorded in the lab's state (``pki``)."""
    lab.state["pki"] = {"ca": make_ca(lab)}
    for gw in lab.topology[:2]:
        lab.state["pki"][gw.role] = issue(lab, gw.role, gw.addr)
    lab.save()
