"""The controllers' control sockets after real baresip calls: `ipsecrtp calls` and `ipsecrtp sas`,
run inside each gateway's namespace with that gateway's controller.toml, agree with charon's
list-sas during a call (SA ids, state, selectors, bytes) and show nothing once it is over; the socket
is root's only (0600); `ipsecrtp drain` stops the controller once its last call has ended."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from ipsecrtp.config import load
from ipsecrtp.ladder import ike_label
from ipsecrtp.netns import proc
from ipsecrtp.netns.calls import Phones, child_sas, log_events, wait_log
from ipsecrtp.selectors import rules_for_child
from ipsecrtp.shell.control import query

pytestmark = pytest.mark.lab

ROLES = ("gwa", "gwb")


def config(lab, role: str) -> str:
    return os.path.join(lab.gw_dir(role), "controller.toml")


def cli(lab, role: str, *args: str, check: bool = True):
    """The real command, inside the gateway's namespace (as an operator runs it on the gateway)."""
    return proc.run(lab.ns(role), sys.executable, "-m", "ipsecrtp", *args, "--config", config(lab, role),
                    check=check)


def live(lab, role: str, what: str = "calls", *args: str) -> dict:
    return json.loads(cli(lab, role, what, "--json", *args).stdout)


def ask(lab, role: str, request: dict) -> dict:
    """The same request as the commands send, from a thread inside the gateway's namespace (no
    Python start: many views taken within one call)."""
    return proc.in_netns(lab.ns(role), query, load(config(lab, role)).control_path, request)


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := pred()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def test_the_socket_is_roots_only_and_an_idle_gateway_shows_no_call(lab):
    for role in ROLES:
        path = load(config(lab, role)).control_path
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        assert [e["path"] for e in log_events(lab, role, None, "control-socket")] == [path]
        view = live(lab, role)
        assert view["gateway"] == role and view["calls"] == [] and view["draining"] is False
        assert live(lab, role, "sas")["sas"] == [] and child_sas(lab, role) == []


@pytest.fixture(scope="module")
def during(lab):
    """One real call; while it talks, each gateway's live views next to charon's CHILD_SAs."""
    phones = Phones(lab)
    seen: dict = {}
    try:
        result: dict = {}

        def talk() -> None:
            try:
                result["call"] = phones.call("caller-hangup", talk=10.0)
            except Exception as exc:  # noqa: BLE001 - shown by the assertion below
                result["error"] = exc

        t = threading.Thread(target=talk)
        t.start()
        # the initiator's initiate has answered (its keying time is known) and both SAs are up
        wait_for(lambda: log_events(lab, "gwb", None, "sa-initiated") and
                 all(log_events(lab, r, None, "sa-up") for r in ROLES), 20, "the call was never keyed")
        time.sleep(1.0)  # media flows a while: charon's byte counters move
        for role in ROLES:
            children = child_sas(lab, role)
            seen[role] = [ask(lab, role, {"cmd": "calls"}), ask(lab, role, {"cmd": "sas"}), children]
        assert t.is_alive(), f"the call ended before its views were all taken: {result}"
        for role in ROLES:  # the commands themselves (each ~1 s, a Python start), the call still up
            seen[role] += [cli(lab, role, "calls").stdout, live(lab, role, "sas")]
        assert t.is_alive(), f"the call ended before the commands ran: {result}"
        t.join(timeout=30)
        call = result["call"]
    finally:
        phones.close()
    for role in ROLES:
        wait_log(lab, role, call.call_id, "timeline", 30)
    return call, seen


def test_during_a_call_the_live_view_agrees_with_charon(lab, during):
    call, seen = during
    for role in ROLES:
        view, sas, children, _, sas_cli = seen[role]
        assert len(children) == 1, children
        child = children[0]
        [c] = view["calls"]
        assert c["call"] == call.call_id and c["dialog"]["state"] == "confirmed"
        assert c["role"] == ("initiator" if role == "gwb" else "responder")
        assert c["strategy"] == "child-per-call" and c["peer"] == ("gwb" if role == "gwa" else "gwa")
        # flows with addresses and ports: the same ports the phones' call used, in the keyed selectors
        ports = {int(e.rsplit(":", 1)[1]) for f in c["flows"] for e in (f["offerer"], f["answerer"])}
        assert ports == call.ports
        [sa] = [s for s in c["sas"] if s["state"] == "up"]
        assert sa["sa"] == child["uniqueid"] and sa["charon"]["state"] == child["state"] == "INSTALLED"
        assert sa["charon"]["local_ts"] == child["local-ts"] and sa["charon"]["remote_ts"] == child["remote-ts"]
        # the core's exact flow pairs, within charon's selectors (charon lists them as local x remote)
        assert set(sa["selectors"]) <= {str(r) for r in rules_for_child(child["local-ts"], child["remote-ts"])}
        assert len(sa["selectors"]) == len(c["flows"]) == len(child["local-ts"])
        assert sa["charon"]["bytes_in"] > 0 and sa["charon"]["bytes_out"] > 0  # media went through it
        assert view["charon_sas"] == 1
        if role == "gwb":  # the initiator times its keying
            assert sa["keying_ms"] > 0 and sa["child"] == child["name"]
        assert c["times"]["sa_up"] is not None and c["times"]["sa_up"] >= c["times"]["answer"] - 1
        assert [(s["call"], s["sa"]) for s in sas["sas"]] == [(call.call_id, child["uniqueid"])]
        assert [(s["call"], s["sa"], s["charon"]["state"]) for s in sas_cli["sas"]] == \
            [(call.call_id, child["uniqueid"], "INSTALLED")]


