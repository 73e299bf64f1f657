"""A reload's peer changes applied to a running core (SIGHUP; gateway/reconfig.py): calls of unchanged
peers are not touched; a changed peer's calls are keyed again under its new settings, once charon holds
it; a removed peer's calls lose their SAs and charon forgets it once none is left; an added peer's
first calls wait for it to be loaded."""

from __future__ import annotations

import dataclasses

from ipsecrtp.gateway.actions import GuardMedia, InstallChild, RemoveChild, SetPeer

from .harness import Harness, config
from .scenario import GWA, GWB, NET_A, NET_B, RTP, TEARDOWN, Call, peer

NET_C, PHONE_C, GWC = "198.51.100.64/26", "198.51.100.70", "198.51.100.3"
PEER_A = peer("gwb", "child-per-call")  # gwb's view of gwa
PEER_C = dataclasses.replace(PEER_A, name="gwc", ike_remote=GWC, remote_media=(NET_C,))


def gwb(*peers, backend: str = "none (dry run)") -> Harness:
    gw = Harness(config(peers or (PEER_A, PEER_C), name="gwb", teardown_delay=TEARDOWN), backend=backend)
    gw.yes(0.0)
    return gw


def answered(gw: Harness, c: Call, t: float) -> None:
    for pkt in c.answered():
        gw.on_packet(t, pkt)


def installs(gw: Harness, call: str) -> list[InstallChild]:
    return [a for a in gw.of(InstallChild) if a.call_id == call]


def test_a_changed_peer_s_calls_are_keyed_again_and_an_unchanged_peer_s_are_not_touched():
    gw = gwb()
    a, c = Call("ca"), Call("cc", caller=PHONE_C)
    answered(gw, a, 1.0)
    answered(gw, c, 1.0)
    gw.yes(1.0)
    assert [i.peer for i in installs(gw, "ca")] == ["gwa"] and [i.peer for i in installs(gw, "cc")] == ["gwc"]
    before = len(gw.actions)
    new_c = dataclasses.replace(PEER_C, esp_proposals=("aes256gcm16",))
    changes, actions = gw.core.reconfigure(2.0, (PEER_A, new_c))
    gw._take(2.0, actions)
    assert changes == {"added": [], "removed": [], "changed": ["gwc"]}
    # at once (no teardown delay): its SA goes, charon's view of the peer is replaced only after that
    gw.run_until(2.0)
    assert [r.call_id for r in gw.pending if isinstance(r, RemoveChild)] == ["cc"]
    assert gw.of(SetPeer) == []
    gw.yes(2.0)
    assert gw.of(SetPeer) == [SetPeer("gwc", new_c)]
    # keyed again under the new settings, the gap counted and timed
    assert [i.child for i in installs(gw, "cc")][-1].endswith("-1") and len(installs(gw, "cc")) == 2
    assert [(e["call"], e["reason"]) for e in gw.logs("sa-recovered")] == [("cc", "peer-changed")]
    # the other peer's call: nothing asked of charon, no line about it, and its per-call NAT and
    # latching state (what a re-key from latching and the answerer's timing need) as it was
    touched = [x for _, x in gw.actions[before:] if getattr(x, "call_id", None) == "ca"]
    assert touched == [] and not [e for e in gw.logs() if e.get("call") == "ca" and e["at"] >= 2.0]
    assert "ca" in gw.core.nat.sdp_flows and gw.core.nat.role_of("ca") == "initiator"


def test_a_removed_peer_s_calls_lose_their_sas_and_charon_forgets_it_after_them():
    gw = gwb()
    c = Call("cc", caller=PHONE_C)
    answered(gw, c, 1.0)
    gw.yes(1.0)
    _changes, actions = gw.core.reconfigure(2.0, (PEER_A,))
    gw._take(2.0, actions)
    assert gw.of(RemoveChild) == [] and gw.of(SetPeer) == []  # the teardown delay, as at a BYE
    gw.run_until(2.0 + TEARDOWN)
    assert [r.reason for r in gw.of(RemoveChild)] == ["peer-removed"] and gw.of(SetPeer) == []
    gw.yes(2.0 + TEARDOWN)
    assert gw.of(SetPeer) == [SetPeer("gwc", None)]
    assert [e["peer"] for e in gw.logs("peer-removed")] == ["gwc"]
    # a new call to its media is refused, naming the peers left
    answered(gw, Call("cc2", caller=PHONE_C, from_tag="x2"), 5.0)
    assert installs(gw, "cc2") == [] and [e["call"] for e in gw.logs("refused")] == ["cc2"]


def test_an_added_peer_s_first_call_waits_for_it_while_other_peers_calls_are_keyed_at_once():
    gw = gwb(PEER_A)
    _changes, actions = gw.core.reconfigure(1.0, (PEER_A, PEER_C))
    gw._take(1.0, actions)
    [ask] = gw.of(SetPeer)
    answered(gw, Call("cc", caller=PHONE_C), 1.1)
    answered(gw, Call("ca"), 1.1)
    assert installs(gw, "cc") == [] and [e["call"] for e in gw.logs("keying-deferred")] == ["cc"]
    assert len(installs(gw, "ca")) == 1
    gw.answer(ask, 1.2)
    assert [i.peer for i in installs(gw, "cc")] == ["gwc"]


def test_a_deferred_call_that_ends_first_is_never_keyed():
    gw = gwb(PEER_A)
    gw._take(1.0, gw.core.reconfigure(1.0, (PEER_A, PEER_C))[1])
    [ask] = gw.of(SetPeer)
    c = Call("cc", caller=PHONE_C)
    answered(gw, c, 1.1)
    gw.on_packet(1.5, c.bye())
    gw.answer(ask, 2.0)
    assert installs(gw, "cc") == []


def test_a_peer_charon_would_not_load_is_left_out_and_a_reload_during_one_is_refused():
    gw = gwb(PEER_A)
    gw._take(1.0, gw.core.reconfigure(1.0, (PEER_A, PEER_C))[1])
    refusal, _ = gw.core.reconfigure(1.05, (PEER_A,))
    assert refusal == "a previous reload is still being applied"
    [ask] = gw.of(SetPeer)
    answered(gw, Call("cc", caller=PHONE_C), 1.1)
    gw.answer(ask, 1.2, ok=False)
    assert installs(gw, "cc") == []
    [failed] = gw.logs("reload-failed")
    assert failed["peer"] == "gwc" and failed["calls_unkeyed"] == 1
    answered(gw, Call("cc2", caller=PHONE_C, from_tag="x2"), 2.0)
    assert installs(gw, "cc2") == [] and "cc2" in [e["call"] for e in gw.logs("refused")]
    assert gw.core.reconfigure(3.0, ())[0] == "no peer left: a gateway keys calls to at least one peer"


def test_the_data_plane_guards_an_added_peer_at_once_and_a_removed_one_until_it_is_gone():
    gw = gwb(PEER_A, backend="kernel-libipsec")
    gw._take(1.0, gw.core.reconfigure(1.0, (PEER_C,))[1])
    [first] = gw.of(GuardMedia)
    assert set(first.guarded) == {NET_A, NET_C} and first.rtp == RTP
    gw.yes(1.0)
    assert gw.of(GuardMedia)[-1].guarded == (NET_C,)


def test_unchanged_configuration_changes_nothing():
    gw = gwb()
    changes, actions = gw.core.reconfigure(1.0, (PEER_A, PEER_C))
    assert changes == {"added": [], "removed": [], "changed": []}
    assert [a for a in actions if not a.__class__.__name__ == "Log"] == []


assert GWA and GWB and NET_B  # the scenario's addresses this module's peers are built beside
