import os
import secrets

import pytest

from ipsecrtp.netns.lab import Lab

if os.geteuid() != 0:
    pytest.skip("lab tests need root (network namespaces)", allow_module_level=True)


@pytest.fixture(scope="module")
def lab():
    """A lab with a unique name; everything it created is removed even when a test fails."""
    lab = Lab("t" + secrets.token_hex(4))
    try:
        lab.up(media_timeout=30.0)
        lab.start_uas()
        yield lab
    finally:
        lab.down()
        leftovers = [n for n in os.popen("ip netns list").read().split() if n.startswith(f"irtp-{lab.name}-")]
        assert leftovers == [], f"namespaces left behind: {leftovers}"
        assert not os.path.exists(lab.dir)
