"""Real baresip calls through the namespace lab, checked from independent views: tshark's reading
of a tcpdump capture of the WAN, charon's list-sas over VICI, and the kernel's routing rules."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time

import pytest

from ipsecrtp.kernel.xfrm import XFRM_POLICY_BLOCK, port_blocks
from ipsecrtp.keying.strongswan import Charon
from ipsecrtp.keying.xfrmguard import GUARD_PRIORITY
from ipsecrtp.netns import proc
from ipsecrtp.netns.calls import Capture, Phones, child_sas, flow_rules, log_events, wait_log, wire_stats
from ipsecrtp.timescale import scaled

pytestmark = pytest.mark.lab


def sdp_ports(pcap: str) -> dict[str, list[tuple[str, str, int]]]:
    """Call-ID -> [(sip message, c= address, m= port)] as tshark dissects the capture."""
    out = subprocess.run(["tshark", "-r", pcap, "-Y", "sdp", "-T", "fields", "-E", "separator=|",
                          "-e", "sip.Call-ID", "-e", "sip.Method", "-e", "sip.Status-Code",
                          "-e", "sdp.connection_info.address", "-e", "sdp.media.port"],
                         capture_output=True, text=True, check=True).stdout
    calls: dict[str, list] = {}
    for line in out.splitlines():
        cid, method, status, addr, port = line.split("|")
        calls.setdefault(cid, []).append((method or status, addr, int(port)))
    return calls


def sip_methods(pcap: str, call_id: str) -> list[str]:
    out = subprocess.run(["tshark", "-r", pcap, "-Y", f'sip.Call-ID == "{call_id}"', "-T", "fields",
                          "-e", "sip.Method", "-e", "sip.Status-Code"], capture_output=True, text=True,
                         check=True).stdout
    return [x.strip() for x in out.replace("\t", " ").splitlines()]


def ipsec0_rx(lab, role: str) -> int:
    out = proc.run(lab.ns(role), "ip", "-j", "-s", "link", "show", "ipsec0").stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


@pytest.fixture(scope="module")
def calls(lab):
    caps = {r: Capture(lab, r, os.path.join(lab.dir, f"wan-{r}.pcap")) for r in ("gwa", "gwb")}
    phones = Phones(lab)
    try:
        results = {s: phones.call(s, talk=2.0) for s in ("caller-hangup", "callee-hangup", "cancel")}
    finally:
        phones.close()
        for c in caps.values():
            c.stop()
    return results, caps["gwa"].path, caps["gwb"].path


def leaving(pcap: str, own: str) -> list:
    """Cleartext RTP/RTCP a gateway sent onto the WAN. Only what leaves counts: with kernel ESP
    (kernel-netlink) a capture also shows the decrypted copy of each packet that arrived."""
    return [p for p in wire_stats(pcap).rtp_clear if p[1] == own]


@pytest.mark.parametrize("scenario", ["caller-hangup", "callee-hangup"])
def test_answered_call_media_is_esp_only_while_keyed(lab, calls, scenario):
    results, pcap, pcap_b = calls
    r = results[scenario]
    sdps = sdp_ports(pcap)[r.call_id]
    offer = next((a, p) for m, a, p in sdps if m == "INVITE")
    answer = next((a, p) for m, a, p in sdps if m == "200")
    rtp_ports = {offer[1], offer[1] + 1, answer[1], answer[1] + 1}

    # charon on each gateway held exactly one CHILD_SA whose selectors are the call's RTP and RTCP flows
    for role, (local, remote) in (("gwa", (offer, answer)), ("gwb", (answer, offer))):
        mine = [c for c in r.children[role]
                if any(f"[udp/{local[1]}]" in t for t in c["local-ts"])]
        assert len(mine) == 1, r.children[role]
        c = mine[0]
        assert sorted(c["local-ts"]) == [f"{local[0]}/32[udp/{local[1]}]", f"{local[0]}/32[udp/{local[1] + 1}]"]
        assert sorted(c["remote-ts"]) == [f"{remote[0]}/32[udp/{remote[1]}]",
                                          f"{remote[0]}/32[udp/{remote[1] + 1}]"]
        assert c["state"] == "INSTALLED" and c["mode"] == "TUNNEL"

    # `ipsecrtp sas` while the call was up: the call's CHILD_SA on each gateway, mapped to the call
    for role in ("gwa", "gwb"):
        rows = [c for c in r.sas[role]["children"] if c["call"] == r.call_id]
        assert len(rows) == 1 and rows[0]["problems"] == [], r.sas[role]
        if lab.state["backend"] == "kernel-netlink":
            assert len(rows[0]["kernel_sas"]) == 2 and len(rows[0]["kernel_policies"]) >= 4
    # kernel-netlink (the real-kernel tier): what charon reports is what the kernel holds
    if lab.state["backend"] == "kernel-netlink":
        from ipsecrtp.kernel.view import compare

        for role in ("gwa", "gwb"):
            assert compare(r.children[role], r.kernel[role]) == [], r.kernel[role]
            assert len(r.kernel[role]["sas"]) == 2  # one CHILD_SA: an inbound and an outbound SA
            # protect = "required" (the lab's default): the guard's block policies under charon's,
            # the peer's media prefix on the lab's RTP range (10000-10199: 6 aligned port/mask blocks)
            blocks = [p for p in r.kernel[role]["policies"] if p["action"] == XFRM_POLICY_BLOCK]
            assert len(blocks) == len(port_blocks(*lab.rtp_ports)) == 6, blocks
            assert {p["priority"] for p in blocks} == {GUARD_PRIORITY}, blocks
            assert max(p["priority"] for p in r.kernel[role]["policies"] if p["action"] != XFRM_POLICY_BLOCK) \
                < GUARD_PRIORITY

    # exactly one gateway initiated: the answerer's (gwb) by the documented rule
    roles = {role: {e["role"] for e in log_events(lab, role, r.call_id, "keying")} for role in ("gwa", "gwb")}
    assert roles == {"gwa": {"responder"}, "gwb": {"initiator"}}

    ws = wire_stats(pcap)
    keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
    assert keyed_to > keyed_from  # how long it was up depends on the load; the ESP counts below matter
    clear = [p for p in leaving(pcap, "198.51.100.1") + leaving(pcap_b, "198.51.100.2")
             if keyed_from < p[0] < keyed_to and {p[2], p[4]} <= rtp_ports]
    assert clear == [], f"cleartext RTP on the WAN while the SA was up: {clear[:3]}"
    # and with protect = "required" (the lab's default, either backend) none of the call's media
    # left in clear at any time: not before its SA was up, not after it went
    ever = [p for p in leaving(pcap, "198.51.100.1") + leaving(pcap_b, "198.51.100.2") if {p[2], p[4]} <= rtp_ports]
    assert ever == [], f"cleartext RTP on the WAN with protect = required: {ever[:3]}"
    esp = [p for p in ws.esp if keyed_from < p[0] < keyed_to]
    directions = {(p[1], p[2]) for p in esp}
    assert directions == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
    # 50 packets/s each way for ~2 s of talk: well above a handful
    for d in directions:
        assert sum(1 for p in esp if (p[1], p[2]) == d) > 40
    # SIP stayed in clear: the BYE and its 200 crossed the WAN unencrypted after keying
    methods = sip_methods(pcap, r.call_id)
    assert "BYE" in methods and methods.count("200") >= 2
    bye_from = "198.51.100.1" if scenario == "caller-hangup" else "198.51.100.2"
    assert any(t > keyed_from and src == bye_from for t, src, _dst in ws.sip)


def test_after_the_calls_no_sa_route_or_rule_is_left(lab, calls):
    for role in ("gwa", "gwb"):
        assert child_sas(lab, role) == []
        assert flow_rules(lab, role) == []
        if lab.state["backend"] == "kernel-libipsec":
            # charon's blanket rule stays removed: SIP to the peer is never black-holed
            rules = proc.run(lab.ns(role), "ip", "rule", "show").stdout.splitlines()
            assert not [r for r in rules if r.endswith("lookup 220")]
            # the data plane's three rules stay (fail-closed across controller restarts)
            assert sum("fwmark 0x10000/0x10000" in r or "fwmark 0x20000/0x20000" in r for r in rules) == 3
            # and the decrypted media did arrive at each far end through libipsec's TUN device
            assert ipsec0_rx(lab, role) > 80
        else:
            # kernel-netlink: the kernel holds no xfrm state or policy of any call any more
            assert proc.run(lab.ns(role), "ip", "xfrm", "state").stdout.strip() == ""
            # beyond the guard's block policies (protect = required), which stay with the controller
            policies = proc.run(lab.ns(role), "ip", "xfrm", "policy").stdout.replace("\n\t", " ").splitlines()
            outs = [p for p in policies if "dir out" in p]
            assert outs and all(f"action block priority {GUARD_PRIORITY}" in p for p in outs), outs


def _send_media(dst: tuple[str, int], n: int) -> str:
    """n datagrams from this namespace; 'sent' or the error the kernel gave."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            for _ in range(n):
                s.sendto(b"\x80" + bytes(171), dst)  # the size of a G.711 RTP packet
        except OSError as exc:
            return os.strerror(exc.errno or 0)
    return "sent"


