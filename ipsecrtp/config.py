"""Controller configuration (TOML). Every error is one line naming the file and the field."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, fields

from .configschema import SchemaError, validate
from .credentials import CredentialError, Pubkey, read_psk, read_pubkey
from .selectors import PeerConfig
from .sip.limits import DEFAULT_LIMITS, Limits


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ControllerConfig:
    interfaces: tuple[str, ...]
    sip_ports: frozenset[int]
    vici: str
    peers: tuple[PeerConfig, ...]
    media_timeout: float | None  # None: never (an offline replay judges media from the capture)
    backend: str  # auto, kernel-netlink, kernel-libipsec
    teardown_delay: float = 1.0  # seconds an SA outlives its dialog, for trailing RTP
    name: str = ""  # this gateway's name in logs and timelines
    budget: str = "e721-toll"  # post-dial-delay profile the per-call verdict uses
    dry_run: bool = False  # track and decide, never key
    nat_private: tuple[str, ...] = ()  # extra prefixes the NAT tests treat as private
    nat_translate: bool = True  # key flows as they are on the wire where a NAT rewrote or hid them
    # interfaces watched for media only (router mode: the phones' LAN), where latching is checked
    media_interfaces: tuple[str, ...] = ()
    metrics: tuple[str, int] | None = None  # the Prometheus exporter's address and port; None: off
    state_dir: str = ""  # the journal of keyed calls a restarted controller adopts ("": /var/lib/ipsecrtp/NAME)
    limits: Limits = DEFAULT_LIMITS  # caps on what hostile input can make the controller hold (max_* keys)
    control_socket: str = ""  # the live views' Unix socket ("": see control_path)
    # rtpengine's ng control endpoint for a SIP proxy (None: off) and the source prefixes it serves
    ng_listen: tuple[str, int] | None = None
    ng_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # SIP sources never held to max_sip_per_source_per_s besides the peers' addresses and media
    # prefixes (a proxy or SBC on an address of its own)
    sip_trusted: tuple[str, ...] = ()

    @property
    def control_path(self) -> str:
        """Where the control socket is: configured, else beside the journal's directory (not in it:
        that holds journal entries only), else under /run."""
        if self.control_socket:
            return self.control_socket
        if self.state_dir:
            return os.path.normpath(self.state_dir) + ".sock"
        return os.path.join("/run/ipsecrtp", f"{self.name or 'controller'}.sock")


def _ports(value: str, where: str) -> tuple[int, int]:
    lo, _, hi = str(value).partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ConfigError(f"{where}: port range must look like 10000-20000, not {value!r}") from None
    if not 1024 <= a <= b <= 65535:
        raise ConfigError(f"{where}: port range {value!r} out of 1024-65535")
    return a, b


def _addr(value: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an IP address") from None


def _listen(value: str, where: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464': an address to bind (a name would hide which interface)."""
    host, _, port = str(value).rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {value!r} must look like 127.0.0.1:9464")
    return _addr(host.strip("[]"), where), int(port)


def _prefixes(values, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: needs a non-empty list of prefixes")
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(v, strict=True)))
        except ValueError:
            raise ConfigError(f"{where}: {v!r} is not a network prefix") from None
    return tuple(out)


def _socket_path(value, where: str) -> str:
    """An absolute path a Unix socket can have (the kernel caps it at 107 bytes)."""
    if not isinstance(value, str) or (value and (not value.startswith("/") or len(value.encode()) > 107)):
        raise ConfigError(f"{where}: must be an absolute path of at most 107 bytes, not {value!r}")
    return value


STRATEGIES = {"a": "ike-per-call", "b": "child-per-call", "c": "speculative", "0": "pre-keyed"}


DEFAULT_IKE_POOL = 1
MAX_IKE_POOL = 64


