"""Issue 19 in the lab: an offer and answer whose m= lines claim 65000 ports (`m=audio 10100/65000`) cost the
real controllers about what a normal offer costs (before: 176-263 ms of the loop each) and is
refused with one reason, while normal calls around it are keyed. The cost is each decision's
delay in the controller's own log (written at `ts`, about a packet captured at `t`), normal and
hostile interleaved in one lab and compared with each other, never with a fixed time."""

import os
import secrets
import statistics
import time

from ipsecrtp.log import read_log
from ipsecrtp.netns.craft import sdp, sip, udp_socket
from ipsecrtp.netns.lab import Lab
from ipsecrtp.netns.labstate import SIP_PORT


def test_a_port_count_of_65000_costs_what_a_normal_offer_costs():
    lab = Lab("h" + secrets.token_hex(4))
    socks = []
    try:
        lab.up()
        a, b = lab.ua_addr("gwa"), lab.ua_addr("gwb")
        sa, sb = udp_socket(lab, "gwa"), udp_socket(lab, "gwb")
        socks += [sa, sb]
        calls = []
        for i in range(12):
            hostile = i % 2 == 1
            cid = f"h{i}-{secrets.token_hex(3)}"
            calls.append((cid, hostile))
            port_a, port_b = 10000 + 4 * i, 10100 + 4 * i
            sa.sendto(sip(f"INVITE sip:bob@{b} SIP/2.0", cid, "1 INVITE", a, b, "",
                          sdp(a, port_a, 65000 if hostile else 0)), (b, SIP_PORT))
            time.sleep(0.05)
            sb.sendto(sip("SIP/2.0 200 OK", cid, "1 INVITE", a, b, ";tag=b1",
                          sdp(b, port_b, 65000 if hostile else 0)), (a, SIP_PORT))
            time.sleep(0.3)
        time.sleep(1.0)
        log = read_log(lab.controller_log("gwb"))  # the answerer's gateway: it decides and keys
        cost = {"normal": [], "hostile": []}
        for cid, hostile in calls:
            want = "refused" if hostile else "keying"
            e = next(e for e in log if e.get("call") == cid and e.get("event") == want)
            cost["hostile" if hostile else "normal"].append(e["ts"] - e["t"])
            if hostile:
                assert "65000" in e["reason"] and "max_ports_per_stream" in e["reason"]
                assert not [x for x in log if x.get("call") == cid and x.get("event") in ("keying", "sa-initiated")]
            else:
                assert [x for x in log if x.get("call") == cid and x.get("event") == "sa-initiated"]
        normal, hostile = statistics.median(cost["normal"]), statistics.median(cost["hostile"])
        print(f"decision delay median: normal {normal * 1000:.2f} ms, port count 65000 {hostile * 1000:.2f} ms")
        assert hostile < 3 * normal + 0.005  # the same order; enumerating 65000 ports cost 176-263 ms
    finally:
        for s in socks:
            s.close()
        lab.down()
        assert not os.path.exists(lab.dir)
