"""ESP packet sizes measured in the lab, for checking the overhead calculator against real packets.

For one ESP proposal: a lab whose controllers key with exactly that proposal, one call signalled on
the WAN (an INVITE and its 200 with SDP, sent from plain sockets in the two gateways: the
controllers only watch the wire, so no user agent is needed and nothing lingers on shutdown), then
RTP packets of chosen payload sizes from gwa's media port to gwb's on the keyed flow. A tcpdump on
gwa's WAN records what charon put on the wire; tshark reads each ESP packet's IP length and ESP
sequence number, and the sequence number says which RTP packet it carries (nothing else uses the
flow, so the n-th packet sent is sequence number n).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..keying.strongswan import Charon
from ..overhead import ESP_CIPHERS, Profile, ip_bytes, table
from .calls import Capture, log_events
from .craft import sdp, sip, udp_socket
from .lab import Lab
from .labstate import SIP_PORT, LabError

# media ports inside the lab's RTP range; rtcp-mux in both SDPs makes the call one flow pair
PORT_A, PORT_B = 10100, 10102
# charon buffers its file log; a refusal (libipsec logs it, the peer only sees a failed exchange) must be
# readable while charon runs. strongswan.conf merges this with the lab's own filelog section.
FLUSH_LOG = "  filelog {\n    lab {\n      flush_line = yes\n    }\n  }"


@dataclass
class Measurement:
    proposal: str
    keyed: bool = False
    refused: str = ""  # why there is no SA with this proposal (charon's or the controller's words)
    negotiated: dict = field(default_factory=dict)  # charon's CHILD_SA algorithms, as list-sas says
    mode: str = ""
    encap: bool = False
    payloads: list[int] = field(default_factory=list)  # RTP payload sizes sent, in order
    ip_lens: list[int | None] = field(default_factory=list)  # the ESP packet of each, IP total length
    seconds: float = 0.0


def _wait_keyed(lab: Lab, call_id: str, timeout: float) -> str:
    """'' once both gateways logged sa-up for the call, else the first failure's reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ups = 0
        for role in ("gwa", "gwb"):
            for e in log_events(lab, role, call_id):
                if e.get("event") == "keying-failed":
                    return f"{role}: {e.get('reason')}"
                ups += e.get("event") == "sa-up"
        if ups >= 2:
            return ""
        time.sleep(0.05)
    return f"no sa-up on both gateways within {timeout:.0f} s"


def _charon_refusal(lab: Lab) -> str:
    """charon's own words for why no SA came of the proposal (libipsec's refusals are logged, not sent)."""
    words = ("unsupported", "not supported", "no acceptable", "failed to create ESP")
    seen: list[str] = []
    for role in ("gwa", "gwb"):
        try:
            with open(os.path.join(lab.gw_dir(role), "charon.log")) as f:
                for ln in f:
                    text = f"charon in {role}: " + ln.split("]", 1)[-1].strip()  # no time or thread: each once
                    if any(w in ln for w in words) and text not in seen:
                        seen.append(text)
        except OSError:
            pass
    return "; ".join(seen[:3])


def esp_lengths(pcap: str, src: str) -> dict[int, int]:
    """ESP sequence number -> IP total length of the ESP packets ``src`` sent (ESP in UDP or not)."""
    out = subprocess.run(["tshark", "-r", pcap, "-Y", f"esp && ip.src == {src}", "-T", "fields",
                          "-e", "esp.sequence", "-e", "ip.len"], capture_output=True, text=True, check=True).stdout
    lens = {}
    for line in out.splitlines():
        seq, _, length = line.partition("\t")
        if seq and length:
            lens[int(seq)] = int(length)
    return lens