def test_media_no_sa_covers_never_reaches_the_wan(lab, tmp_path):
    """protect = "required" (the lab's default, either backend): UDP from gwa to gwb's media address on
    the RTP range, with no call and so no CHILD_SA, never crosses the WAN, and it is counted. With
    kernel-libipsec it goes into the sink (the sender sees success, as on a real link); with kernel
    ESP the guard's block policy drops it (the sender sees EPERM) and the controller reports the
    kernel's count (``media-blocked``). The same datagram to a port outside the range crosses."""
    cap = Capture(lab, "gwa", str(tmp_path / "no-sa.pcap"))
    try:
        deadline = time.monotonic() + scaled(20.0)  # a loaded TCG guest starts tcpdump late
        while time.monotonic() < deadline and "listening" not in open(cap.path + ".log").read():
            time.sleep(0.1)
        guarded = proc.in_netns(lab.ns("gwa"), _send_media, ("198.51.100.2", 10150), 5)
        outside = proc.in_netns(lab.ns("gwa"), _send_media, ("198.51.100.2", 9999), 1)
        netlink = lab.state["backend"] == "kernel-netlink"
        if netlink:
            deadline = time.monotonic() + scaled(3.0)  # reported at most once a second
            while time.monotonic() < deadline and not log_events(lab, "gwa", None, "media-blocked"):
                time.sleep(0.1)
        time.sleep(0.5)
    finally:
        cap.stop()
    assert (guarded, outside) == ("Operation not permitted" if netlink else "sent", "sent")
    udp = subprocess.run(["tshark", "-r", cap.path, "-Y", "udp.dstport == 10150 || udp.dstport == 9999", "-T",
                          "fields", "-e", "udp.dstport"], capture_output=True, text=True, check=True).stdout.split()
    assert udp == ["9999"]  # the guarded five were kept from the WAN, the one outside the range was not
    if netlink:
        blocked = log_events(lab, "gwa", None, "media-blocked")
        assert blocked and blocked[-1]["total"] >= 1, blocked


