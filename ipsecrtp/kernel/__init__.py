"""The kernel over netlink, on pyroute2's marshalling.

pyroute2's package ``__init__`` imports the whole library (NDB, IPDB, conntrack, nl80211, WireGuard,
... 165 modules) although ipsecrtp uses only its netlink core and ``IPRoute``. Every controller start
paid for that, most of all in the real-kernel tier's TCG guest, where each module costs a 9p lookup
and slow emulated CPU. So the package is registered here without running its ``__init__``: the
submodules ipsecrtp imports (``pyroute2.netlink...``, ``pyroute2.iproute``) load alone, and the
first use of a name only that ``__init__`` defines (``from pyroute2 import NDB``, anywhere in the
process) still runs it in full, so other code sees pyroute2 as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2.iproute import IPRoute


def _defer_pyroute2_init() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the import below fails as it would have
    pkg = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562 module attribute hook)
        if name.startswith("__") or "__getattr__" not in vars(pkg):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:  # a submodule: load just that
            return importlib.import_module(f"pyroute2.{name}")
        del pkg.__getattr__  # run the real __init__ once, then look again
        spec.loader.exec_module(pkg)  # type: ignore[union-attr]
        return getattr(pkg, name)

    pkg.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["pyroute2"] = pkg


_defer_pyroute2_init()

from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402 (after the package is registered)


def ip_route() -> IPRoute:
    """A pyroute2 ``IPRoute`` (rtnetlink), its module imported on first use: with kernel-netlink the
    controller never routes, so it never loads it."""
    from pyroute2.iproute import IPRoute as _IPRoute

    return _IPRoute()


__all__ = ["NetlinkError", "ip_route"]
