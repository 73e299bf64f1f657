"""A SIP proxy in front of a gateway's phone that drives ipsecrtp over rtpengine's ng protocol (issue 20).

On top of the default host-mode lab: a real Kamailio (Debian's package, its ``rtpengine`` module
unmodified) in the proxied gateway's namespace, on that gateway's WAN address and port 5070, in
front of the gateway's baresip. Its routing script calls ``rtpengine_offer()`` on an INVITE,
``rtpengine_answer()`` on a reply with SDP and ``rtpengine_delete()`` on BYE, CANCEL and failure,
pointed at the controller's ng endpoint on the namespace's loopback. That controller watches no
SIP port on the wire (``sip_ports`` is a port nothing uses): everything it keys it learns from the
proxy, as when the signalling crosses the WAN in TLS. The other gateway watches SIP as usual.
"""

from __future__ import annotations

import glob
import os
import socket
import sys
import time

import fastbencode

from ..log import read_log
from . import labca, labdaemons, proc
from .lab import Lab
from .labstate import LabError

NG_PORT = 22222
PROXY_PORT = 5070
UNWATCHED_SIP_PORT = 5999  # the proxied gateway's sip_ports: it sees no SIP on the wire

TLS_PORT = 5061
PHONE_PORT_TLS = 5062  # the phones' SIP port in the TLS lab (baresip also takes its port + 1 for TLS)

KAMAILIO_CFG = """\
#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:{addr}:{port}
{tls_listen}
mpath="{mpath}"
{tls_module}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng}")

# ipsecrtp keys the call's media from what rtpengine_offer/answer tell it, and removes the SA on
# rtpengine_delete; the SDP comes back unchanged (media is not relayed)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ rtpengine_delete(); t_relay(); }}
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE")) {{ rtpengine_delete(); }}
            else if (is_method("INVITE|UPDATE") && has_body("application/sdp")) {{
                rtpengine_offer();
                t_on_reply("MEDIA");
            }}
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    t_check_trans();
    if (is_method("INVITE")) {{
        remove_hf("Route");  # the phone's outbound-proxy route: this proxy
        record_route();
        if (has_body("application/sdp")) {{ rtpengine_offer(); }}
        t_on_reply("MEDIA");
        t_on_failure("FAILED");
        if ($si == "{phone}" && $sp == {phone_port}) {{
            $du = "{to_peer}";  # from the phone behind this proxy: to the peer's proxy
        }} else {{
            rewritehostport("{phone}:{phone_port}");  # to the phone behind this proxy
        }}
    }}
    t_relay();
}}

onreply_route[MEDIA] {{
    if (has_body("application/sdp")) {{ rtpengine_answer(); }}
}}

failure_route[FAILED] {{
    rtpengine_delete();
}}
"""


def up(lab: Lab, proxied: str = "gwa", media_timeout: float = 30.0, watch_sip: bool = False) -> None:
    """The default lab, the proxied gateway's controller on ng only (``watch_sip``: on ng and on the
    SIP it captures on the WAN, both), both phones, then Kamailio."""
    lab.up(media_timeout=media_timeout, controllers=False)
    lab.state["proxy"] = {"role": proxied, "port": PROXY_PORT, "ng": f"127.0.0.1:{NG_PORT}"}
    lab.save()
    a, b = lab.topology[0], lab.topology[1]
    started = [spawn_controller(lab, gw, b if gw is a else a, gw.role == proxied, watch_sip) for gw in lab.topology]
    for gw, (pid, st, before) in zip(lab.topology, started, strict=True):
        labdaemons.wait_started(lab, gw, pid, st, before)
    lab.start_uas()
    start_kamailio(lab, proxied)


