"""What the shell reports back, applied to the keying state: an initiate's answer, charon's word
that a CHILD_SA is up, a removal done, a pre-keyed install, a DNAT chain made. Each moves one
:class:`~.state.SaKeying` along the transition table and says so in the decision log."""

from __future__ import annotations

from ..selectors import ts
from .actions import CANCELLED, DelDnat, DnatResult, InstallResult, PermitResult, PrekeyResult, RemoveResult
from .keying import REMOVED_MEMORY, Keying
from .state import CONFIRM_WAIT, Happening, KeyState, SaKeying

H = Happening


class Outcomes:
    def __init__(self, keying: Keying) -> None:
        self.k = keying

    def install_result(self, r: InstallResult) -> None:
        st = self.k.by_child.get(r.child)
        if st is None or st.call_id != r.call_id:
            return
        if r.reason == CANCELLED and st.state is KeyState.DRAINING:
            st.state = KeyState.GONE  # never started: nothing to remove, nothing to log but this
            self.k.by_child.pop(r.child, None)
            self.k.timed.pop(id(st), None)
            self.k.out.log("keying-cancelled", call=r.call_id, child=r.child, reason=r.reason)
            return
        st.set_up_pending = False
        st.install_started, st.install_finished = r.started, r.finished
        tl = self.k.timelines.get(r.call_id)
        if tl is not None and tl.keying_started is None:
            tl.keying_started = r.started
        if not r.ok:
            st.install_error = r.reason
        before = st.state
        st.advance(H.INSTALL_OK if r.ok else H.INSTALL_FAILED)
        if st.state is KeyState.UP:
            self._initiated(st, recovered=not r.ok)
        elif st.state in (KeyState.INITIATED, KeyState.CONFIRMING):
            st.confirm_due = r.finished + CONFIRM_WAIT
            self.k.arm(st)
        elif before is KeyState.DRAINING:
            self.k.arm(st)  # its removal waited for this

    def prekey_result(self, r: PrekeyResult) -> None:
        if r.removed:
            self._prekey_removed(r)
            return
        # by its SPIs, not as the call's current SA: a call that ended (or was re-keyed) before the
        # answer came has a draining SA whose removal waits for exactly this answer
        st = self.k.prekey_installing.pop((r.call_id, r.spis[:1]), None)
        if st is None or st.prekeyed is None or not st.set_up_pending:
            return
        st.set_up_pending = False
        keys, pairs = st.prekeyed
        if st.terminated:
            self.k.arm(st)  # its removal waited for this answer
        if not r.ok:
            st.prekeyed = None  # the install is all or nothing
            st.advance(H.INSTALL_FAILED)
            if not st.terminated:
                st.advance(H.CONFIRM_TIMEOUT)
            self.k.out.log("keying-failed", call=r.call_id, reason=f"pre-keyed install: {r.reason}")
            return
        st.advance(H.INSTALL_OK)
        if not st.terminated:
            st.advance(H.CHILD_UP)
        for k in keys:
            self.k.spi_calls[k.spi] = r.call_id
        tl = self.k.timelines.get(r.call_id)
        if tl is not None:
            tl.role, tl.strategy = "pre-keyed", st.peer.strategy
            tl.keying_started, tl.sa_up = r.started, r.finished
        self.k.out.log("sa-up", call=r.call_id, child="pre-keyed", spis=[f"{k.spi:08x}" for k in keys],
                     local_ts=[ts(lo) for lo, _ in pairs], remote_ts=[ts(re) for _, re in pairs],
                     keying_ms=round((r.finished - r.started) * 1000, 3))

    def _prekey_removed(self, r: PrekeyResult) -> None:
        st = self.k.prekey_removing.pop((r.call_id, r.spis[:1]), None)
        if st is None:
            return
        st.advance(H.REMOVED)
        tl = self.k.timelines.get(r.call_id)
        if tl is not None and tl.sa_down is None:
            tl.sa_down = r.finished
        if not r.ok:
            self.k.out.log("keying-failed", call=r.call_id, reason=f"pre-keyed removal: {r.reason}")
            return
        self.k.out.log("sa-removed", call=r.call_id, child="pre-keyed", spis=[f"{s:08x}" for s in r.spis],
                     reason=st.remove_reason)
        self.k.out.log("sa-down", call=r.call_id, child="pre-keyed")

    def permit_result(self, r: PermitResult) -> None:
        st = self.k.by_child.get(r.child)
        if st is None:
            return
        st.set_up_pending = False
        if not r.ok:
            self.k.out.log("keying-failed", call=r.call_id, child=r.child, reason=r.reason)
        st.advance(H.PERMITTED if r.ok else H.INSTALL_FAILED)
        if st.state is KeyState.DRAINING:
            self.k.arm(st)

    def remove_result(self, r: RemoveResult) -> None:
        k = self.k
        st = self.k.by_child.pop(r.child, None)
        if st is None:
            return
        self.k.removed[r.child] = r.call_id
        self.k.removed_from[r.child] = (st.peer.name, st.own_conn, st.member)
        while len(self.k.removed) > REMOVED_MEMORY:
            self.k.removed_from.pop(self.k.removed.popitem(last=False)[0], None)
        st.uniqueid = st.uniqueid or r.uniqueid
        st.advance(H.REMOVED)
        k.forget_rules(st)
        if not r.ok:
            self.k.out.log("keying-failed", call=r.call_id, child=r.child, reason=r.reason)
        elif st.permit:
            self.k.out.log("child-config-removed", call=r.call_id, child=r.child, reason=st.remove_reason)
        else:
            self.k.out.log("sa-removed", call=r.call_id, child=r.child, sa=st.uniqueid, reason=st.remove_reason)

    def dnat_result(self, r: DnatResult) -> None:
        if not r.ok:
            self.k.out.log("nat-translate-failed", call=r.call_id, reason=r.error)
            return
        st = self.k.calls.get(r.call_id)
        if st is not None and st.dnat is None and not st.terminated:
            st.dnat = r.tag
        elif st is None and r.call_id not in self.k.pending_dnat:
            self.k.pending_dnat[r.call_id] = r.tag
        else:
            self.k.out.append(DelDnat(r.tag))  # the call moved on meanwhile: nothing owns it
            return
        self.k.out.log("nat-translated", call=r.call_id, rules=[f"{a}:{p} -> {b}:{q}" for a, p, b, q in r.rules],
                     reason=r.reason)

    def child_up(self, st: SaKeying, child: dict) -> None:
        st.uniqueid, st.child_info = child.get("uniqueid"), child
        if not st.can(H.CHILD_UP) or (st.state is KeyState.FAILED and (st.role != "initiator" or st.permit
                                                                       or st.install_started is None)):
            return
        before = st.state
        st.advance(H.CHILD_UP)
        if st.state is KeyState.UP and before in (KeyState.INITIATED, KeyState.CONFIRMING, KeyState.FAILED):
            self.k.timed.pop(id(st), None)
            self._initiated(st, recovered=before in (KeyState.CONFIRMING, KeyState.FAILED))

    def _initiated(self, st: SaKeying, recovered: bool) -> None:
        """An SA this gateway asked for is up and its initiate has answered."""
        k = self.k
        assert st.install_started is not None and st.install_finished is not None
        if st.spec is not None and not st.spec.terminated:
            # the exact SA is up: the speculative one has done its job
            k.drain(st.spec, st.install_finished, "fitted-to-answer")
            if not st.spec.set_up_pending:
                k.remove(st.spec)
        if recovered:
            self.k.out.log("keying-recovered", call=st.call_id, child=st.child, reason=st.install_error)
        c = st.child_info
        self.k.out.log("sa-initiated", call=st.call_id, child=st.child, sa=st.uniqueid,
                     keying_ms=round((st.install_finished - st.install_started) * 1000, 3),
                     after_answer_ms=round((st.install_finished - st.answered_at) * 1000, 3),
                     local_ts=c.get("local-ts"), remote_ts=c.get("remote-ts"), encap=c.get("encap") == "yes")
