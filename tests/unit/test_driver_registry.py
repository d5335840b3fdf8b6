"""drivers/registry.py: drivers by name, imported on first use only; the contract's answers per driver."""

from __future__ import annotations

import subprocess
import sys

import pytest

from drivers import registry
from libnetwork.errors import InvalidArgument


def test_asking_for_the_bridge_driver_imports_no_other_driver():
    code = ("import sys\nfrom drivers import registry\nregistry.get('bridge')\n"
            "print(sorted(m for m in sys.modules if m.startswith('drivers.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['drivers.base', 'drivers.bridge', 'drivers.registry']"


def test_an_unknown_driver_names_the_ones_a_user_may_pick():
    with pytest.raises(InvalidArgument,
                       match=r"unknown network driver 'macvlan'; available drivers: bridge, null, overlay"):
        registry.get("macvlan")


def test_host_side_names_come_from_the_driver():
    endpoint_id = "0123456789abcdef" * 4
    assert registry.get("bridge").host_ifname(endpoint_id) == "nv0123456789abc"
    assert registry.get("overlay").host_ifname(endpoint_id) == "ny0123456789abc"
    assert registry.get("null").host_ifname(endpoint_id) == ""
    assert registry.get("external").host_ifname(endpoint_id) == ""


def test_the_overlay_driver_takes_this_hosts_settings():
    driver = registry.get("overlay", vtep="198.18.0.7", root="/tmp/some-root")
    assert (driver.vtep, driver.root) == ("198.18.0.7", "/tmp/some-root")
    assert (driver.overhead, driver.state_dir) == (50, "overlay")
    assert driver.derived_state("ab" * 32) == {"bridge": "no-" + "ab" * 6, "vxlan": "nx-" + "ab" * 6}
