"""A per-lab certificate authority for SIP over TLS between the lab's proxies (openssl).

One CA per lab, made when the lab comes up and removed with its directory: a P-256 key and a
self-signed CA certificate valid two days, and for each proxy a key and a certificate naming its
address (subjectAltName IP, for server and client use: the proxies verify each other's). Keys are
written 0600 and never logged.
"""

from __future__ import annotations

import os

from . import proc

DAYS = "2"


def _key_args(key: str) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key]


def make(directory: str, hosts: dict[str, str]) -> dict[str, dict[str, str]]:
    """The CA and one certificate per ``hosts`` entry (name -> IP address), under ``directory``;
    name -> {"key", "cert", "ca"} paths."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    old = os.umask(0o077)  # the keys are readable by root only from the moment they exist
    try:
        ca_key, ca_crt = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
        proc.run(None, "openssl", "req", "-x509", *_key_args(ca_key), "-out", ca_crt, "-days", DAYS,
                 "-subj", "/CN=ipsecrtp lab CA")
        out = {}
        for serial, (name, addr) in enumerate(sorted(hosts.items()), start=1):
            key, csr, crt = (os.path.join(directory, f"{name}.{x}") for x in ("key", "csr", "crt"))
            ext = os.path.join(directory, f"{name}.ext")
            with open(ext, "w") as f:
                f.write(f"subjectAltName = IP:{addr}\nextendedKeyUsage = serverAuth, clientAuth\n"
                        "basicConstraints = CA:FALSE\n")
            proc.run(None, "openssl", "req", *_key_args(key), "-out", csr, "-subj", f"/CN={name}")
            proc.run(None, "openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
                     "-set_serial", str(serial), "-days", DAYS, "-extfile", ext, "-out", crt)
            out[name] = {"key": key, "cert": crt, "ca": ca_crt}
        return out
    finally:
        os.umask(old)
