"""Pre-keyed per-call SAs: 0 RTT on the call's path.

Both gateways derive the same ESP SAs for a call from the per-peer secret they already share (the
PSK file) and the dialog's identifiers, with HKDF-SHA256 (RFC 5869), and install them in the kernel
with xfrm directly (no IKE exchange). Trade-offs, said plainly: no forward secrecy per call (whoever
learns the per-peer secret can derive every call's keys, past ones included), so that secret must be
rotated (a new PSK file on both gateways; calls set up after the change use it); and the dialog
identifiers are public, so the secret alone protects the keys. IKE (strategies a-c) has neither
weakness. Needs kernel ESP (kernel-netlink); kernel-libipsec has no xfrm ESP to program.
"""

from __future__ import annotations

from ..kernel.xfrm import (
    XFRM_MODE_TUNNEL,
    XFRM_POLICY_FWD,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    Selector,
    XfrmSocket,
    add_esp_sa,
    add_policy,
    del_policy,
    del_sa,
)
from ..media import Endpoint
from .derive import DirectionKeys


def _reqid(spi: int) -> int:
    return (spi & 0xFFFF) | 0x10000


def install(sock: XfrmSocket, keys: tuple[DirectionKeys, ...], local_gw: str,
            pairs: list[tuple[Endpoint, Endpoint]]) -> None:
    """SAs for both directions and policies for each (local endpoint, remote endpoint) pair."""
    done_sa: list[DirectionKeys] = []
    done_pol: list[tuple[Selector, int]] = []
    try:
        for k in keys:
            add_esp_sa(sock, k.src, k.dst, k.spi, k.enc, k.auth, mode=XFRM_MODE_TUNNEL, reqid=_reqid(k.spi))
            done_sa.append(k)
        out = next(k for k in keys if k.src == local_gw)
        back = next(k for k in keys if k.dst == local_gw)
        for lo, re in pairs:
            sel_out = Selector(lo.address, re.address, 17, lo.port, re.port)
            sel_in = Selector(re.address, lo.address, 17, re.port, lo.port)
            add_policy(sock, sel_out, XFRM_POLICY_OUT, out.src, out.dst, _reqid(out.spi))
            done_pol.append((sel_out, XFRM_POLICY_OUT))
            for d in (XFRM_POLICY_IN, XFRM_POLICY_FWD):
                add_policy(sock, sel_in, d, back.src, back.dst, _reqid(back.spi))
                done_pol.append((sel_in, d))
    except Exception:
        remove(sock, done_sa, done_pol)  # all or nothing
        raise


def policies_for(keys: tuple[DirectionKeys, ...], pairs: list[tuple[Endpoint, Endpoint]]) -> list[tuple[Selector, int]]:
    out = []
    for lo, re in pairs:
        out.append((Selector(lo.address, re.address, 17, lo.port, re.port), XFRM_POLICY_OUT))
        for d in (XFRM_POLICY_IN, XFRM_POLICY_FWD):
            out.append((Selector(re.address, lo.address, 17, re.port, lo.port), d))
    return out


def remove(sock: XfrmSocket, keys, pols) -> None:
    for sel, d in pols:
        try:
            del_policy(sock, sel, d)
        except Exception:  # noqa: BLE001 - already gone
            pass
    for k in keys:
        try:
            del_sa(sock, k.src, k.dst, k.spi)
        except Exception:  # noqa: BLE001 - already gone
            pass
