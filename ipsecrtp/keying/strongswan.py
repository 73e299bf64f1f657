"""IKEv2 keying through strongSwan's charon over VICI.

One connection per keying peer holds a broad template child (the responder's side of every
call, narrowed by charon to what the initiator proposes) plus one child config per call that
this gateway initiates. VICI has no request ids, so each thread uses its own session.

Every wait for charon is bounded (issue 15): a hung charon (SIGSTOP, a deadlock) answers nothing,
and an unbounded read would hold the calling thread for ever. A command not answered in time
raises :class:`CharonTimeout` and leaves the session unusable (VICI has no request ids: a late
answer would be read as the next command's), so its owner opens a new one.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Iterator

import vici

from ..selectors import PeerConfig
from ..timescale import scaled
from .charontimers import ANSWER_MARGIN_S  # for charon's own answer once its time-out has fired

# seconds without inbound traffic before charon checks that the peer still holds the IKE_SA; the
# peer counts as lost once the check goes unanswered through charon's retransmissions (about 12 s
# with the README's recommended timers, 165 s with charon's defaults). Idle IKE_SAs cost one
# INFORMATIONAL exchange per period; IKE_SAs carrying media cost nothing. Scaled on a far slower
# machine (timescale.py): there every check is an exchange that a call's CREATE_CHILD_SA queues behind.
DPD_DELAY = f"{scaled(2.0):g}s"

# a healthy charon answers these in about a millisecond; ipsecrtp.keying.charontimers derives the
# controller's limits from its post-dial budget, this is for the tools and tests
COMMAND_TIMEOUT_S = scaled(2.0)
# a read outside any of this module's commands (a bench's own session.initiate, an event's body)
RAW_WAIT_S = scaled(10.0)
INITIATE_TIMEOUT_S = scaled(10.0)
TERMINATE_TIMEOUT_S = scaled(5.0)
# what a charon-timeout names (a bounded set: a metric's label)
OPERATIONS = ("connect", "version", "stats", "load-shared", "load-conn", "unload-conn", "initiate", "terminate",
              "list-sas", "list-conns", "listen")


# charon's log lines (streamed with an initiate) that say why it failed, kept for the error's one line
WHY = ("constraint check failed", "AUTHENTICATION_FAILED", "certificate invalid", "no trusted", "not valid",
       "expired", "unacceptable", "no private key", "NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE")


class KeyingError(RuntimeError):
    """A keying operation failed; ``str(err)`` is a one-line reason."""


class CharonTimeout(KeyingError):
    """charon did not answer a command in time: hung, not refusing. The session is unusable."""

    def __init__(self, op: str, waited_s: float) -> None:
        super().__init__(f"charon-timeout: {op} not answered within {waited_s:g} s")
        self.op, self.waited_s = op, waited_s


class BoundedSocket:
    """The socket vici reads and writes, with every wait bounded. While a command runs nothing
    waits past its deadline, whatever vici asked for (its generators send an event unregistration
    from a ``finally`` after a time-out, and would wait once more); outside one, vici's own read
    time-out or, where it asks for none (it clears it after a message's first read), ``limit``."""

    def __init__(self, sock: socket.socket, limit: float) -> None:
        self.sock, self.limit = sock, limit
        self.asked: float | None = None
        self.deadline: float | None = None  # monotonic

    def settimeout(self, t: float | None) -> None:
        self.asked = t

    def gettimeout(self) -> float | None:
        return self.asked

    def _arm(self) -> None:
        wait = self.limit if self.asked is None else self.asked
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            wait = left if self.asked is None else min(self.asked, left)
        self.sock.settimeout(wait)

    def recv(self, n: int) -> bytes:
        self._arm()
        return self.sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


def _child(peer: PeerConfig, local_ts: list[str], remote_ts: list[str]) -> dict:
    return {"mode": peer.esp_mode, "esp_proposals": list(peer.esp_proposals), "start_action": "none",
            "close_action": "none", "dpd_action": "clear", "rekey_time": "1h",
            "local_ts": local_ts, "remote_ts": remote_ts}


def _auth(peer: PeerConfig) -> dict:
    """The connection's local and remote authentication. With certificates, trust is end to end
    between the two keying peers, never transitive: the peer's certificate must chain to *this
    peer's* CA (``cacerts``, a constraint, not only a trust anchor) and name ``remote_id`` (charon
    checks the identity against the certificate's subject and subjectAltNames), so a third
    gateway holding a valid certificate from the same CA is refused."""
    if peer.auth == "pubkey" and peer.pubkey is not None:
        return {"local": {"auth": "pubkey", "id": peer.ike_local, "certs": [peer.pubkey.cert]},
                "remote": {"auth": "pubkey", "id": peer.remote_id, "cacerts": [peer.pubkey.ca]}}
    return {"local": {"auth": "psk", "id": peer.ike_local}, "remote": {"auth": "psk", "id": peer.remote_id}}


def connect(path: str, timeout: float = COMMAND_TIMEOUT_S) -> vici.Session:
    """A VICI session: ``timeout`` for connecting, :data:`RAW_WAIT_S` for a read outside a
    command's deadline (see :class:`BoundedSocket`)."""
    path = path.removeprefix("unix://")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except TimeoutError:
        s.close()
        raise CharonTimeout("connect", timeout) from None
    except OSError as exc:
        s.close()
        raise KeyingError(f"no charon VICI socket at {path}: {exc.strerror or exc}") from None
    return vici.Session(BoundedSocket(s, RAW_WAIT_S))


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _decode(obj):
    if isinstance(obj, dict):
        return {_s(k): _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return _s(obj)


class Charon:
    """Command channel to one charon (use from one thread). ``timeout``: how long any command but
    initiate and terminate (which carry their own) may go unanswered."""

    def __init__(self, path: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
        self.path, self.timeout = path, timeout
        # the command that timed out: a late answer may still come, so the session is done, and any
        # later command on it (a clean-up in a finally) fails at once with that same time-out
        self.timed_out: CharonTimeout | None = None
        self.session = connect(path, timeout)
        self.sock: BoundedSocket = self.session.transport.socket

    def close(self) -> None:
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    @contextlib.contextmanager
    def bounded(self, op: str, seconds: float | None = None) -> Iterator[None]:
        """Run one command with a deadline; past it, :class:`CharonTimeout` and the session is done."""
        wait = self.timeout if seconds is None else seconds
        if self.timed_out is not None:
            raise CharonTimeout(self.timed_out.op, self.timed_out.waited_s)
        self.sock.deadline = time.monotonic() + wait
        try:
            yield
        except TimeoutError:
            self.timed_out = CharonTimeout(op, wait)
            self.close()
            raise CharonTimeout(op, wait) from None
        finally:
            self.sock.deadline = None

    @property
    def broken(self) -> bool:
        return self.timed_out is not None

    def version(self) -> dict:
        with self.bounded("version"):
            return _decode(self.session.version())

    def plugins(self) -> list[str]:
        with self.bounded("stats"):
            return _decode(self.session.stats()).get("plugins", [])

    def backend(self) -> str:
        plugins = self.plugins()
        if "kernel-libipsec" in plugins:
            return "kernel-libipsec"
        if "kernel-netlink" in plugins:
            return "kernel-netlink"
        return "unknown"

    def load_secret(self, peer: PeerConfig) -> None:
        """The peer's IKE credential: its pre-shared key, or (auth = "pubkey") our private key (the
        certificates go with the connection, see ``_auth``)."""
        if peer.auth == "pubkey" and peer.pubkey is not None:
            self._request("load_key", "load-key", {"type": "any", "data": peer.pubkey.key})
            return
        self._request("load_shared", "load-shared", {
            "id": f"psk-{peer.name}", "type": "IKE", "data": peer.psk,
            "owners": [peer.ike_local, peer.remote_id],
        })

    def unload_secret(self, peer: PeerConfig) -> None:
        """A removed peer's pre-shared key (loaded under the id ``load_secret`` gives it)."""
        self._request("unload_shared", "unload-shared", {"id": f"psk-{peer.name}"})

    def load_peer(self, peer: PeerConfig, calls: dict[str, tuple[list[str], list[str]]]) -> None:
        """(Re)load each pool member's connection with the template child (the responder's side of
        every call, narrowed by charon to what the peer proposes) and the given extra children (a
        responder's child configs for ports outside the template, rare).

        Reloading an unchanged IKE config keeps its IKE_SA and only replaces child configs. Every
        member holds the same children: the peer may create a CHILD_SA on any IKE_SA between us.
        """
        lo, hi = peer.rtp_ports
        children = {"tmpl": _child(peer, [f"{p}[udp/{lo}-{hi}]" for p in peer.local_media],
                                   [f"{p}[udp/{lo}-{hi}]" for p in peer.remote_media])}
        for name, (local_ts, remote_ts) in calls.items():
            children[name] = _child(peer, local_ts, remote_ts)
        for k in range(peer.ike_pool):
            self._request("load_conn", "load-conn",
                          {peer.member(k): self._conn(peer, children, peer.member_marker(k))})

    def _conn(self, peer: PeerConfig, children: dict, marker: str | None = None) -> dict:
        conn = {
            "version": "2", "local_addrs": [peer.ike_local], "remote_addrs": [peer.ike_remote],
            "proposals": ["aes128-sha256-x25519", "default"], "unique": "never",
            # dead-peer detection (issue 15, peer loss): a peer whose charon restarted forgets our
            # IKE_SA and never says so (unique stays "never": a pool holds several IKE_SAs with the
            # same identities, so INITIAL_CONTACT cannot be used); a liveness check after this long
            # without inbound traffic (a live call's ESP counts) lets the retransmission timers tell
            "dpd_delay": DPD_DELAY,
            **_auth(peer),
            "children": children,
        }
        if marker is not None:
            # charon initiates on any live IKE_SA whose peer config is *equal*, and equality ignores
            # the name (docs/charon-ike-reuse.md): an address pool named after a connection makes it
            # unequal to every other. Harmless here: pools are only read when answering a peer's
            # virtual-IP request (these connections request none) and for `dynamic` selectors
            # (ours are explicit).
            conn["pools"] = [marker]
        return conn

    def load_call_conn(self, peer: PeerConfig, name: str, local_ts: list[str], remote_ts: list[str],
                       member: int | None = None) -> None:
        """A call's own connection with its one child: a load-conn of one child, whatever the number
        of live calls. ``member`` None (ike-per-call): marked with its own name, so that it gets an
        IKE_SA of its own (issue 18); else equal to that pool member's connection, so that its
        CHILD_SA goes on the member's IKE_SA (one CREATE_CHILD_SA)."""
        marker = name if member is None else peer.member_marker(member)
        self._request("load_conn", "load-conn", {name: self._conn(peer, {name: _child(peer, local_ts, remote_ts)},
                                                                  marker)})

    def load_bench_conn(self, peer: PeerConfig, name: str, children: dict[str, tuple[list[str], list[str]]]) -> None:
        """A connection with many fixed children (benchmarks)."""
        common = {"mode": "tunnel", "esp_proposals": list(peer.esp_proposals), "start_action": "none",
                  "close_action": "none", "dpd_action": "clear", "rekey_time": "1h"}
        self._request("load_conn", "load-conn", {name: self._conn(peer, {
            c: dict(common, local_ts=lt, remote_ts=rt) for c, (lt, rt) in children.items()})})

    def _initiate(self, what: str, timeout_s: float, **params: str) -> None:
        said: list[str] = []  # charon's own words on why (a refused certificate, AUTHENTICATION_FAILED)
        try:
            with self.bounded("initiate", timeout_s + ANSWER_MARGIN_S):
                for log in self.session.initiate({**params, "timeout": int(timeout_s * 1000), "init-limits": "no"}):
                    msg = _s(log.get("msg", b""))
                    if any(w in msg for w in WHY) and msg not in said:
                        said.append(msg)
        except vici.exception.CommandException as exc:
            why = f" (charon: {'; '.join(said[-3:])})" if said else ""
            raise KeyingError(f"initiate {what} failed: {exc}{why}") from None

    def _terminate(self, what: str, timeout_s: float, force: bool = False, **params: str) -> None:
        request = {**params, "force": "yes"} if force else {**params, "timeout": int(timeout_s * 1000)}
        try:
            with self.bounded("terminate", timeout_s + ANSWER_MARGIN_S):
                for _log in self.session.terminate(request):
                    pass
        except vici.exception.CommandException as exc:
            raise KeyingError(f"terminate {what} failed: {exc}") from None

    def _list_sas(self, filt: dict | None = None) -> list[dict]:
        """list-sas, one decoded dict per IKE_SA (keyed by its connection name)."""
        with self.bounded("list-sas"):
            return [_decode(x) for x in self.session.list_sas(filt or {})]

    def initiate_child(self, conn: str, child: str, timeout_s: float = INITIATE_TIMEOUT_S) -> None:
        self._initiate(child, timeout_s, child=child, ike=conn)

    def initiate_ike(self, conn: str, timeout_s: float = INITIATE_TIMEOUT_S) -> None:
        """An IKE_SA without a CHILD_SA, for the per-call children to reuse (strategies b and c)."""
        self._initiate(f"IKE_SA {conn}", timeout_s, ike=conn)

    def initiate_conn(self, name: str, timeout_s: float = INITIATE_TIMEOUT_S) -> None:
        """Strategy a: the call's own connection, its IKE_SA and CHILD_SA in one go."""
        self._initiate(name, timeout_s, child=name, ike=name)

    def terminate_ike(self, name: str, timeout_s: float = TERMINATE_TIMEOUT_S) -> None:
        self._terminate(f"IKE_SA {name}", timeout_s, ike=name)

    def ike_sas(self, conn: str | None = None) -> list[dict]:
        """Each IKE_SA (of one connection, or all) with its connection name and its children."""
        out = []
        for ike in self._list_sas({"ike": conn} if conn else None):
            for ike_name, ike_sa in ike.items():
                ike_sa["name"] = ike_name
                out.append(ike_sa)
        return out

    def terminate_ike_id(self, ike_id: str, timeout_s: float = TERMINATE_TIMEOUT_S, force: bool = False) -> None:
        """``force``: delete it here at once, without waiting for the peer's answer (a peer that
        lost it never answers; charon forces only after the timeout when one is given)."""
        self._terminate(f"IKE_SA #{ike_id}", timeout_s, force, **{"ike-id": ike_id})

    def remove_call_conn(self, name: str) -> str | None:
        """ike-per-call: remove the call's CHILD_SA and its IKE_SA, and unload its connection.

        The call's CHILD_SA is found by its child name wherever it is (charon may have put it on an
        equal connection's IKE_SA); an IKE_SA is deleted only when it carries no other CHILD_SA, so
        that one call's teardown never takes another call's protection with it. Returns the id of
        the CHILD_SA removed."""
        removed = None
        for ike in self.ike_sas():
            children = ike.get("child-sas", {}).values()
            mine = [c for c in children if c.get("name") == name]
            others = [c for c in children if c.get("name") != name]
            if mine and others:
                for c in mine:
                    self.terminate_child(c["uniqueid"])
            elif mine or (ike["name"] == name and not others):
                self.terminate_ike_id(ike["uniqueid"])
            removed = removed or next((c.get("uniqueid") for c in mine), None)
        self.unload_conn(name)
        return removed

    def unload_conn(self, name: str) -> None:
        try:
            with self.bounded("unload-conn"):
                self.session.unload_conn({"name": name})
        except vici.exception.CommandException:
            pass

    def initiate(self, peer: PeerConfig, child: str, timeout_s: float = INITIATE_TIMEOUT_S) -> None:
        self._initiate(child, timeout_s, child=child, ike=peer.conn)

    def child_sas(self, conn: str | None = None) -> list[dict]:
        out = []
        for ike in self._list_sas({"ike": conn} if conn else None):
            for ike_name, ike_sa in ike.items():
                for child in ike_sa.get("child-sas", {}).values():
                    child["ike"] = ike_name
                    child["ike-id"] = ike_sa.get("uniqueid")
                    out.append(child)
        return out

    def find_child(self, name: str) -> str | None:
        """The id of the CHILD_SA with this child name, wherever it is (a rare path: a set-up whose
        child-updown never came; list-sas with a child filter still sends one event per IKE_SA)."""
        for ike in self._list_sas({"child": name}):
            for ike_sa in ike.values():
                for child in ike_sa.get("child-sas", {}).values():
                    if child.get("name") == name:
                        return child.get("uniqueid")
        return None

    def list_sas(self) -> list[dict]:
        """list-sas as charon sends it: one dict per IKE_SA, keyed by its connection name."""
        return self._list_sas()

    def ike_established(self, conn: str) -> bool:
        for ike in self._list_sas({"ike": conn}):
            for ike_sa in ike.values():
                if ike_sa.get("state") == "ESTABLISHED":
                    return True
        return False

    def conns(self) -> list[str]:
        with self.bounded("list-conns"):
            return [name for c in self.session.list_conns() for name in _decode(c)]

    def terminate_child(self, uniqueid: str, timeout_s: float = TERMINATE_TIMEOUT_S) -> None:
        self._terminate(f"child {uniqueid}", timeout_s, **{"child-id": uniqueid})

    def unload_peer(self, peer: PeerConfig) -> None:
        for conn in peer.members():
            self.unload_conn(conn)

    def _request(self, method: str, what: str, message: dict) -> None:
        try:
            with self.bounded(what):
                getattr(self.session, method)(message)
        except vici.exception.CommandException as exc:
            raise KeyingError(f"{what} refused by charon: {exc}") from None


def listen(path: str, events: tuple[str, ...] = ("child-updown", "ike-updown", "child-rekey"),
           poll: float = 0.5, timeout: float = COMMAND_TIMEOUT_S) -> Iterator[tuple[str | None, dict, float]]:
    """Yield (event name, decoded payload, monotonic time) from charon; (None, {}, t) every
    ``poll`` seconds without an event, so that the consumer can stop. The registration must be
    answered within ``timeout`` (else :class:`CharonTimeout`); the wait for events is unbounded."""
    session = connect(path, timeout)
    sock: BoundedSocket = session.transport.socket
    stream = session.listen(list(events), timeout=poll)
    try:
        sock.deadline = time.monotonic() + timeout + poll  # registered, then the first poll
        try:
            first = next(stream)
        except TimeoutError:
            raise CharonTimeout("listen", timeout) from None
        sock.deadline = None
        for name, payload in itertools.chain([first], stream):
            if name is None:
                yield None, {}, time.monotonic()
            else:
                yield _s(name), _decode(payload), time.monotonic()
    finally:
        sock.close()  # first: vici's own clean-up would unregister and wait for charon's answer
        with contextlib.suppress(Exception):
            stream.close()
