"""Issue 17 item 4 in the lab: a call whose offer and answer are both RTP/SAVP with an a=crypto line,
signalled from plain sockets between the gateways' user-agent addresses. With srtp = "skip" (the
peer's signalling marked protected, since SDES keys travel in the SDP) both controllers log it
end-to-end protected and no SA comes up, while a plain RTP call in the same lab is keyed; restarted
with srtp = "protect", the same kind of SRTP call gets its SA."""

import os
import secrets
import time

from ipsecrtp.log import read_log
from ipsecrtp.netns.craft import sdp, sip, udp_socket
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.labstate import SIP_PORT

CRYPTO = ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",)
ROLES = ("gwa", "gwb")


def place(lab: Lab, socks, cid: str, port_a: int, port_b: int, srtp: bool) -> None:
    a, b = lab.ua_addr("gwa"), lab.ua_addr("gwb")
    kw = {"proto": "RTP/SAVP", "extra": CRYPTO} if srtp else {}
    socks[0].sendto(sip(f"INVITE sip:bob@{b} SIP/2.0", cid, "1 INVITE", a, b, "", sdp(a, port_a, **kw)), (b, SIP_PORT))
    time.sleep(0.05)
    socks[1].sendto(sip("SIP/2.0 200 OK", cid, "1 INVITE", a, b, ";tag=b1", sdp(b, port_b, **kw)), (a, SIP_PORT))


def hang_up(lab: Lab, socks, cid: str) -> None:
    a, b = lab.ua_addr("gwa"), lab.ua_addr("gwb")
    socks[0].sendto(sip(f"BYE sip:bob@{b} SIP/2.0", cid, "2 BYE", a, b, ";tag=b1"), (b, SIP_PORT))
    time.sleep(0.05)
    socks[1].sendto(sip("SIP/2.0 200 OK", cid, "2 BYE", a, b, ";tag=b1"), (a, SIP_PORT))


def events(lab: Lab, cid: str, event: str) -> dict[str, list[dict]]:
    return {r: [e for e in read_log(lab.controller_log(r)) if e.get("call") == cid and e.get("event") == event]
            for r in ROLES}


def wait_for(lab: Lab, cid: str, event: str, timeout: float = 15.0) -> dict[str, list[dict]]:
    """Each gateway's lines of ``event`` for the call, once both have one (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        got = events(lab, cid, event)
        if all(got.values()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def any_sa(lab: Lab, cid: str) -> list[dict]:
    return [e for lines in events(lab, cid, "sa-up").values() for e in lines]


def test_srtp_skip_keys_nothing_and_protect_keys(tmp_path):
    lab = Lab("s" + secrets.token_hex(4))
    socks = []
    try:
        lab.up(protect="opportunistic", controllers=False)  # skip needs it (config.check_signalling)
        lab.state["peer_extra"] = {"srtp": "skip", "signalling": "protected"}
        lab.start_controllers()
        socks += [udp_socket(lab, "gwa"), udp_socket(lab, "gwb")]

        srtp_call, plain_call = "srtp-" + secrets.token_hex(3), "plain-" + secrets.token_hex(3)
        place(lab, socks, srtp_call, 10000, 10100, srtp=True)
        skipped = wait_for(lab, srtp_call, "srtp-end-to-end")
        place(lab, socks, plain_call, 10004, 10104, srtp=False)
        # the plain call is keyed in this lab (so no SA for the SRTP call means the policy, not a dead lab)
        assert any(wait_for(lab, plain_call, "sa-up").values())
        for r in ROLES:
            (line,) = skipped[r]
            assert (line["srtp"], line["peer"]) == ("sdes", "gwb" if r == "gwa" else "gwa")
            assert events(lab, srtp_call, "keying")[r] == []
        assert any_sa(lab, srtp_call) == []
        hang_up(lab, socks, srtp_call)
        hang_up(lab, socks, plain_call)

        lab.state["peer_extra"] = {"srtp": "protect", "signalling": "protected"}
        for r in ROLES:
            lab.restart_controller(r)
        protected = "srtp-" + secrets.token_hex(3)
        place(lab, socks, protected, 10008, 10108, srtp=True)
        assert any(wait_for(lab, protected, "sa-up").values())
        assert events(lab, protected, "srtp-end-to-end") == {r: [] for r in ROLES}
        hang_up(lab, socks, protected)
        assert any(wait_for(lab, protected, "sa-down").values())
    finally:
        for s in socks:
            s.close()
        lab.down()
        assert not os.path.exists(lab.dir)
