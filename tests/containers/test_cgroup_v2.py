"""The cgroup v2 code path on the real kernel: a throwaway host whose /sys/fs/cgroup is replaced by a
cgroup2 mount (its mount namespace is private), as on a unified-hierarchy machine.

On a hybrid machine the memory, pids and cpu controllers are bound to v1 hierarchies, so the unified one
offers none of them: limits are refused with one line there, and the rest - creating the cgroup, moving
init and exec'd processes into it, removing it - runs exactly as on a v2 machine.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.kernel


def test_containers_on_a_unified_hierarchy(bare_rhost):
    rhost = bare_rhost
    rhost.run("sh", "-c", "umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup")
    rhost.netctl("image", "build-busybox")
    out = rhost.container("--rm", "--network", "none", "busybox", "cat", "/proc/self/cgroup").stdout
    # (/proc/self/cgroup also names the machine's v1 hierarchies, mounted or not.) The v2 line shows the
    # container's cgroup as "/": it was made and joined, and its cgroup namespace is rooted there.
    assert "0::/" in out.splitlines()
    cid = rhost.start("v2", network="none")
    inner = f"/sys/fs/cgroup/{rhost.cgroup_parent}/{cid}"
    procs = rhost.run("cat", f"{inner}/cgroup.procs").stdout.split()
    assert len(procs) == 1
    exec_cgroup = rhost.exec("v2", "sh", "-c", "cat /proc/self/cgroup; sleep 0.3").stdout
    assert "0::/" in exec_cgroup.splitlines()
    available = rhost.run("cat", "/sys/fs/cgroup/cgroup.controllers").stdout.split()
    if "memory" not in available:
        refused = rhost.container("--rm", "--network", "none", "--memory", "16m", "busybox", "true", check=False)
        assert refused.returncode == 2 and "memory cgroup controller is not available" in refused.stderr
    rhost.netctl("rm", "-f", "v2")
    assert rhost.run("test", "-d", inner, check=False).returncode != 0
    assert not os.path.isdir(f"/sys/fs/cgroup/unified/{rhost.cgroup_parent}/{cid}")
