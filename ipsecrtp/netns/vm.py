"""The real-kernel tier: Debian's stock kernel under qemu (TCG), this machine's root shared into the
guest read-only by virtme-ng, the project checkout writable, the command's exit status reported back.

This host's kernel has XFRM but no ESP; the guest's has ESP (modules), so the same lab code there
detects the kernel-netlink backend: charon installs per-call xfrm states and policies in the kernel.

    python -m ipsecrtp.netns.vm --fetch          # download and unpack the kernel (cached)
    python -m ipsecrtp.netns.vm -- CMD ...       # run CMD in the guest, from the checkout
"""

from __future__ import annotations

import compileall
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

# not under /var: virtme-ng gives the guest a /var of its own, where the modules would be invisible
CACHE = os.environ.get("IPSECRTP_KERNEL_CACHE", "/opt/ipsecrtp/kernel")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = "IPSECRTP-VM-EXIT="
# loaded before the command: Debian builds these as modules (sha512_generic before drbg, NOTES)
MODULES = ("sha512_generic", "xfrm_user", "esp4", "esp6", "xfrm4_tunnel", "xfrm6_tunnel", "tunnel4", "tunnel6",
           "authenc", "gcm", "veth", "nf_tables", "nft_nat", "nft_ct", "nft_chain_nat", "nft_masq",
           "nf_conntrack_sip", "nf_nat_sip")


class VmError(RuntimeError):
    pass


def _kernel_package() -> str:
    """The unsigned image of the kernel Debian's linux-image-amd64 points at."""
    r = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    m = re.search(r"Depends: (linux-image-[\w.\-]+-amd64)\b", r.stdout)
    if not m:
        raise VmError("cannot tell which kernel linux-image-amd64 depends on (apt-cache depends)")
    return m.group(1) + "-unsigned"


def kernel(fetch: bool = True) -> str:
    """Path of a cached vmlinuz with its modules beside it (lib/modules), fetching it if allowed."""
    found = sorted(glob.glob(os.path.join(CACHE, "*", "boot", "vmlinuz-*")))
    if found:
        return found[-1]
    if not fetch:
        raise VmError(f"no kernel cached in {CACHE}: run python -m ipsecrtp.netns.vm --fetch")
    pkg = _kernel_package()
    dest = os.path.join(CACHE, pkg)
    os.makedirs(CACHE, exist_ok=True)
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
    debs = glob.glob(os.path.join(tmp, "*.deb"))
    if r.returncode != 0 or not debs:
        raise VmError(f"apt-get download {pkg} failed: {(r.stderr or r.stdout).strip()[-200:]}")
    subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(tmp, "root")], check=True)
    os.remove(debs[0])
    os.replace(os.path.join(tmp, "root"), dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return sorted(glob.glob(os.path.join(dest, "boot", "vmlinuz-*")))[-1]


def precompile() -> None:
    """Bytecode for the checkout's package, written here before the guest boots. A guest compiles
    every stale module itself under TCG (slow); a host that sets PYTHONDONTWRITEBYTECODE (this
    machine's environment does) never leaves any .pyc behind for it. Unchanged modules cost one stat each."""
    compileall.compile_dir(os.path.join(REPO, "ipsecrtp"), quiet=2)


@dataclass(frozen=True)
class VmResult:
    exit_code: int | None  # None: no exit marker came back (time-out or the guest died)
    output: str
    seconds: float
    boot_seconds: float | None  # until the guest ran the command


def run(command: str, timeout: float = 900.0, memory: str = "2G", cpus: int = 2,
        started: Callable[[int], None] | None = None) -> VmResult:
    """Run ``command`` (a shell line, in the checkout) in the guest; always ends within ``timeout``.
    ``started`` gets the process group of vng and its qemu, for a caller that may have to kill it."""
    vng = shutil.which("vng") or os.path.join(os.path.dirname(sys.executable), "vng")
    if not os.path.exists(vng):
        raise VmError("virtme-ng (vng) not found: install the test extras (pip install -e '.[test]')")
    if shutil.which("qemu-system-x86_64") is None:
        raise VmError("qemu-system-x86_64 not found: run scripts/setup.sh")
    image = kernel()
    precompile()
    # labs write their state under /tmp in the guest: its /var is the host's, read-only
    script = (f"modprobe -a {' '.join(MODULES)} >/dev/null 2>&1; echo IPSECRTP-VM-START; cd {REPO} && "
              f"export IPSECRTP_LAB_DIR=/tmp/irtp-labs && {command}; echo {MARK}$?")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ.get("PATH", ""))
    argv = [vng, "--run", image, "--disable-kvm", "--memory", memory, "--cpus", str(cpus), "--rwdir", REPO,
            "--exec", script]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True, stdin=subprocess.DEVNULL)
    if started is not None:
        started(p.pid)  # its own session: the group id is its pid
    lines: list[str] = []
    boot = None
    try:
        assert p.stdout is not None
        deadline = t0 + timeout
        for line in p.stdout:
            lines.append(line)
            if boot is None and "IPSECRTP-VM-START" in line:
                boot = time.monotonic() - t0
            if time.monotonic() > deadline:
                break
    finally:
        if p.poll() is None or time.monotonic() > t0 + timeout:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # vng and the qemu it started: the whole session
            except ProcessLookupError:
                pass
        p.wait()
    out = "".join(lines)
    m = re.search(re.escape(MARK) + r"(\d+)", out)
    return VmResult(int(m.group(1)) if m else None, out, time.monotonic() - t0, boot)


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--fetch"]:
        print(kernel())
        return 0
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__)
        return 2
    res = run(" ".join(args))
    sys.stdout.write(res.output)
    print(f"guest: exit {res.exit_code}, {res.seconds:.1f} s (command started after {res.boot_seconds} s)")
    return 0 if res.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
