"""Every external program ipsecrtp, its lab and its tests run, with the package that installs it.

One registry for ``ipsecrtp doctor`` and for ``tests/test_programs.py``, which scans the source for
every program passed to subprocess or to the lab's wrappers (``netns/proc.py``) and fails when one
is missing here, or when a package named here is not installed by ``scripts/setup.sh``. A program
that is only run by a dependency (virtme-ng runs qemu, ``file`` and busybox) names it in ``via``:
the scan cannot see it, so the registry is the only place it is written down.

Roles say who needs a program: ``gateway`` (a production gateway running ``ipsecrtp run``),
``lab`` (the namespace lab and the test suite), ``vm`` (the real-kernel tier under qemu).
"""

from __future__ import annotations

from dataclasses import dataclass

GATEWAY, LAB, VM = "gateway", "lab", "vm"
ROLES = (GATEWAY, LAB, VM)
# Debian packages are named as they are; anything else is "pip:NAME" (installed into the venv by
# setup.sh from pyproject's extras)
PIP = "pip:"


@dataclass(frozen=True)
class Program:
    name: str  # argv[0] as the code passes it (looked up in PATH), or the basename of ``path``
    package: str  # the Debian package that installs it, or pip:NAME
    purpose: str
    roles: frozenset[str]
    path: str | None = None  # the absolute path the code runs instead of a PATH lookup
    via: str | None = None  # run by a dependency, not by ipsecrtp's own code (the source scan cannot see it)
    in_venv: bool = False  # a console script of the venv (next to sys.executable), not of the system
    aliases: tuple[str, ...] = ()  # other names the same program is looked for under
    # a tool some option uses when it is there (a profiler, ...): reported, never required, and
    # setup.sh need not install it
    optional: bool = False


def _p(name: str, package: str, purpose: str, *roles: str, **kw) -> Program:
    return Program(name, package, purpose, frozenset(roles), **kw)


CHARON = "/usr/lib/ipsec/charon"

PROGRAMS: tuple[Program, ...] = (
    _p("charon", "strongswan-charon", "IKEv2 daemon that keys each call (the lab starts one per gateway)",
       GATEWAY, LAB, path=CHARON),
    _p("nft", "nftables", "per-call DNAT behind a SIP ALG; the lab's NAT routers", GATEWAY, LAB),
    _p("python3", "python3", "the lab's controllers and WAN emulator (sys.executable)", LAB, in_venv=True),
    _p("ip", "iproute2", "network namespaces, veth links, addresses, routes, rules", LAB),
    _p("ss", "iproute2", "waits until the SIP lab's kamailio listens", LAB),
    _p("sysctl", "procps", "rp_filter, forwarding and IPv6 in the lab's namespaces", LAB),
    _p("pgrep", "procps", "the lab life-cycle test looks for processes left behind", LAB),
    _p("sh", "dash", "starts each lab charon behind a private /run", LAB),
    _p("mount", "mount", "a private tmpfs /run for each lab charon", LAB),
    _p("ping", "iputils-ping", "measures the emulated WAN's RTT", LAB),
    _p("tcpdump", "tcpdump", "captures the WAN: the independent view the lab tests check", LAB),
    _p("dumpcap", "wireshark-common", "captures the SIP lab as pcapng", LAB),
    _p("tshark", "tshark", "dissects the captures (SDP, IKE, ESP) in the lab tests", LAB),
    _p("systemd-analyze", "systemd", "checks the packaged unit file (ipsecrtp@.service) offline", LAB,
       optional=True),
    _p("kamailio", "kamailio", "SIP proxy and registrar of the SIP lab; the proxies driving ipsecrtp over ng", LAB),
    _p("openssl", "openssl", "the TLS lab's per-lab CA and its proxies' certificates", LAB),
    _p("pki", "strongswan-pki", "the IKE lab's per-lab CA and the gateways' certificates (lab up --auth pubkey)", LAB),
    _p("py-spy", PIP + "py-spy", "profiles the controllers during `bench load --profile`", LAB, in_venv=True),
    _p("sipp", "sip-tester", "scripted SIP user agent of the SIP lab", LAB),
    _p("baresip", "baresip-core", "real SIP phones placing the lab's calls", LAB),
    _p("apt-cache", "apt", "finds the Debian kernel for the real-kernel tier", VM),
    _p("apt-get", "apt", "downloads the Debian kernel for the real-kernel tier", VM),
    _p("dpkg-deb", "dpkg", "unpacks the Debian kernel into /opt/ipsecrtp/kernel", VM),
    _p("vng", PIP + "virtme-ng", "boots the real-kernel tier's guest on this machine's root", VM, in_venv=True),
    _p("qemu-system-x86_64", "qemu-system-x86", "the real-kernel tier's machine (TCG)", VM),
    _p("busybox", "busybox-static", "the guest's initramfs (virtme-ng needs a statically linked busybox)", VM,
       via="virtme-ng", aliases=("busybox-static", "busybox.static")),
    _p("file", "file", "virtme-ng checks with `file -L` that busybox is statically linked", VM, via="virtme-ng"),
    _p("depmod", "kmod", "virtme-ng indexes the fetched kernel's modules", VM, via="virtme-ng"),
    _p("modprobe", "kmod", "loads ESP, xfrm and nftables modules in the guest", VM,
       via="the guest's shell line in ipsecrtp/netns/vm.py"),
)

# charon plugins the lab loads (ipsecrtp/netns/labdaemons.py's STRONGSWAN_CONF) and the package of each;
# on a gateway charon loads what its own strongswan.conf says, these are what ipsecrtp relies on
PLUGINS: dict[str, str] = {
    "random": "libstrongswan", "nonce": "libstrongswan", "aes": "libstrongswan", "sha1": "libstrongswan",
    "sha2": "libstrongswan", "hmac": "libstrongswan", "kdf": "libstrongswan", "x509": "libstrongswan",
    "pubkey": "libstrongswan", "pkcs1": "libstrongswan", "pem": "libstrongswan",
    "kernel-netlink": "libstrongswan",
    "gcm": "libstrongswan-standard-plugins", "openssl": "libstrongswan-standard-plugins",
    "curve25519": "libstrongswan-extra-plugins",
    "kernel-libipsec": "libcharon-extra-plugins",
    "socket-default": "strongswan-libcharon",
    "vici": "strongswan-swanctl",
}
PLUGIN_DIR = "/usr/lib/ipsec/plugins"
# one of the two kernel backends must be there; the other is optional (README: kernel backends)
KERNEL_PLUGINS = ("kernel-netlink", "kernel-libipsec")
# the plugins a gateway's charon must have loaded for the controller (seen over VICI)
GATEWAY_PLUGINS = ("vici", "socket-default")

# kamailio modules the proxy labs load (ipsecrtp/netns/proxylab.py) and the package of each
KAMAILIO_MODULES: dict[str, str] = {"rtpengine": "kamailio", "tls": "kamailio-tls-modules"}
KAMAILIO_MODULE_GLOB = "/usr/lib/*/kamailio/modules"

BY_NAME: dict[str, Program] = {n: p for p in PROGRAMS for n in (p.name, *p.aliases)}


def lookup(argv0: str) -> Program | None:
    """The registry entry of a program as the code names it: a PATH name, or an absolute path."""
    if "/" in argv0:
        return next((p for p in PROGRAMS if p.path == argv0), None)
    return BY_NAME.get(argv0)


def install_hint(package: str) -> str:
    if package.startswith(PIP):
        return f"./scripts/setup.sh (pip installs {package[len(PIP):]} into .venv)"
    return f"apt-get install {package}"
