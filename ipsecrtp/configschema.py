"""The controller TOML's shape and types, checked with msgspec before ``config.load``'s own checks.

``config.load`` checks meanings (an address is an address, a PSK file is private, a strategy
exists); this schema checks, for the whole file at once, that every table and key has the type it
must have (``dry_run = "false"`` is a string, not false; ``interfaces = "wan0"`` is not a list),
and ``ipsecrtp check-config`` also refuses keys the schema does not know (a typo such as
``teardown_dealy`` otherwise silently keeps the default). A test reads ``config.py`` and fails when
it reads a key missing here, so that the two stay one list.

Errors are one line naming the key: ``FILE: peer[0].ike_pool: must be a whole number, not '4'``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec

from .sip.limits import DEFAULT_LIMITS


class Peer(msgspec.Struct, omit_defaults=True):
    name: str
    psk_file: str = ""
    auth: str = ""
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    ike_local: str = ""
    ike_remote: str = ""
    ike_remote_id: str = ""
    local_media: list[str] = []
    remote_media: list[str] = []
    esp_proposals: list[str] = []
    strategy: str = ""
    ike_pool: int = 1
    protect: str = ""
    signalling: str = ""
    srtp: str = ""
    allow_keys_over_clear_signalling: bool = False
    legs: str = ""
    esp_mode: str = ""


# the caps (max_* keys of [controller], config._limits) are whole numbers, each named in Limits
LIMIT_KEYS = tuple(DEFAULT_LIMITS.__dataclass_fields__)

Controller = msgspec.defstruct("Controller", [
    ("interfaces", list[str]),
    ("vici", str),
    ("name", str, ""),
    ("sip_ports", list[int], []),
    ("rtp_ports", str, ""),
    ("backend", str, ""),
    ("media_timeout", float, 30.0),
    ("teardown_delay", float, 1.0),
    ("budget", str, ""),
    ("dry_run", bool, False),
    ("nat_private", list[str], []),
    ("nat_translate", bool, True),
    ("media_interfaces", list[str], []),
    ("metrics", str, ""),
    ("state_dir", str, ""),
    ("control_socket", str, ""),
    ("ng_listen", str, ""),
    ("ng_allow", list[str], []),
    ("sip_trusted", list[str], []),
    *((k, int, getattr(DEFAULT_LIMITS, k)) for k in LIMIT_KEYS),
])


class File(msgspec.Struct):
    controller: Controller  # type: ignore[valid-type]
    peer: list[Peer] = []


KNOWN = {
    "": ("controller", "peer"),
    "controller": tuple(Controller.__struct_fields__),
    "peer": tuple(Peer.__struct_fields__),
}
HUMAN = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string",
         "array": "a list", "object": "a table"}
_ERROR = re.compile(r"^(?:Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`|(?P<other>.*?))"
                    r"(?: - at `\$(?P<path>[^`]*)`)?$")


class SchemaError(ValueError):
    """One line: the key (``controller.x`` or ``peer[N].x``) and what is wrong with it."""


def _value_at(raw: dict, path: str) -> Any:
    node: Any = raw
    for name, index in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", path):
        try:
            node = node[name] if name else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _message(exc: msgspec.ValidationError, raw: dict) -> str:
    m = _ERROR.match(str(exc))
    assert m is not None  # the pattern's last branch takes any text
    path = (m.group("path") or "").lstrip(".")
    if m.group("want"):
        wants = [HUMAN.get(w.strip(), w.strip()) for w in m.group("want").split("|") if w.strip() != "null"]
        return f"{path or 'the file'}: must be {' or '.join(wants)}, not {_value_at(raw, m.group('path') or '')!r}"
    other = m.group("other") or str(exc)
    missing = re.match(r"Object missing required field `([^`]+)`", other)
    if missing:
        return f"{path + '.' if path else ''}{missing.group(1)}: missing (a required key)"
    return f"{path or 'the file'}: {other}"


def validate(raw: dict) -> None:
    """Every table and key of the file has its type; :class:`SchemaError` naming the first that has not."""
    if not isinstance(raw.get("controller"), dict):
        raise SchemaError("[controller]: missing (a required table)")
    try:
        msgspec.convert(raw, type=File, strict=True)
    except msgspec.ValidationError as exc:
        raise SchemaError(_message(exc, raw)) from None


def unknown_keys(raw: dict) -> list[str]:
    """Keys the schema does not know, each with the closest known one: ``controller.teardown_dealy
    (did you mean teardown_delay?)``."""
    out = []

    def check(where: str, table: dict, known: tuple[str, ...]) -> None:
        for k in table:
            if k not in known:
                close = difflib.get_close_matches(k, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                out.append(f"{where}{'.' if where else ''}{k}: unknown key{hint}")

    check("", raw, KNOWN[""])
    if isinstance(raw.get("controller"), dict):
        check("controller", raw["controller"], KNOWN["controller"])
    for i, p in enumerate(raw.get("peer") or []):
        if isinstance(p, dict):
            check(f"peer[{i}]", p, KNOWN["peer"])
    return out


def check_file(path: str) -> tuple[object | None, list[str]]:
    """``ipsecrtp check-config``: the configuration as ``run`` would load it (every check, the PSK
    files read) and the unknown keys; nothing is started and nothing is asked of charon. Returns the
    loaded configuration (None if it failed) and the problems, one line each."""
    import tomllib

    from .config import ConfigError, load

    try:
        cfg = load(path)
    except ConfigError as exc:
        return None, [str(exc)]
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    return cfg, [f"{path}: {u}" for u in unknown_keys(raw)]
