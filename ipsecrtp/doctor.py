"""``ipsecrtp doctor``: is everything ipsecrtp needs on this machine, and what installs what is not.

Every check says what it looks at, what it found, what fixes it (the Debian package, or the
setting) and whether it is required. Without a configuration the machine is checked as a lab and
test machine (what ``scripts/setup.sh`` installs: every program in ``ipsecrtp/programs.py``); with
``--config`` as a gateway running that controller configuration, where only the gateway's
programs are required and the VICI socket, the interfaces and the PSK files are checked too.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tomllib
from dataclasses import asdict, dataclass

from . import programs
from .programs import CHARON, GATEWAY, LAB, PLUGIN_DIR, PLUGINS, PROGRAMS, VM, Program, install_hint


@dataclass(frozen=True)
class Check:
    name: str  # stable identifier: program:sipp, kernel:tun, plugin:vici, psk:gw-b, ...
    ok: bool
    required: bool
    what: str  # what is checked, for a person
    detail: str  # what was found
    fix: str = ""  # the package or setting that fixes it; empty when there is nothing to fix
    package: str | None = None  # the package alone, for scripts

    def to_json(self) -> dict:
        return asdict(self)


def _roles(gateway: bool) -> frozenset[str]:
    return frozenset({GATEWAY}) if gateway else frozenset({GATEWAY, LAB, VM})


# -- programs ----------------------------------------------------------------------------------

# where virtme-ng looks for busybox, in this order (virtme/util.py find_binary, names from
# virtme/mkinitramfs.py find_busybox): PATH first, then these directories
_BUSYBOX_NAMES = ("busybox-static", "busybox.static", "busybox")
_BUSYBOX_DIRS = ("/usr/local/bin", "/usr/local/sbin", "/usr/bin", "/usr/sbin", "/bin", "/sbin")


def elf_is_static(path: str) -> bool | None:
    """True when an ELF executable has no program interpreter (PT_INTERP), which is what `file`
    calls statically linked (static-pie included); None when it is not a readable ELF file."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return None
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            if wide:
                phoff, = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return None
    PT_INTERP = 3
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != PT_INTERP
               for i in range(len(table) // max(phentsize, 1)))


def find_busybox() -> str | None:
    for name in _BUSYBOX_NAMES:
        found = shutil.which(name) or next((os.path.join(d, name) for d in _BUSYBOX_DIRS
                                            if os.path.isfile(os.path.join(d, name))), None)
        if found:
            return found
    return None


def locate(p: Program) -> str | None:
    if p.path:
        return p.path if os.access(p.path, os.X_OK) else None
    if p.in_venv:  # the venv's console scripts sit next to its interpreter, in PATH or not
        here = os.path.join(os.path.dirname(sys.executable), p.name)
        return here if os.access(here, os.X_OK) else shutil.which(p.name)
    return shutil.which(p.name)


def program_check(p: Program, roles: frozenset[str]) -> Check:
    required = bool(p.roles & roles) and not p.optional
    what = f"{p.name}: {p.purpose}"
    fix = install_hint(p.package)
    if p.name == "busybox":
        found = find_busybox()
        if found is None:
            return Check(f"program:{p.name}", False, required, what, "no busybox in PATH or /usr/bin, /bin ...",
                         fix, p.package)
        static = elf_is_static(found)
        return Check(f"program:{p.name}", bool(static), required, what,
                     found + (" (statically linked)" if static else " is not statically linked"),
                     "" if static else fix, p.package)
    found = locate(p)
    where = p.path or ("the venv or PATH" if p.in_venv else "PATH")
    return Check(f"program:{p.name}", found is not None, required, what, found or f"not found in {where}",
                 "" if found else fix, p.package)


# -- charon and its plugins -------------------------------------------------------------------

def charon_checks(roles: frozenset[str], esp: bool | None) -> list[Check]:
    out = []
    if os.access(CHARON, os.X_OK):
        try:
            r = subprocess.run([CHARON, "--version"], capture_output=True, text=True, timeout=15)
            version = (r.stdout or r.stderr).strip().splitlines()[:1]
            ok = r.returncode == 0 and bool(version)
            detail = version[0] if version else f"exit {r.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, detail = False, str(exc)
        out.append(Check("charon:version", ok, True, "charon runs (--version)", detail,
                         "" if ok else install_hint("strongswan-charon"), "strongswan-charon"))
    # the backend this kernel calls for: kernel-netlink with ESP, kernel-libipsec without
    backend = None if esp is None else ("kernel-netlink" if esp else "kernel-libipsec")
    for name, package in PLUGINS.items():
        path = os.path.join(PLUGIN_DIR, f"libstrongswan-{name}.so")
        present = os.path.isfile(path)
        # the lab loads every plugin; a gateway needs the backend its kernel calls for, not the other
        required = LAB in roles or name not in programs.KERNEL_PLUGINS or name == backend
        note = " (the backend this kernel needs)" if name == backend else ""
        out.append(Check(f"plugin:{name}", present, required, f"charon plugin {name}{note}",
                         path if present else f"{path} missing", "" if present else install_hint(package),
                         package))
    return out


def kamailio_checks(roles: frozenset[str]) -> list[Check]:
    """The kamailio modules the proxy labs load (rtpengine's ng client, TLS between the proxies)."""
    dirs = sorted(glob.glob(programs.KAMAILIO_MODULE_GLOB))
    out = []
    for name, package in programs.KAMAILIO_MODULES.items():
        path = next((os.path.join(d, f"{name}.so") for d in dirs if os.path.isfile(os.path.join(d, f"{name}.so"))),
                    None)
        out.append(Check(f"kamailio-module:{name}", path is not None, LAB in roles,
                         f"kamailio module {name} (the ng/TLS proxy labs)",
                         path or f"{name}.so not in {programs.KAMAILIO_MODULE_GLOB}",
                         "" if path else install_hint(package), package))
    return out


# -- kernel -----------------------------------------------------------------------------------

def kernel_checks(roles: frozenset[str]) -> tuple[list[Check], bool | None]:
    """The kernel features, and whether the kernel does ESP (None: could not tell)."""
    from .kernel.features import ESP, NETNS, PROBES, probe

    found = probe()
    esp = None
    if found.get(ESP, (False, ""))[0]:
        esp = found[ESP][1].startswith("yes")
    lab = LAB in roles
    required = {NETNS: True, "veth": lab, "af_packet": True, "xfrm": True, ESP: False,
                "tun": esp is not True, "nftables": True, "port_rules": esp is not True, "realtime": False}
    fixes = {NETNS: "run as root on a kernel with CONFIG_NET_NS",
             "veth": "a kernel with CONFIG_VETH (modprobe veth)",
             "af_packet": "run as root on a kernel with CONFIG_PACKET",
             "xfrm": "a kernel with CONFIG_XFRM_USER (modprobe xfrm_user)",
             ESP: "optional: a kernel with CONFIG_INET_ESP (modprobe esp4) lets charon use kernel-netlink",
             "tun": "a kernel with CONFIG_TUN (modprobe tun): kernel-libipsec needs it without kernel ESP",
             "nftables": "a kernel with CONFIG_NF_TABLES (modprobe nf_tables), and " + install_hint("nftables"),
             "port_rules": "Linux 4.17 or later (fib rules with ip_proto and port ranges)",
             "realtime": "optional: a real-time budget (sysctl kernel.sched_rt_runtime_us, the cgroup's "
                         "cpu.rt_runtime_us); without it wanem runs at nice -20 and the lab's timing tests may "
                         "see late frames"}
    whats = {NETNS: "network namespaces", **{k: v[0] for k, v in PROBES.items()}}
    out = []
    for key, what in whats.items():
        if key not in found:
            out.append(Check(f"kernel:{key}", False, required[key], what, "not probed: no network namespace",
                             fixes[key]))
            continue
        ok, detail = found[key]
        out.append(Check(f"kernel:{key}", ok, required[key], what, detail, "" if ok else fixes[key]))
    return out, esp


def real_kernel_check(roles: frozenset[str]) -> Check:
    from .netns.vm import CACHE, VmError, kernel

    try:
        path, ok = kernel(fetch=False), True
    except VmError:
        path, ok = f"no kernel in {CACHE}", False
    return Check("vm:kernel", ok, VM in roles, "Debian's kernel for the real-kernel tier", path,
                 "" if ok else "python -m ipsecrtp.netns.vm --fetch (scripts/setup.sh does it)")


# -- Python packages --------------------------------------------------------------------------

def python_checks(roles: frozenset[str]) -> list[Check]:
    """Each package the installed ipsecrtp declares (pyproject's dependencies; the test extras on a
    lab and test machine) is installed in this interpreter's environment: pip resolved them once,
    but a venv can lose one (a pip uninstall, a Python upgrade) and the import would only fail when
    the feature is first used (the metrics exporter, say)."""
    from importlib import metadata

    fix = "pip install -e '.[test]' in the checkout (scripts/setup.sh does it)"
    try:
        requires = metadata.requires("ipsecrtp") or []
    except metadata.PackageNotFoundError:
        return [Check("python:ipsecrtp", False, True, "ipsecrtp installed in this Python", "not installed", fix)]
    out = []
    for req in requires:
        name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
        extra = "extra ==" in req
        try:
            ok, detail = True, f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            ok, detail = False, f"{name} not installed"
        required = not extra or LAB in roles
        out.append(Check(f"python:{name}", ok, required, f"Python package {req.split(';')[0].strip()}"
                         + (" (tests)" if extra else ""), detail, "" if ok else fix))
    out.append(nftables_binding_check())
    return out


def nftables_binding_check() -> Check:
    """The data plane (kernel-libipsec) uses the netfilter project's own libnftables binding, which
    is Debian's python3-nftables, not a PyPI package: setup.sh makes it visible to the venv."""
    fix = "apt-get install python3-nftables, then scripts/setup.sh (links it into the venv)"
    try:
        import nftables

        rc, _out, err = nftables.Nftables().cmd("list tables")
    except (ImportError, OSError) as exc:
        return Check("python:nftables", False, True, "libnftables binding (data plane)", str(exc), fix)
    return Check("python:nftables", rc == 0, True, "libnftables binding (data plane)",
                 "loaded" if rc == 0 else err.strip(), "" if rc == 0 else fix)


# -- a gateway's configuration ----------------------------------------------------------------

def config_checks(path: str, esp: bool | None) -> list[Check]:
    from .config import ConfigError, load

    out = []
    try:
        cfg, err = load(path), ""
    except ConfigError as exc:
        cfg, err = None, str(exc)
    out.append(Check("config", cfg is not None, True, f"controller configuration {path}",
                     "parses" if cfg else err, "" if cfg else "correct the file (README: running the controller)"))
    # read again without validation, so that each PSK and interface gets its own line even when
    # the first error above stopped the full load
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return out
    c = raw.get("controller", {})
    for name in [*c.get("interfaces", []), *c.get("media_interfaces", [])]:
        try:
            socket.if_nametoindex(str(name))
            ok, detail = True, "present"
        except OSError:
            ok, detail = False, "no such interface in this network namespace"
        out.append(Check(f"interface:{name}", ok, True, f"capture interface {name}", detail,
                         "" if ok else "controller.interfaces must name this machine's interfaces"))
    for peer in raw.get("peer", []):
        name, pubkey = str(peer.get("name", "?")), peer.get("auth") == "pubkey"
        if pubkey:
            out.append(_pubkey_check(name, peer))
        if not pubkey or peer.get("psk_file"):  # with certificates a PSK is optional (pre-keyed needs one)
            out.append(_psk_check(name, str(peer.get("psk_file", ""))))
        out.append(keys_check(peer))
    if not c.get("dry_run", False) and "vici" in c:
        out.extend(_vici_checks(str(c["vici"]), esp, str(c.get("budget", "e721-toll"))))
    return out


def keys_check(peer: dict) -> Check:
    """When this peer's keys are safe given how its SIP crosses the WAN (README "Keys in SDP")."""
    from .config import STRATEGIES

    name = str(peer.get("name", "?"))
    strategy = STRATEGIES.get(str(peer.get("strategy", "child-per-call")), str(peer.get("strategy", "")))
    signalling, override = peer.get("signalling", "clear"), peer.get("allow_keys_over_clear_signalling") is True
    srtp = f"; SRTP calls: {peer.get('srtp', 'protect')}"
    what = f"keys of peer {name} against its signalling"
    if strategy != "pre-keyed":
        return Check(f"keys:{name}", True, True, what, f"{strategy}: fresh keys from IKEv2 (Diffie-Hellman), safe "
                     f"whatever the SIP ({signalling}){srtp}")
    if signalling == "protected":
        return Check(f"keys:{name}", True, True, what, f"pre-keyed with signalling = \"protected\" (TLS or a trusted "
                     f"private link): safe while the per-peer secret is{srtp}")
    detail = (f"pre-keyed over SIP seen in clear: every call's keys come from the per-peer secret and a dialog "
              f"anyone on the path reads and can inject{srtp}")
    return Check(f"keys:{name}", False, not override, what, detail + (" (allowed by override)" if override else ""),
                 "protect the signalling (TLS, a private link) and set signalling = \"protected\", or use "
                 "child-per-call")


def _pubkey_check(name: str, peer: dict) -> Check:
    """Certificate, private key (owner-only) and the CA the peer's certificate must chain to."""
    from .credentials import CredentialError, read_pubkey

    what = f"certificate, key and CA files of peer {name}"
    files = [str(peer.get(k, "")) for k in ("cert_file", "key_file", "ca_file")]
    try:
        read_pubkey(*files)
    except CredentialError as exc:
        return Check(f"pubkey:{name}", False, True, what, str(exc),
                     "cert_file and ca_file: PEM certificates; key_file: a PEM private key, chmod 600")
    return Check(f"pubkey:{name}", True, True, what, ", ".join(files))


def _psk_check(peer: str, psk: str) -> Check:
    what = f"PSK file of peer {peer}"
    try:
        st = os.stat(psk)
        with open(psk, "rb") as f:
            size = len(f.read().strip())
    except OSError as exc:
        return Check(f"psk:{peer}", False, True, what, f"{psk}: {exc.strerror}", "psk_file must name a readable file")
    if st.st_mode & 0o077:
        return Check(f"psk:{peer}", False, True, what, f"{psk} mode {st.st_mode & 0o777:04o}", f"chmod 600 {psk}")
    if size < 16:
        return Check(f"psk:{peer}", False, True, what, f"{psk}: {size} bytes", "at least 16 bytes of secret")
    return Check(f"psk:{peer}", True, True, what, f"{psk} mode {st.st_mode & 0o777:04o}, {size} bytes")


def _vici_checks(url: str, esp: bool | None, budget: str = "e721-toll") -> list[Check]:
    from .keying.charonconf import timers_verdict
    from .keying.strongswan import Charon, KeyingError
    from .timing import BUDGETS

    try:
        charon = Charon(url)
    except KeyingError as exc:
        return [Check("vici", False, True, f"charon's VICI socket {url}", str(exc),
                      "start charon with the vici plugin, socket as controller.vici says")]
    try:
        version, plugins = charon.version(), charon.plugins()
        # a warning, never a failure: charon works with any timers, a lost IKE packet just costs more
        fits, detail = (timers_verdict(charon.sock.sock, str(version.get("daemon") or "charon"), budget)
                        if budget in BUDGETS else (None, f"unknown budget {budget}"))
    except KeyingError as exc:  # a hung charon: CharonTimeout, one line
        return [Check("vici", False, True, f"charon's VICI socket {url}", str(exc), "charon does not answer: "
                      "is it stopped (SIGSTOP) or deadlocked?")]
    finally:
        charon.close()
    timers = Check("charon:timers", fits is True, False, f"charon's IKE retransmission timers fit budget {budget}",
                   detail, "" if fits else "set retransmit_* in strongswan.conf's charon section (README: IKE loss), "
                   "then restart charon")
    out = [Check("vici", True, True, f"charon's VICI socket {url}",
                 f"{version.get('daemon', 'charon')} {version.get('version', '?')}")]
    backend = "kernel-libipsec" if "kernel-libipsec" in plugins else (
        "kernel-netlink" if "kernel-netlink" in plugins else None)
    ok = backend is not None and not (backend == "kernel-netlink" and esp is False)
    detail = f"loaded: {' '.join(plugins)}"
    fix = ("" if ok else "load kernel-libipsec (this kernel has no ESP)" if backend else
           "load kernel-netlink or kernel-libipsec in strongswan.conf")
    out.append(Check("charon:plugins", ok, True, "charon's loaded plugins fit this kernel", detail, fix))
    out.append(timers)
    return out


# -- all --------------------------------------------------------------------------------------

def run_checks(config: str | None = None) -> list[Check]:
    roles = _roles(gateway=config is not None)
    out = [Check("root", os.geteuid() == 0, True, "running as root (namespaces, AF_PACKET, xfrm)",
                 f"uid {os.geteuid()}", "" if os.geteuid() == 0 else "run as root")]
    out.extend(program_check(p, roles) for p in PROGRAMS)
    out.extend(python_checks(roles))
    kernel, esp = kernel_checks(roles)
    out.extend(charon_checks(roles, esp))
    out.extend(kamailio_checks(roles))
    out.extend(kernel)
    out.append(real_kernel_check(roles))
    if config is not None:
        out.extend(config_checks(config, esp))
    return out


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.required and not c.ok]


def format_line(c: Check) -> str:
    mark = "ok" if c.ok else ("FAIL" if c.required else "warn")
    line = f"{mark:<4}  {c.name:<28} {c.detail}"
    return line + (f"  -> {c.fix}" if c.fix else "")
