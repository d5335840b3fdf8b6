"""docs/library.md runs: each ```python block of it, inside a throwaway host, so the documentation
cannot rot. The blocks' ROOT, ROOT2 and STORE assignments are replaced by the host's paths and the URL
of an etcd started inside the host (for the overlay example)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

pytestmark = pytest.mark.kernel

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "docs", "library.md")
SETTING = re.compile(r'^(ROOT|ROOT2|STORE) = ".*"$', re.MULTILINE)


def blocks() -> list[str]:
    with open(DOC) as f:
        return re.findall(r"^```python\n(.*?)^```$", f.read(), re.MULTILINE | re.DOTALL)


def runnable(block: str, **settings: str) -> str:
    def setting(match: re.Match) -> str:
        return f"{match.group(1)} = {settings[match.group(1)]!r}"

    return SETTING.sub(setting, block)


def test_the_document_has_the_examples_the_suite_runs():
    found = blocks()
    assert len(found) == 2
    assert "create_network(\"web\"" in found[0] and "driver=\"overlay\"" in found[1]


def test_the_bridge_example_runs_and_leaves_the_host_as_it_found_it(host):
    before = host.snapshot()
    out = host.py(runnable(blocks()[0], ROOT=host.root), timeout=60).stdout
    assert "eth0 ['10.77.0.2/24'] ['10.77.0.3/24'] ['8080->80/tcp']" in out
    assert "1 received" in out
    assert "10.77.0.0/24: 2 of 253 addresses" in out
    assert "network 'web' has active endpoints" in out
    after = host.snapshot()
    store = after.pop("store")  # made by the example: its tables are empty again
    assert not any(rows for table, rows in store.items() if table != "user_version"), store
    before.pop("store")
    assert after == before


def test_the_overlay_example_runs_against_etcd(host):
    from overlay.etcd_server import ETCD, LabEtcdServer

    if not os.access(ETCD, os.X_OK) or shutil.which("etcdctl") is None:
        pytest.skip("etcd is not installed; run: sudo bash scripts/bootstrap.sh")
    pytest.importorskip("etcd3gw")
    etcd = LabEtcdServer(host, "127.0.0.1")
    try:
        etcd.start()
        code = runnable(blocks()[1], ROOT=host.root, ROOT2=host.root + "-2", STORE=etcd.store_url)
        out = host.py(code, timeout=60).stdout
    finally:
        etcd.close()
    scope, vni, mtu = out.splitlines()[0].split()
    assert scope == "global" and int(vni) > 0 and int(mtu) > 0
    assert "10.99.0.0/24: 0 allocated" in out