def up_tls(lab: Lab, media_timeout: float = 30.0, **up_kw) -> None:
    """``lab up --signalling tls``: a Kamailio on each gateway in front of its phone, SIP between the
    two only over TLS (certificates from a per-lab CA), each driving its own gateway's controller
    over ng. Both controllers watch SIP on the WAN as usual: none crosses it in clear."""
    lab.up(media_timeout=media_timeout, controllers=False, **up_kw)
    addrs = {gw.role: lab.ua_addr(gw.role) for gw in lab.topology}
    lab.state["signalling"] = "tls"
    lab.state["proxy"] = {"roles": sorted(addrs), "port": PROXY_PORT, "tls_port": TLS_PORT,
                          "ng": f"127.0.0.1:{NG_PORT}"}
    lab.save()
    certs = labca.make(os.path.join(lab.dir, "ca"), addrs)
    a, b = lab.topology[0], lab.topology[1]
    started = [spawn_controller(lab, gw, b if gw is a else a, True, watch_sip=True) for gw in lab.topology]
    for gw, (pid, st, before) in zip(lab.topology, started, strict=True):
        labdaemons.wait_started(lab, gw, pid, st, before)
    start_phones(lab)
    for gw in lab.topology:
        start_kamailio(lab, gw.role, certs[gw.role], addrs[(b if gw is a else a).role])


def start_phones(lab: Lab) -> None:
    """As ``Lab.start_uas``, each phone sending through its own gateway's proxy (outbound proxy)."""
    from .baresip import account, write_config

    for gw in lab.topology:
        d = os.path.join(lab.gw_dir(gw.role), "baresip")
        addr = lab.ua_addr(gw.role)
        via = f';outbound="sip:{addr}:{PROXY_PORT};transport=udp"'
        accounts = [account(gw.user, addr, "auto") + via, account("ring-" + gw.user, addr, "manual") + via]
        write_config(d, addr, accounts, lab.rtp_ports)
        # off 5060 (and so off 5061, where baresip 1.0 listens for TLS too): the proxy's TLS port
        conf = os.path.join(d, "config")
        text = open(conf).read().replace(f"sip_listen {addr}:5060", f"sip_listen {addr}:{PHONE_PORT_TLS}", 1)
        with open(conf, "w") as f:
            f.write(text)
        ns = lab.ua_ns(gw.role)
        pid, st = proc.spawn(ns, ["baresip", "-f", d], os.path.join(d, "baresip.out"))
        lab.track(gw.role, "baresip", pid, st, ns)


def spawn_controller(lab: Lab, gw, peer, proxied: bool, watch_sip: bool = False) -> tuple[int, int, int]:
    """As ``labdaemons.spawn_controller``; the proxied gateway's configuration gets the ng endpoint
    (on its loopback, only 127.0.0.1 may use it) and, unless ``watch_sip``, watches no SIP port."""
    cfg = labdaemons.write_controller_config(lab, gw, peer)
    if proxied:
        text = open(cfg).read()
        if not watch_sip:
            text = text.replace("sip_ports = [5060]", f"sip_ports = [{UNWATCHED_SIP_PORT}]", 1)
        text = text.replace("\n[[peer]]", f'\nng_listen = "127.0.0.1:{NG_PORT}"\nng_allow = ["127.0.0.1"]\n'
                            "\n[[peer]]", 1)
        with open(cfg, "w") as f:
            f.write(text)
    log = lab.controller_log(gw.role)
    before = sum(e.get("event") == "started" for e in read_log(log))
    pid, st = proc.spawn(lab.ns(gw.role), [sys.executable, "-m", "ipsecrtp", "run", "--config", cfg], log)
    lab.track(gw.role, "controller", pid, st, lab.ns(gw.role))
    return pid, st, before


def kamailio_dir(lab: Lab, role: str) -> str:
    return os.path.join(lab.gw_dir(role), "kamailio")


TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = {key}
certificate = {cert}
ca_list = {ca}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = {key}
certificate = {cert}
ca_list = {ca}
"""


def start_kamailio(lab: Lab, role: str, tls: dict[str, str] | None = None, peer: str | None = None) -> None:
    """Kamailio in ``role``'s namespace; with ``tls`` (key, cert, ca paths) it also listens for SIP
    over TLS on the WAN and sends its phone's calls to ``peer``'s proxy over TLS only."""
    mpath = next(iter(glob.glob("/usr/lib/*/kamailio/modules/")), "/usr/lib/kamailio/modules/")
    for module, package in (("rtpengine.so", "kamailio"), ("tls.so", "kamailio-tls-modules")):
        if (module != "tls.so" or tls) and not os.path.exists(os.path.join(mpath, module)):
            raise LabError(f"kamailio's {module} not found in {mpath}: install {package}")
    d = kamailio_dir(lab, role)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "kamailio.cfg")
    addr = lab.ua_addr(role)
    tls_listen = tls_module = ""
    to_peer = f"sip:{peer}:{TLS_PORT};transport=tls" if peer else "sip:0.0.0.0"
    if tls:
        with open(os.path.join(d, "tls.cfg"), "w") as f:
            f.write(TLS_CFG.format(**tls))
        tls_listen = f"enable_tls=yes\nlisten=tls:{addr}:{TLS_PORT}"
        tls_module = f'loadmodule "tls.so"\nmodparam("tls", "config", "{d}/tls.cfg")'
    with open(cfg, "w") as f:
        f.write(KAMAILIO_CFG.format(addr=addr, port=PROXY_PORT, mpath=mpath, ng=NG_PORT, phone=addr,
                                    tls_listen=tls_listen, tls_module=tls_module, to_peer=to_peer,
                                    phone_port=PHONE_PORT_TLS if tls else 5060))
    ns = lab.ns(role)
    pid, st = proc.spawn(ns, ["kamailio", "-DD", "-E", "-f", cfg, "-Y", d, "-P", os.path.join(d, "kamailio.pid"),
                              "-m", "32", "-M", "8"], os.path.join(d, "kamailio.out"))
    lab.track(role, "kamailio", pid, st, ns)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if f"{addr}:{PROXY_PORT} " in proc.run(ns, "ss", "-lnu", check=False).stdout:
            return
        if not proc.alive(pid, st):
            break
        time.sleep(0.1)
    raise LabError(f"kamailio did not listen on {addr}:{PROXY_PORT}: see {d}/kamailio.out")


def proxy_uri(lab: Lab, user: str) -> str:
    """Where the other gateway's phone sends its INVITE: the user at the proxied gateway's Kamailio."""
    role = lab.state["proxy"].get("role", "gwa")
    return f"sip:{user}@{lab.ua_addr(role)}:{PROXY_PORT}"


def ng_command(lab: Lab, role: str, command: dict, source: str = "127.0.0.1", timeout: float = 3.0) -> dict | None:
    """One ng command to the gateway's controller from ``source`` inside its namespace, as a proxy
    sends it; the decoded reply (byte strings as text), or None when none came."""
    def sock() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source, 0))
        return s

    s = proc.in_netns(lab.ns(role), sock)
    try:
        cookie = f"t{time.monotonic_ns()}".encode()
        body = fastbencode.bencode({k.encode(): v.encode() if isinstance(v, str) else v for k, v in command.items()})
        s.settimeout(timeout)
        s.sendto(cookie + b" " + body, ("127.0.0.1", NG_PORT))
        try:
            data = s.recv(65535)
        except TimeoutError:
            return None
    finally:
        s.close()
    got, _, reply = data.partition(b" ")
    if got != cookie:
        raise LabError(f"ng reply with cookie {got!r}, sent {cookie!r}")
    return _text(fastbencode.bdecode(reply))


def _text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dict):
        return {_text(k): _text(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_text(x) for x in v]
    return v


def wan_signalling(pcap: str) -> dict[str, int]:
    """What a WAN capture holds of SIP: TLS segments on 5061 with data, and packets that are SIP in
    clear (on a SIP port of the labs, or with "SIP/2.0" anywhere in their payload)."""
    from ..offline import ip_packets
    from ..packet import TCP, UDP, decode_ip

    out = {"tls": 0, "clear_sip": 0}
    for _, data in ip_packets(pcap):
        p = decode_ip(data)
        if p is None or p.proto not in (TCP, UDP):
            continue
        if b"SIP/2.0" in p.payload or {p.sport, p.dport} & {5060, PHONE_PORT_TLS, PROXY_PORT}:
            out["clear_sip"] += 1
        elif p.proto == TCP and TLS_PORT in (p.sport, p.dport) and p.payload:
            out["tls"] += 1
    return out