def measure(name: str, proposal: str, payloads: list[int], timeout: float = 20.0,
            esp_mode: str = "tunnel") -> Measurement:
    """Bring a lab up keyed with ``proposal`` (in ``esp_mode``), send one RTP packet of each payload size on a keyed
    call, read the ESP sizes, and remove the lab (also on failure)."""
    m = Measurement(proposal, payloads=list(payloads))
    t0 = time.monotonic()
    lab = Lab(name)
    socks: list[socket.socket] = []
    try:
        try:
            lab.up(media_timeout=60.0, esp_proposals=(proposal,), charon_extra=FLUSH_LOG, esp_mode=esp_mode)
        except LabError as exc:  # e.g. a controller refused at start because charon refused the proposal
            m.refused = f"lab up: {exc}"
            return m
        a, b = lab.ua_addr("gwa"), lab.ua_addr("gwb")
        pcap = os.path.join(lab.dir, "wan-gwa.pcap")
        cap = Capture(lab, "gwa", pcap)
        sip_a, sip_b = udp_socket(lab, "gwa"), udp_socket(lab, "gwb")
        rtp_a = udp_socket(lab, "gwa", PORT_A)
        socks += [sip_a, sip_b, rtp_a]
        call_id = f"overhead-{proposal}-{os.getpid()}"
        sip_a.sendto(sip(f"INVITE sip:bob@{b} SIP/2.0", call_id, "1 INVITE", a, b, "",
                          sdp(a, PORT_A)), (b, SIP_PORT))
        time.sleep(0.05)
        sip_b.sendto(sip("SIP/2.0 200 OK", call_id, "1 INVITE", a, b, ";tag=b1", sdp(b, PORT_B)), (a, SIP_PORT))
        sip_a.sendto(sip(f"ACK sip:bob@{b} SIP/2.0", call_id, "1 ACK", a, b, ";tag=b1"), (b, SIP_PORT))
        m.refused = _wait_keyed(lab, call_id, timeout)
        if m.refused:
            why, until = "", time.monotonic() + 3.0
            while not why and time.monotonic() < until:  # charon's file log is buffered: give it a moment
                why = _charon_refusal(lab)
                time.sleep(0.1)
            m.refused = f"{why} ({m.refused})" if why else m.refused
            cap.stop()
            return m
        m.keyed = True
        charon = Charon(lab.vici("gwa"))
        try:
            child = next(c for c in charon.child_sas() if any(f"[udp/{PORT_A}]" in t for t in c["local-ts"]))
        finally:
            charon.close()
        m.negotiated = {k: child[k] for k in ("encr-alg", "encr-keysize", "integ-alg") if k in child}
        m.mode, m.encap = child.get("mode", ""), child.get("encap") == "yes"
        for seq, n in enumerate(payloads, 1):
            rtp = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234ABCD) + bytes(n)
            rtp_a.sendto(rtp, (b, PORT_B))
            time.sleep(0.002)  # keep charon's TUN reader from dropping a burst
        cap.stop()
        lens = esp_lengths(pcap, a)
        m.ip_lens = [lens.get(i) for i in range(1, len(payloads) + 1)]
        return m
    finally:
        for s in socks:
            s.close()
        lab.down()
        m.seconds = round(time.monotonic() - t0, 1)


def computed(m: Measurement) -> list[int]:
    """What the calculator says each packet of ``m`` is at IP level, for the mode and encapsulation
    charon really used (kernel-libipsec: tunnel in UDP; kernel ESP without NAT: no UDP)."""
    p = Profile("esp", 4, ESP_CIPHERS[m.proposal], m.mode.lower(), m.encap)
    return [ip_bytes(p, n) for n in m.payloads]


def default_payloads() -> list[int]:
    """Every codec payload size the calculator knows, then 16 sizes in a row so that every padding
    case of a 16-byte block cipher comes up once."""
    sizes = {r.payload for r in table(ips=(4,))}
    return sorted(sizes) + [n for n in range(160, 176) if n not in sizes]


def measure_all(proposals: list[str], payloads: list[int], prefix: str) -> list[Measurement]:
    """One lab per proposal, in parallel (each waits mostly for charon and the controllers to start)."""
    with ThreadPoolExecutor(len(proposals)) as ex:
        return list(ex.map(lambda ip: measure(f"{prefix}{ip[0]}", ip[1], payloads), enumerate(proposals)))


def report(ms: list[Measurement], detail: bool = False) -> list[str]:
    """One line per proposal; with ``detail`` also each packet as payload:measured/computed bytes."""
    lines = []
    for m in ms:
        if not m.keyed:
            lines.append(f"{m.proposal:<14} REFUSED  {m.refused}")
            continue
        calc = computed(m)
        worst = max(abs((got or 0) - want) for got, want in zip(m.ip_lens, calc, strict=True))
        alg = "/".join(v for k, v in m.negotiated.items())
        lines.append(f"{m.proposal:<14} {alg} {m.mode} {'in UDP' if m.encap else 'no UDP'}: {len(calc)} packets, "
                     f"largest difference {worst} B; payload 160 B: measured {m.ip_lens[m.payloads.index(160)]} B, "
                     f"computed {calc[m.payloads.index(160)]} B ({m.seconds} s)")
        if detail:
            lines.append("    " + " ".join(f"{n}:{got}/{want}" for n, got, want in zip(m.payloads, m.ip_lens, calc,
                                                                                     strict=True)))
    return lines


if __name__ == "__main__":  # python -m ipsecrtp.netns.espsize [PROPOSAL ...]: the lab validation, printed
    import secrets
    import sys

    for line in report(measure_all(sys.argv[1:] or list(ESP_CIPHERS), default_payloads(),
                                   "ov" + secrets.token_hex(3)), detail=True):
        print(line)
