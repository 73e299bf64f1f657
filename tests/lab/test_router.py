"""Router mode: a phone behind each gateway, the gateways forwarding, per-call CHILD_SAs whose
selectors are the phones' addresses and ports. Needs kernel ESP (charon's kernel-netlink): it runs
in the real-kernel tier (tests/test_vm_tier.py) and is skipped on a kernel without ESP."""

import time

import pytest

from ipsecrtp.kernel.view import compare, kernel_view
from ipsecrtp.netns.calls import CallResult, Phones, child_sas, log_events
from ipsecrtp.netns.proc import in_netns, run

from .kernel_esp import assert_refused_without_esp, one_call

pytestmark = pytest.mark.lab


def assert_keyed_for(r, a_phone: str, b_phone: str) -> None:
    """Each gateway holds one CHILD_SA between the phones' addresses as its WAN sees them, and the
    kernel holds what charon reports."""
    for role, local, remote in (("gwa", a_phone, b_phone), ("gwb", b_phone, a_phone)):
        (child,) = r.children[role]
        assert all(t.startswith(local + "/32") for t in child["local-ts"]), child
        assert all(t.startswith(remote + "/32") for t in child["remote-ts"]), child
        assert compare(r.children[role], r.kernel[role]) == []


def assert_protected_on_wan(kc, a_phone: str, b_phone: str, keyed_from: float, keyed_to: float) -> None:
    """While keyed: ESP between the gateways both ways; at no time does either gateway send its
    phone's RTP in clear (a capture with kernel ESP also shows each decrypted packet, so only what is
    sent counts)."""
    wa, wb = kc.wire["gwa"], kc.wire["gwb"]
    esp = {(s, d) for t, s, d, _spi in wa.esp if keyed_from < t < keyed_to}
    assert esp == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
    leaked = [p for p in wa.rtp_clear if p[1] == a_phone and keyed_from < p[0] < keyed_to] + \
             [p for p in wb.rtp_clear if p[1] == b_phone and keyed_from < p[0] < keyed_to]
    assert leaked == []
    # protect = "required" (the lab's default): the guard's block policies kept the phones' media
    # from the WAN before the SA was up and after it went as well
    ever = [p for p in wa.rtp_clear if p[1] == a_phone] + [p for p in wb.rtp_clear if p[1] == b_phone]
    assert ever == [], ever[:3]


def assert_phones_got_media(kc, a_phone: str, keyed_from: float, keyed_to: float) -> None:
    """Each phone's own LAN capture: the other's RTP arrived while keyed (through the tunnel, and
    for gwa's phone through its NAT)."""
    to_a = [p for p in kc.phones["gwa"].rtp_clear if p[1] == "203.0.113.10" and keyed_from < p[0] < keyed_to]
    to_b = [p for p in kc.phones["gwb"].rtp_clear if p[1] == a_phone and keyed_from < p[0] < keyed_to]
    assert len(to_a) > 20 and len(to_b) > 20, (len(to_a), len(to_b))


def test_router_mode_is_refused_without_kernel_esp():
    assert_refused_without_esp("router mode needs kernel ESP", mode="router")


def test_router_mode_call_keyed_between_gateways_for_the_phones(tmp_path):
    with one_call(tmp_path, mode="router") as kc:
        lab, r = kc.lab, kc.result
        assert_keyed_for(r, "192.0.2.10", "203.0.113.10")
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        assert_protected_on_wan(kc, "192.0.2.10", "203.0.113.10", keyed_from, keyed_to)
        assert_phones_got_media(kc, "192.0.2.10", keyed_from, keyed_to)
        assert {r_: child_sas(lab, r_) for r_ in ("gwa", "gwb")} == {"gwa": [], "gwb": []}


@pytest.mark.parametrize("sip_alg", [False, True], ids=["without-alg", "with-alg"])
def test_phone_behind_nat_keyed_as_on_the_wire(tmp_path, sip_alg):
    """A NAT (masquerade, optionally the kernel's SIP ALG) between gwa's phone and gwa: the CHILD_SA
    holds the NAT's address (what is on the wire at both gateways), the far gateway sends media that
    its phone addresses to the private address there (no ALG), the media reaches both phones through
    the NAT protected on the WAN, and nothing is left after BYE."""
    with one_call(tmp_path, mode="router", nat="phone", sip_alg=sip_alg) as kc:
        lab, r = kc.lab, kc.result
        call = r.call_id
        assert_keyed_for(r, "192.0.2.20", "203.0.113.10")
        for role in ("gwa", "gwb"):
            # no NAT between the gateways: IKE says so, and ESP needs no UDP encapsulation
            ike = log_events(lab, role, None, "nat-ike")
            assert ike and not any(e["nat"] for e in ike), ike
        translated = log_events(lab, "gwb", call, "nat-translated")
        if sip_alg:
            assert translated == []  # the ALG made the SDP true: nothing to translate
        else:
            (tr,) = translated
            assert tr["rules"] and all(x.startswith("192.0.2.130:") and "-> 192.0.2.20:" in x for x in tr["rules"])
        media = log_events(lab, "gwa", call, "nat-media")
        assert len(media) == 2 and all(m["consistent"] and m["nat"] is (not sip_alg) for m in media), media
        keyed_from, keyed_to = max(r.sa_up.values()), min(r.sa_down.values())
        assert_protected_on_wan(kc, "192.0.2.20", "203.0.113.10", keyed_from, keyed_to)
        assert_phones_got_media(kc, "192.0.2.20", keyed_from, keyed_to)
        assert {role: child_sas(lab, role) for role in ("gwa", "gwb")} == {"gwa": [], "gwb": []}
        nft = run(lab.ns("gwb"), "nft", "list", "ruleset", check=False).stdout
        assert "dnat-" not in nft  # the call's translation went with it