def test_cancelled_call_is_never_keyed(lab, calls):
    results, pcap, _ = calls
    r = results["cancel"]
    methods = sip_methods(pcap, r.call_id)
    assert "CANCEL" in methods and "487" in methods
    for role in ("gwa", "gwb"):
        assert log_events(lab, role, r.call_id, "keying") == []
        ended = log_events(lab, role, r.call_id, "dialog-ended")
        assert [e["reason"] for e in ended] == ["cancelled"]


def test_run_on_missing_interface_fails_with_one_line_and_changes_nothing(lab, tmp_path):
    cfg = open(os.path.join(lab.gw_dir("gwa"), "controller.toml")).read().replace('"wan0"', '"nope0"')
    path = tmp_path / "bad.toml"
    path.write_text(cfg)
    before = child_sas(lab, "gwa")
    charon = Charon(lab.vici("gwa"))
    conns_before = charon.conns()
    r = subprocess.run(["ip", "netns", "exec", lab.ns("gwa"), sys.executable, "-m", "ipsecrtp", "run",
                        "--config", str(path)], capture_output=True, text=True,
                       timeout=600)  # a hang guard: in a loaded TCG guest a controller's imports took up to 198 s
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "Error: no interface named 'nope0' in this network namespace"
    assert child_sas(lab, "gwa") == before
    assert charon.conns() == conns_before == ["peer-gwb"]  # the running controller's config is untouched
    charon.close()