def _pool(value, where: str) -> int:
    """IKE_SAs kept per peer: each runs one exchange at a time, so calls/s <= pool / RTT."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_IKE_POOL:
        raise ConfigError(f"{where}: must be a whole number from 1 to {MAX_IKE_POOL}, not {value!r}")
    return value


def _protect(value, where: str) -> str:
    if value not in ("required", "opportunistic"):
        raise ConfigError(f"{where}: must be \"required\" or \"opportunistic\", not {value!r}")
    return value


def _choice(value, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: must be {' or '.join(repr(c) for c in choices)}, not {value!r}")
    return value


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, not {value!r}")
    return value


def check_signalling(peer: PeerConfig, where: str) -> None:
    """The per-peer rules that depend on how the peer's SIP crosses the WAN (README "Keys in SDP"):
    ``pre-keyed`` derives every call's keys from the per-peer secret and the dialog, and over clear
    SIP anyone on the path reads and can inject that dialog (a Call-ID used again after the
    controller forgot it would give the same keys and SPIs: ESP replayable); ``srtp = "skip"`` leaves
    SRTP calls unkeyed, which ``protect = "required"``'s data plane would drop as cleartext."""
    if peer.strategy == "pre-keyed" and peer.signalling != "protected" and not peer.allow_keys_over_clear_signalling:
        raise ConfigError(f"{where}: strategy \"pre-keyed\" refused: the peer's SIP is seen in clear (signalling = "
                          f"\"clear\"); set signalling = \"protected\" (TLS or a trusted private link) or "
                          f"allow_keys_over_clear_signalling = true")
    if peer.legs == "shared" and peer.strategy != "child-per-call":
        raise ConfigError(f"{where}: legs = \"shared\" needs strategy = \"child-per-call\" (one CHILD_SA on the "
                          f"peer's long-lived IKE_SA, re-keyed as legs join and leave), not {peer.strategy!r}")
    if peer.srtp == "skip" and peer.protect == "required":
        raise ConfigError(f"{where}: srtp = \"skip\" needs protect = \"opportunistic\" (\"required\" drops every "
                          f"unkeyed RTP packet to the peer, the skipped SRTP calls' included)")


def _limits(c: dict, where: str) -> Limits:
    """The ``max_*`` keys of [controller], each a whole number of at least 1 (a cap of 0 would refuse all)."""
    values = {}
    for f in fields(Limits):
        v = c.get(f.name, getattr(DEFAULT_LIMITS, f.name))
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{where}.{f.name}: must be a whole number of at least 1, not {v!r}")
        values[f.name] = v
    return Limits(**values)


def _strategy(value: str, where: str) -> str:
    """Keying strategy, by name or by the letter the design discussion uses (a, b, c)."""
    v = STRATEGIES.get(str(value), str(value))
    if v not in STRATEGIES.values():
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(STRATEGIES.values())} (or a, b, c, 0)")
    return v


def _credentials(p: dict, where: str) -> tuple[str, bytes, Pubkey | None]:
    """(auth, PSK, certificate credentials): read here, from files only their owner may read. A PSK
    is needed for ``auth = "psk"`` and for strategy pre-keyed (its keys derive from it)."""
    auth = _choice(p.get("auth", "psk"), f"{where}.auth", ("psk", "pubkey"))
    needed = ["psk_file"] if auth == "psk" else ["cert_file", "key_file", "ca_file"]
    for key in ("name", *needed):
        if not p.get(key):
            raise ConfigError(f"{where} needs {key!r}" + (f" (auth = {auth!r})" if key != "name" else ""))
    try:
        psk = read_psk(p["psk_file"]) if p.get("psk_file") else b""
        pub = read_pubkey(p["cert_file"], p["key_file"], p["ca_file"]) if auth == "pubkey" else None
    except CredentialError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not psk and _strategy(p.get("strategy", "child-per-call"), f"{where}.strategy") == "pre-keyed":
        raise ConfigError(f"{where}: strategy \"pre-keyed\" derives its keys from the peer's pre-shared key: "
                          "it needs 'psk_file'")
    return auth, psk, pub


