"""kernel-netlink's fail-closed media: xfrm block policies under charon's per-call policies.

With kernel ESP, charon's CHILD_SAs are xfrm policies the kernel consults for every packet leaving
(locally sent or forwarded). ``protect = "required"`` adds, for each guarded peer media prefix, an
outbound *block* policy on UDP to that prefix on the RTP port range (as aligned port blocks, the
only ranges xfrm matches). Its priority number is above every one charon computes (its largest,
a fallback policy, is under 600,000), so a call's own policy, once installed, always matches
first; before that, while keying fails, while charon is down, after the SA is removed, the packet
is dropped by the kernel instead of leaving in clear (a local sender sees EPERM).

The kernel does not say which call a blocked packet belonged to: the controller reports the
namespace's XfrmOutPolBlock counter as it grows (``media-blocked``), not per call as the
kernel-libipsec sink does.

The priority is also how this module knows its own policies: it reconciles the kernel's block
policies of that priority with the wanted set, so a restart or a reload with other peers
leaves neither a stale policy nor a gap. They stay when the controller stops (fail-closed across
restarts) and go only with ``ipsecrtp run --flush``.
"""

from __future__ import annotations

import ipaddress
import socket

from ..kernel import NetlinkError
from ..kernel.xfrm import (
    XFRM_POLICY_BLOCK,
    XFRM_POLICY_OUT,
    Selector,
    XfrmSocket,
    del_policy,
    dump_policies,
    out_blocked,
    port_blocks,
    set_block_policy,
)

# above charon's policy priorities (kernel_netlink_ipsec.c get_priority: PRIO_BASE 200,000,
# fallback band up to 600,000): lower numbers win, so every CHILD_SA's policy comes first
GUARD_PRIORITY = 1_000_000


class XfrmGuardError(RuntimeError):
    pass


def wanted(media_prefixes: list[str], rtp: tuple[int, int]) -> set[Selector]:
    """The block policies' selectors: any source, UDP to each prefix, destination port in range."""
    out = set()
    for prefix in media_prefixes:
        net = ipaddress.ip_network(prefix, strict=False)  # as the kernel reads it back
        for port, mask in port_blocks(*rtp):
            out.add(Selector("::/0" if net.version == 6 else "0.0.0.0/0", str(net), socket.IPPROTO_UDP, 0,
                             port, None, mask))
    return out


class XfrmGuard:
    """The same surface as kernel-libipsec's DataPlane where the controller and executor use it."""

    sink_fd: int | None = None  # nothing to read: the kernel drops what it blocks

    def __init__(self) -> None:
        try:
            self.sock = XfrmSocket()
        except OSError as exc:
            raise XfrmGuardError(f"cannot open NETLINK_XFRM: {exc}") from None
        self.base = max(out_blocked(), 0)

    def installed(self) -> set[Selector]:
        """This module's block policies in the kernel now."""
        return {p.selector for p in dump_policies(self.sock)
                if p.dir == XFRM_POLICY_OUT and p.action == XFRM_POLICY_BLOCK and p.priority == GUARD_PRIORITY}

    def install(self, media_prefixes: list[str], rtp: tuple[int, int], required: bool,
                reach: list[str] | None = None) -> None:
        """The block policies for the guarded prefixes (``reach`` is kernel-libipsec's concern:
        with kernel ESP charon routes what its policies cover)."""
        del reach
        self._reconcile(wanted(media_prefixes, rtp) if required else set())

    def guard(self, media_prefixes: list[str], rtp: tuple[int, int], required: bool, reach: list[str]) -> None:
        """The peers changed (a reload): new policies first, then the stale ones go, so a prefix
        guarded before and after is never unguarded in between."""
        self.install(media_prefixes, rtp, required, reach)

    def _reconcile(self, want: set[Selector]) -> None:
        have = self.installed()
        try:
            for sel in sorted(want - have, key=repr):
                set_block_policy(self.sock, sel, XFRM_POLICY_OUT, GUARD_PRIORITY)
            for sel in sorted(have - want, key=repr):
                try:
                    del_policy(self.sock, sel, XFRM_POLICY_OUT)
                except NetlinkError as exc:
                    if exc.code != 2:  # ENOENT: gone meanwhile
                        raise
        except NetlinkError as exc:
            raise XfrmGuardError(f"xfrm block policy: {exc}") from None

    def blocked(self) -> int:
        """Packets the namespace's block policies dropped since this guard was made."""
        n = out_blocked()
        return max(n - self.base, 0) if n >= 0 else 0

    def ensure_tunnel_route(self) -> None:
        """Nothing to route: kernel ESP transforms the packets its policies match."""

    def close(self, flush: bool = False) -> None:
        if flush:
            self._reconcile(set())
        self.sock.close()