def _sip_exchange(lab, call_id: str, offer_addr: str, offer_port: int) -> list[str]:
    """A crafted UAC in gwa (port 5062) calls bob's real baresip with a hostile offer, then ACKs and
    hangs up. Returns the status lines it received."""
    sock = proc.in_netns(lab.ns("gwa"), lambda: _bound_udp(("198.51.100.1", 5062)))
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {offer_addr}\r\ns=-\r\nc=IN IP4 {offer_addr}\r\nt=0 0\r\n"
           f"m=audio {offer_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

    def req(method: str, cseq: int, to_tag: str = "", body: str = "") -> bytes:
        to = "<sip:bob@198.51.100.2>" + (f";tag={to_tag}" if to_tag else "")
        head = (f"{method} sip:bob@198.51.100.2 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 198.51.100.1:5062;branch=z9hG4bK{method}{cseq}{call_id[-12:]}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:mallory@198.51.100.1>;tag=m1\r\nTo: {to}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:mallory@198.51.100.1:5062>\r\n")
        if body:
            head += "Content-Type: application/sdp\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode()

    dst = ("198.51.100.2", 5060)
    sock.sendto(req("INVITE", 1, body=sdp), dst)
    statuses, to_tag = [], ""
    deadline = time.monotonic() + 10
    sock.settimeout(1.0)
    while time.monotonic() < deadline and not any(s.startswith("SIP/2.0 2") for s in statuses):
        try:
            data = sock.recv(65535).decode()
        except TimeoutError:
            continue
        statuses.append(data.split("\r\n", 1)[0])
        for line in data.split("\r\n"):
            if line.lower().startswith(("to:", "t:")) and "tag=" in line:
                to_tag = line.split("tag=")[1].split(";")[0].strip()
    sock.sendto(req("ACK", 1, to_tag), dst)
    time.sleep(0.5)
    sock.sendto(req("BYE", 2, to_tag), dst)
    time.sleep(0.5)
    sock.close()
    return statuses


def _bound_udp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    return s


@pytest.mark.parametrize("offer_addr, offer_port, reason", [
    ("192.0.2.99", 10000, "in neither peer's media prefixes"),  # media pointed at a third host
    ("198.51.100.1", 5060, "outside the RTP range"),  # media pointed at the SIP port
])
def test_hostile_offer_is_refused_and_nothing_is_keyed(lab, calls, offer_addr, offer_port, reason):
    call_id = "hostile-" + secrets.token_hex(6)
    statuses = _sip_exchange(lab, call_id, offer_addr, offer_port)
    assert any(s.startswith("SIP/2.0 200") for s in statuses), statuses  # baresip really answered
    for role in ("gwa", "gwb"):
        wait_log(lab, role, call_id, "refused", 10)  # logged as the answer is seen: waited for, not assumed
        refused = log_events(lab, role, call_id, "refused")
        assert len(refused) == 1 and reason in refused[0]["reason"], refused
        assert log_events(lab, role, call_id, "keying") == []
        assert child_sas(lab, role) == []
        assert flow_rules(lab, role) == []