def test_the_text_views_name_the_call_its_flows_and_sa(lab, during):
    call, seen = during
    for role in ROLES:
        text = seen[role][3]
        view = seen[role][0]
        assert f"{role} (" in text and call.call_id in text
        for f in view["calls"][0]["flows"]:
            assert f"{f['offerer']} <-> {f['answerer']}" in text
        assert f"SA {seen[role][2][0]['uniqueid']} " in text and "INSTALLED" in text


def test_after_the_call_nothing_is_shown_and_an_unknown_call_is_one_line(lab, during):
    call, _ = during
    for role in ROLES:
        wait_for(lambda r=role: not live(lab, r, "sas")["sas"], 10, f"{role}: SAs still held")
        assert child_sas(lab, role) == []
        assert all(c["sas"] == [] for c in live(lab, role)["calls"])  # a dialog may linger, ended
    r = cli(lab, "gwa", "calls", "--call", "no-such-call", check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"Error: {load(config(lab, 'gwa')).control_path}: no live call 'no-such-call'"]


def test_the_ladder_picture_parses_as_svg_and_names_every_message(lab, during, tmp_path):
    call, _ = during
    svg = str(tmp_path / "call.svg")
    r = subprocess.run([sys.executable, "-m", "ipsecrtp", "report", call.call_id, "--lab", lab.name, "--svg", svg],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = "\n".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    tls = [e for role in ROLES for e in log_events(lab, role, call.call_id, "timeline")]
    assert len(tls) == 2
    for label in ("INVITE", "final response 200", "ACK", "BYE", "BYE answered", "CHILD_SA installed",
                  "first ESP", "CHILD_SA removed", "keying started"):
        assert label in text, label
    ike = [ike_label(p) for tl in tls for p in tl["ike"]]
    assert ike and all(label in text for label in ike)  # the CREATE_CHILD_SA exchange, as each side saw it
    assert f"post-answer gap {tls[0]['metrics']['post_answer_gap_ms']} ms" in text or \
        f"post-answer gap {tls[1]['metrics']['post_answer_gap_ms']} ms" in text


def test_drain_stops_the_controller_once_its_last_call_has_ended(lab):
    """Last in this module: gwb's controller is gone afterwards."""
    phones = Phones(lab)
    try:
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(call=phones.call("callee-hangup", talk=8.0)))
        before = len(log_events(lab, "gwb", None, "sa-initiated"))
        t.start()
        wait_for(lambda: len(log_events(lab, "gwb", None, "sa-initiated")) > before, 20, "not keyed")
        out = cli(lab, "gwb", "drain").stdout
        assert t.is_alive(), "the call ended before the drain (a slow machine): nothing was tested"
        assert "draining: 1 keyed calls" in out
        assert ask(lab, "gwb", {"cmd": "status"})["draining"] is True  # still running: its call is live
        assert not log_events(lab, "gwb", None, "drained")
        t.join(timeout=30)
    finally:
        phones.close()
    wait_for(lambda: log_events(lab, "gwb", None, "stopped"), 20, "gwb's controller did not stop")
    events = [e["event"] for e in log_events(lab, "gwb")]
    call = result["call"].call_id
    # the call's SA went with its BYE (not with the stop), then the controller stopped by itself
    removed = max(i for i, e in enumerate(log_events(lab, "gwb")) if e.get("call") == call and e["event"] == "sa-down")
    assert events.index("draining") < removed < events.index("drained") < events.index("stopped")
    assert child_sas(lab, "gwb") == []
    assert not os.path.exists(load(config(lab, "gwb")).control_path)
