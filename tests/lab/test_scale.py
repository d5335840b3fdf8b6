"""The 10-host x 10-container lab (topology_examples/scale-10x10.yaml): it comes up, the full matrix
(100 x 99 pairs, by address and by name) passes, and `down` leaves the host as it was.

Prints the figures the issue asks for: `lab up` time and the daemons' memory (RSS).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import pytest

from lab.conftest import EXAMPLES
from lab.test_lab import assert_same

pytestmark = pytest.mark.kernel


@pytest.mark.timeout(900)
def test_scale_10x10(lab_host):
    path = os.path.join(EXAMPLES, "scale-10x10.yaml")
    before = lab_host.state()
    try:
        start = time.monotonic()
        lab_host.lab("up", path, timeout=600)
        up_s = time.monotonic() - start
        report = json.loads(lab_host.lab("status", "--format", "json", path).stdout)
        assert report["missing_containers"] == [] and len(report["containers"]) == 100
        assert all(c["state"] == "running" for c in report["containers"])
        rss = [h["daemon_rss_kib"] / 1024 for h in report["hosts"]]
        assert all(h["daemon_alive"] for h in report["hosts"])
        start = time.monotonic()
        tested = lab_host.lab("test", "--failures-only", path, check=False, timeout=600)
        test_s = time.monotonic() - start
        assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
        assert "PASS: 19800/19800 rows" in tested.stdout, tested.stdout[-2000:]
    finally:
        start = time.monotonic()
        lab_host.lab("down", path, check=False, timeout=600)
        down_s = time.monotonic() - start
    assert_same(lab_host, before)
    print(f"\nscale 10x10: lab up {up_s:.1f} s (the lab's own figure: {report['up_seconds']:.1f} s), "
          f"matrix of 19800 probes {test_s:.1f} s, lab down {down_s:.1f} s; daemon RSS per host "
          f"median {statistics.median(rss):.1f} MiB, max {max(rss):.1f} MiB, total {sum(rss):.0f} MiB")