def _peer(p: dict, where: str, rtp: tuple[int, int]) -> PeerConfig:
    """One [[peer]] table."""
    auth, psk, pub = _credentials(p, where)
    name = p["name"]
    return PeerConfig(
        name=name,
        ike_local=_addr(p.get("ike_local", ""), f"{where}.ike_local"),
        ike_remote=_addr(p.get("ike_remote", ""), f"{where}.ike_remote"),
        local_media=_prefixes(p.get("local_media"), f"{where}.local_media"),
        remote_media=_prefixes(p.get("remote_media"), f"{where}.remote_media"),
        psk=psk,
        esp_proposals=tuple(p.get("esp_proposals", ("aes128gcm16", "aes128-sha256"))),
        rtp_ports=rtp,
        strategy=_strategy(p.get("strategy", "child-per-call"), f"{where}.strategy"),
        ike_remote_id=_addr(p["ike_remote_id"], f"{where}.ike_remote_id") if p.get("ike_remote_id") else "",
        ike_pool=_pool(p.get("ike_pool", DEFAULT_IKE_POOL), f"{where}.ike_pool"),
        protect=_protect(p.get("protect", "required"), f"{where}.protect"),
        srtp=_choice(p.get("srtp", "protect"), f"{where}.srtp", ("protect", "skip")),
        signalling=_choice(p.get("signalling", "clear"), f"{where}.signalling", ("clear", "protected")),
        allow_keys_over_clear_signalling=_flag(p.get("allow_keys_over_clear_signalling", False),
                                               f"{where}.allow_keys_over_clear_signalling"),
        legs=_choice(p.get("legs", "per-leg"), f"{where}.legs", ("per-leg", "shared")),
        esp_mode=_choice(p.get("esp_mode", "tunnel"), f"{where}.esp_mode", ("tunnel", "transport")),
        auth=auth,
        pubkey=pub,
    )


def _ng_allow(values, where: str) -> tuple[str, ...]:
    """Who may send ng commands: addresses or prefixes, listed explicitly (a proxy's own address)."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: needs a non-empty list of addresses or prefixes")
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(str(v), strict=True)))
        except ValueError:
            raise ConfigError(f"{where}: {v!r} is not an address or prefix") from None
    return tuple(out)


def load(path: str) -> ControllerConfig:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:  # the whole file's shape and types first (configschema.py), then what each value means
        validate(raw)
    except SchemaError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    c = raw.get("controller", {})
    try:
        interfaces = tuple(c["interfaces"])
        vici = str(c["vici"])
    except KeyError as exc:
        raise ConfigError(f"{path}: [controller] needs {exc.args[0]!r}") from None
    sip_ports = frozenset(int(p) for p in c.get("sip_ports", [5060]))
    rtp = _ports(c.get("rtp_ports", "10000-20000"), f"{path}: controller.rtp_ports")
    backend = c.get("backend", "auto")
    if backend not in ("auto", "kernel-netlink", "kernel-libipsec"):
        raise ConfigError(f"{path}: controller.backend must be auto, kernel-netlink or kernel-libipsec")
    peers = [_peer(p, f"{path}: peer[{i}]", rtp) for i, p in enumerate(raw.get("peer", []))]
    for i, p in enumerate(peers):
        check_signalling(p, f"{path}: peer[{i}]")
    if not peers:
        raise ConfigError(f"{path}: no [[peer]] configured")
    from .timing import BUDGETS

    budget = str(c.get("budget", "e721-toll"))
    if budget not in BUDGETS:
        raise ConfigError(f"{path}: controller.budget must be one of {', '.join(BUDGETS)}")
    nat_private = _prefixes(c["nat_private"], f"{path}: controller.nat_private") if c.get("nat_private") else ()
    return ControllerConfig(interfaces, sip_ports, vici, tuple(peers),
                            float(c.get("media_timeout", 30)), backend, float(c.get("teardown_delay", 1.0)),
                            str(c.get("name", "")), budget, bool(c.get("dry_run", False)), nat_private,
                            bool(c.get("nat_translate", True)), tuple(c.get("media_interfaces", ())),
                            metrics=_listen(c["metrics"], f"{path}: controller.metrics") if c.get("metrics") else None,
                            state_dir=str(c.get("state_dir", "")),
                            limits=_limits(c, f"{path}: controller"),
                            control_socket=_socket_path(c.get("control_socket", ""),
                                                        f"{path}: controller.control_socket"),
                            ng_listen=_listen(c["ng_listen"], f"{path}: controller.ng_listen")
                            if c.get("ng_listen") else None,
                            ng_allow=_ng_allow(c.get("ng_allow", ["127.0.0.1", "::1"]), f"{path}: controller.ng_allow"),
                            sip_trusted=_prefixes(c["sip_trusted"], f"{path}: controller.sip_trusted")
                            if c.get("sip_trusted") else ())