def wait_for(what: str, done, timeout: float = 180.0) -> None:
    """Until ``done()``; the generous limit is for a loaded TCG guest, where one CREATE_CHILD_SA has
    taken 7 s and more (what is judged is the order of events, never how long they took)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout:.0f} s")
        time.sleep(0.2)


def rekeyed(lab, role: str, call: str) -> bool:
    """The gateway re-keyed the call from latching and an SA came up after that."""
    latched = [e["ts"] for e in log_events(lab, role, call, "keying") if e.get("trigger") == "media latching"]
    return bool(latched) and any(e["ts"] > latched[-1] for e in log_events(lab, role, call, "sa-up"))


def all_down(lab, role: str, call: str) -> bool:
    downs = {e["sa"] for e in log_events(lab, role, call, "sa-down")}
    return all(e["sa"] in downs for e in log_events(lab, role, call, "sa-up"))


def call_until_rekeyed(phones: Phones, talk: float = 2.0, timeout: float = 180.0) -> CallResult:
    """The call driven by events, not by a fixed talk time (which the re-key raced in the guest):
    answered, re-keyed from latching on both gateways, ``talk`` seconds over the re-keyed SA (the
    snapshot of charon's and the kernel's SAs at its end), BYE, then every SA of the call down."""
    lab = phones.lab
    ca, cb = phones.ctl["gwa"], phones.ctl["gwb"]
    ca.events.clear()
    cb.events.clear()
    ca.command("dial", f"sip:{lab.topology[1].user}@{lab.ua_addr('gwb')}")
    call = ca.wait_event({"CALL_ESTABLISHED"}, timeout).get("id", "")
    cb.wait_event({"CALL_ESTABLISHED"}, timeout)
    r = CallResult(call, "caller-hangup", answered=True, established_at=time.time())
    for role in ("gwa", "gwb"):
        wait_for(f"{role}: the re-key from latching up", lambda role=role: rekeyed(lab, role, call), timeout)
    time.sleep(talk)
    for role in ("gwa", "gwb"):
        r.children[role] = child_sas(lab, role)
        r.kernel[role] = in_netns(lab.ns(role), kernel_view)
    ca.command("hangup")
    ca.wait_event({"CALL_CLOSED"}, timeout)
    cb.wait_event({"CALL_CLOSED"}, timeout)
    r.closed_at = time.time()
    for role in ("gwa", "gwb"):
        wait_for(f"{role}: every SA of the call down", lambda role=role: all_down(lab, role, call), timeout)
    return r


def test_phone_behind_a_port_changing_nat_rekeyed_from_latching(tmp_path):
    """The phone's NAT picks random ports, so the SDP's ports are not the wire's: each gateway sees the
    phone's first media (gwa on its LAN, gwb in clear on its WAN), re-keys the call with the ports
    really used, and from then on the media crosses the WAN protected and reaches both phones."""
    with one_call(tmp_path, drive=call_until_rekeyed, mode="router", nat="phone", nat_random_ports=True) as kc:
        lab, r = kc.lab, kc.result
        call = r.call_id
        wrong = [m for m in log_events(lab, "gwa", call, "nat-media") if not m["consistent"]]
        seen = {m["relatched"] for m in wrong}
        assert len(seen) == 2 and all(m["sdp"].split(":")[1] != m["seen"].split(":")[1] for m in wrong), wrong
        last_up, first_down = {}, {}
        for role in ("gwa", "gwb"):
            final = log_events(lab, role, call, "keying")[-1]
            assert final["trigger"] == "media latching" and {f["offerer"] for f in final["flows"]} == seen, final
            ups = log_events(lab, role, call, "sa-up")
            assert len(ups) >= 2, ups  # the SA from the SDP's ports, then the re-keyed one
            last_up[role] = ups[-1]["ts"]
            downs = log_events(lab, role, call, "sa-down")
            first_down[role] = min(e["ts"] for e in downs if e["ts"] > ups[-1]["ts"])
            bye = max(e["ts"] for e in log_events(lab, role, call, "unkeying") if e["reason"].startswith("bye"))
            # before the BYE only the re-keyed SA is left: every other SA of the call went down before it
            assert all(e["ts"] < bye for e in downs if e["sa"] != ups[-1]["sa"]), (downs, ups)
            ts_ = ups[-1]["local_ts" if role == "gwa" else "remote_ts"]
            ports = {t.rsplit("/", 1)[1].rstrip("]") for t in ts_}
            assert ports == {s.split(":")[1] for s in seen}, ups[-1]
            # while talking over it: the re-keyed SA is the call's only one, the kernel holds what charon says
            assert [c["uniqueid"] for c in r.children[role]] == [ups[-1]["sa"]], r.children[role]
            assert compare(r.children[role], r.kernel[role]) == []
        keyed_from, keyed_to = max(last_up.values()), min(first_down.values())
        assert_protected_on_wan(kc, "192.0.2.20", "203.0.113.10", keyed_from, keyed_to)
        assert_phones_got_media(kc, "192.0.2.20", keyed_from, keyed_to)
        assert {role: child_sas(lab, role) for role in ("gwa", "gwb")} == {"gwa": [], "gwb": []}
