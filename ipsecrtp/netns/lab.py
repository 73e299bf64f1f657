"""The network-namespace lab: gateways with their own charon and controller, joined by a WAN.

``Lab`` is the facade; each part of the lab is a module of its own: ``labstate`` (names, the
state file, ``status`` and ``down``), ``labnet`` (the gateways' namespaces and WAN link),
``labnat`` (NAT routers and the phones' LANs) and ``labdaemons`` (charon and the controllers).
"""

from __future__ import annotations

import os
import signal
import time

from ..kernel.xfrm import probe_esp
from . import labdaemons, labnet, labpki, proc
from .labnat import build_lans
from .labstate import IPV6_TOPOLOGY, NAT_TOPOLOGY, RTP_PORTS, LabError, LabState, check_rtp_ports
from .wanem import LinkSettings


def check_options(rtp_ports: tuple[int, int], mode: str, nat: str | None, wan: LinkSettings | None,
                  ipv6: bool = False) -> None:
    """What ``Lab.up`` can build: checked before anything is created."""
    check_rtp_ports(rtp_ports)
    if ipv6 and (mode != "host" or nat is not None or wan is not None):
        raise LabError("--ipv6 builds the default topology only (host mode, a direct WAN) for now")
    if mode not in ("host", "router"):
        raise LabError(f"unknown mode {mode!r} (host or router)")
    if nat not in (None, "between", "phone"):
        raise LabError(f"unknown NAT topology {nat!r} (known: between, phone)")
    if mode == "router" and (nat == "between" or wan):
        raise LabError("router mode does not combine with the NAT-between-gateways or WAN-emulation topologies yet")
    if nat == "phone" and mode != "router":
        raise LabError("a NAT in front of a phone needs router mode (--mode router): in host mode the "
                       "gateway is the phone")
    if nat is not None and wan is not None:
        raise LabError("the NAT topology and the emulated WAN do not combine yet")


