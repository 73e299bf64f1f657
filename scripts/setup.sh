#!/usr/bin/env bash
# Installs what ipsecrtp and its lab need on Debian 12 (root): strongSwan's charon with both
# kernel backends, baresip, sipp, tshark/tcpdump, and a venv with the package and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# every package of ipsecrtp/programs.py (tests/test_programs.py checks it); `ipsecrtp doctor` below
# checks that what they install is there
PKGS=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins
      libstrongswan-standard-plugins strongswan-pki baresip-core sip-tester kamailio kamailio-tls-modules openssl
      tshark wireshark-common tcpdump
      iproute2 iputils-ping nftables procps
      qemu-system-x86 kmod busybox-static file  # the real-kernel tier: virtme-ng needs a static busybox, `file`
      mount dash dpkg apt                        # essential on Debian: listed because the lab runs them
      python3 python3-venv python3-pip python3-nftables)

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages; the lab needs network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # no package may start its daemon (kamailio, ...) in the host namespace: the labs start their own
  guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get -o DPkg::Lock::Timeout=120 update -qq
  apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$guard" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# the lab starts its own kamailio per namespace; the packaged system service is not wanted
if [ -d /run/systemd/system ] && systemctl is-enabled -q kamailio 2>/dev/null; then
  systemctl disable --now -q kamailio || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# compat: the checkout as a plain path in a .pth. The default editable mode installs an import hook whose
# own imports (pathlib, re, ...) every Python process pays at start: 0.15 s here, ~7 s in the real-kernel
# tier's TCG guest, where each lab starts several Python processes
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
# Debian's libnftables binding (python3-nftables, the netfilter project's own; not on PyPI) for the
# data plane: only that package is made visible to the venv, not the rest of Debian's Python
mkdir -p .venv/debian-nftables
ln -sfn /usr/lib/python3/dist-packages/nftables .venv/debian-nftables/nftables
echo "$PWD/.venv/debian-nftables" > "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/debian-nftables.pth"
# the real-kernel tier's kernel (Debian's stock image, unpacked once into /opt/ipsecrtp/kernel)
.venv/bin/python -m ipsecrtp.netns.vm --fetch >/dev/null
# everything above really there (programs, charon plugins, kernel features): fails setup if not
.venv/bin/ipsecrtp doctor --quiet
echo "setup done: $(.venv/bin/ipsecrtp --help | head -n 1)"
