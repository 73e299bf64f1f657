"""Suite-wide hooks: the real-kernel tier starts at collection so that it overlaps the other tests
(see tests/vmtier.py)."""

from __future__ import annotations

import pytest

from tests import vmtier


@pytest.hookimpl(trylast=True)  # after -k/-m/--deselect have removed what will not run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("collectonly"):
        return
    for item in items:
        if item.get_closest_marker("vm") is None:
            continue
        if any(m.args and m.args[0] for m in item.iter_markers("skipif")):
            continue  # not on this machine (no root, no qemu): the test reports the skip itself
        command = getattr(item.module, "GUEST_COMMAND", None)
        if command is not None:
            vmtier.start(command, item.module.GUEST_TIMEOUT_S)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    vmtier.stop_all()