class Lab(LabState):
    """Two gateways: ``up`` builds them, ``down`` (``LabState``) removes whatever was built."""

    def up(self, media_timeout: float = 30.0, wan: LinkSettings | None = None,
           strategy: str = "child-per-call", charon_extra: str = "", keying: bool = True,
           controllers: bool = True, nat: str | None = None, sip_alg: bool = False,
           nat_translate: bool = True, mode: str = "host", nat_random_ports: bool = False,
           rtp_ports: tuple[int, int] = RTP_PORTS, esp_proposals: tuple[str, ...] | None = None,
           protect: str | None = None, ike_pool: int = 1, legs: str = "per-leg", esp_mode: str = "tunnel",
           auth: str = "psk", ipv6: bool = False) -> None:
        """Build the lab. ``wan``: route the WAN through the user-space link emulator
        (delay, jitter, loss, rate); ``strategy``: the controllers' keying strategy;
        ``charon_extra``: lines added to each charon's strongswan.conf (e.g. retransmit timers);
        ``esp_proposals``: the peers' ESP proposals in charon's syntax (e.g. ``("aes256gcm16",)``),
        None for the controllers' default;
        ``keying=False``: no charon; the controllers only observe (a baseline for what keying costs);
        ``nat="between"``: a NAT router (nftables masquerade) between the gateways, with the kernel's
        SIP ALG (nf_conntrack_sip / nf_nat_sip) when ``sip_alg``; ``nat="phone"`` (router mode): a NAT
        (a customer router) between gwa's phone and gwa. ``mode="router"``: phones behind the
        gateways; keyed only with kernel ESP, observe-only (``keying=False``) on any kernel.
        ``nat_random_ports``: the NAT picks random source ports (``masquerade random``), as some
        carrier NATs do, instead of keeping the phone's. ``rtp_ports``: the media port range (both
        ends inclusive) the controllers key and the user agents use; a load run needs thousands.
        ``legs="shared"``: the calls between the gateways share one CHILD_SA (issue 17 item 3);
        ``esp_mode="transport"``: ESP transport mode (host mode, kernel ESP only);
        ``auth="pubkey"``: the gateways authenticate with certificates from a per-lab CA (``labpki``).
        ``ipv6``: the WAN, IKE, SIP, SDP and media over IPv6 (2001:db8::/32).
        ``controllers=False``: charons only; ``start_controllers()`` can start them later."""
        check_options(rtp_ports, mode, nat, wan, ipv6)
        if nat == "between":
            self.topology = NAT_TOPOLOGY
        elif ipv6:
            self.topology = IPV6_TOPOLOGY
        # protect: None = the controllers' default (required), with either backend
        self.state.update(mode=mode, nat={"topology": nat, "sip_alg": sip_alg} if nat else None,
                          nat_translate=nat_translate, strategy=strategy, charon_extra=charon_extra,
                          esp_proposals=list(esp_proposals) if esp_proposals else None, protect=protect,
                          ike_pool=ike_pool, legs=legs, esp_mode=esp_mode, auth=auth, rtp_ports=list(rtp_ports),
                          media_timeout=media_timeout, ipv6=ipv6)
        self._create()
        labnet.build(self, nat, sip_alg, wan)
        a, b = self.topology[0], self.topology[1]
        probe = proc.in_netns(self.ns(a.role), probe_esp)
        backend = "kernel-netlink" if probe.supported else "kernel-libipsec"
        if mode == "router":
            if not probe.supported and keying:
                raise LabError("router mode needs kernel ESP (charon's kernel-netlink); this kernel has none: "
                               "run it in the real-kernel tier (ipsecrtp lab vm), or observe only (--no-keying)")
            build_lans(self, a, b, phone_nat=nat == "phone", sip_alg=sip_alg, random_ports=nat_random_ports)
        self.state["backend"] = backend if keying else f"none (observe only; {backend} would key here)"
        self.state["esp_probe"] = probe.detail
        self.save()
        labdaemons.write_psk(self)
        if auth == "pubkey" and keying:
            labpki.make(self)
        for gw in self.topology if keying else ():
            labdaemons.start_charon(self, gw, backend)
        self.state["keying"] = keying
        if controllers:
            self.start_controllers()
        self.state["up_at"] = time.time()
        self.save()

    def _create(self) -> None:
        """The lab's directory and first state file, once nothing stands in the way: from here on
        ``down`` removes what is recorded."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veth, charon)")
        if not os.path.exists(labdaemons.CHARON):
            raise LabError(f"{labdaemons.CHARON} not found: install strongswan-charon")
        if os.path.exists(self.state_path):
            raise LabError(f"lab {self.name!r} exists already ({self.state_path}): run 'ipsecrtp lab down'")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.owned = True
        self.save()

    # -- the daemons ------------------------------------------------------------------------

    def start_controllers(self) -> None:
        """One controller per gateway. Separate from ``up`` so that a benchmark can first measure the
        charons alone (``up(controllers=False)``), then add the controllers to the same lab."""
        labdaemons.start_controllers(self)

    def restart_controller(self, role: str, down_s: float = 0.0) -> None:
        """Stop a gateway's controller as a service manager would (SIGTERM: live calls keep their
        SAs), wait ``down_s``, and start it again with the same configuration."""
        labdaemons.restart_controller(self, role, down_s)

    def kill_charon(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Stop a gateway's charon the hard way (a crash: it cannot clean up), exactly that process."""
        labdaemons.kill_charon(self, role, sig)

    def start_charon(self, role: str) -> None:
        """(Re)start a gateway's charon, as after a crash: a new process, knowing no peer."""
        labdaemons.restart_charon(self, role)

    def start_uas(self) -> None:
        """One baresip per gateway (host mode: the gateway is the media endpoint)."""
        from .baresip import account, write_config

        for gw in self.topology:
            d = os.path.join(self.gw_dir(gw.role), "baresip")
            addr = self.ua_addr(gw.role)
            accounts = [account(gw.user, addr, "auto"), account("ring-" + gw.user, addr, "manual")]
            write_config(d, addr, accounts, self.rtp_ports)
            ns = self.ua_ns(gw.role)
            pid, st = proc.spawn(ns, ["baresip", "-f", d], os.path.join(d, "baresip.out"))
            self.track(gw.role, "baresip", pid, st, ns)

    # -- the emulated WAN -------------------------------------------------------------------

    def set_wan(self, settings: LinkSettings) -> None:
        """Change the emulated link in place (the emulator re-reads its file on SIGHUP)."""
        labnet.set_wan(self, settings)
