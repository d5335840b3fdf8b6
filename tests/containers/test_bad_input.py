"""Bad input to `netctl run` and friends: one clear line on stderr, a non-zero exit, nothing left behind
(no container record or name, no sandbox, endpoint, address or netns, no cgroup)."""

from __future__ import annotations

import os

import pytest

from containers.conftest import CGROUP_ROOT
from harness import new_test_cgroup_parent

pytestmark = pytest.mark.kernel

# (id, run arguments, exit code, words the message must contain)
CASES = [
    ("unknown-image", ["--network", "net", "nosuchimage", "true"], 3, ["image 'nosuchimage' not found"]),
    ("bad-image-name", ["--network", "net", "Bad/Name!", "true"], 2, ["invalid image name"]),
    ("missing-executable", ["--network", "net", "busybox", "no-such-command"], 127, ["no-such-command", "not found"]),
    ("not-executable", ["--network", "net", "busybox", "/etc/passwd"], 126, ["/etc/passwd"]),
    ("bad-memory", ["--memory", "lots", "--network", "net", "busybox", "true"], 2, ["--memory", "lots"]),
    ("memory-too-small", ["--memory", "1k", "--network", "net", "busybox", "true"], 2, ["--memory", "minimum"]),
    ("bad-cpus", ["--cpus", "-1", "--network", "net", "busybox", "true"], 2, ["--cpus"]),
    ("bad-pids", ["--pids-limit", "zero", "--network", "net", "busybox", "true"], 2, ["--pids-limit"]),
    ("name-collision", ["--name", "taken", "--network", "net", "busybox", "true"], 4, ["'taken'", "already used"]),
    ("bad-name", ["--name", "../x", "--network", "net", "busybox", "true"], 2, ["invalid container name"]),
    ("ip-outside-subnet", ["--ip", "10.99.0.5", "--network", "net", "busybox", "true"], 2, ["10.99.0.5"]),
    ("ip-taken", ["--ip", "10.88.0.1", "--network", "net", "busybox", "true"], 4, ["10.88.0.1"]),
    ("unknown-network", ["--network", "nosuchnet", "busybox", "true"], 3, ["network 'nosuchnet' not found"]),
    ("none-plus-net", ["--network", "none", "--network", "net", "busybox", "true"], 2, ["none", "cannot be combined"]),
    ("ip-on-none", ["--network", "none", "--ip", "10.88.0.9", "busybox", "true"], 2, ["--ip"]),
    ("bad-volume", ["-v", "./relative:/x", "--network", "net", "busybox", "true"], 2, ["-v", "absolute"]),
    ("bad-volume-name", ["-v", "no/pe:/x", "--network", "net", "busybox", "true"], 2, ["volume name", "no/pe"]),
    ("missing-volume", ["-v", "/no/such/dir:/x", "--network", "net", "busybox", "true"], 2, ["/no/such/dir", "does not exist"]),
    ("bad-capability", ["--cap-add", "SUPERPOWER", "--network", "net", "busybox", "true"], 2, ["SUPERPOWER"]),
    ("bad-user", ["-u", "nobody-here", "--network", "net", "busybox", "true"], 126, ["nobody-here"]),
    ("bad-workdir", ["-w", "relative", "--network", "net", "busybox", "true"], 2, ["-w", "absolute"]),
    ("bad-hostname", ["--hostname", "bad_host!", "--network", "net", "busybox", "true"], 2, ["--hostname"]),
    ("bad-port", ["-p", "99999:80", "--network", "net", "busybox", "true"], 2, ["99999"]),
    ("bad-env", ["-e", "1BAD=x", "--network", "net", "busybox", "true"], 2, ["1BAD"]),
    ("unknown-flag", ["--frobnicate", "busybox", "true"], 2, ["--frobnicate"]),
    ("no-image", [], 2, ["IMAGE"]),
]


def container_state(rhost) -> dict:
    snapshot = rhost.host.snapshot()
    containers = rhost.path("/run/netctl/containers")
    names = os.path.join(containers, ".names")
    return {
        "netns": snapshot["netns"],
        "links": snapshot["links"],
        "store": {t: snapshot["store"].get(t) for t in ("endpoints", "sandboxes", "ipam_addresses")},
        "containers": sorted(os.listdir(containers)) if os.path.isdir(containers) else [],
        "names": sorted(os.listdir(names)) if os.path.isdir(names) else [],
        "cgroups": sorted(
            os.path.join(top, d)
            for top in os.listdir(CGROUP_ROOT)
            if os.path.isdir(os.path.join(CGROUP_ROOT, top, rhost.cgroup_parent))
            for d in os.listdir(os.path.join(CGROUP_ROOT, top, rhost.cgroup_parent))
            if not d.startswith(("cgroup.", "memory.", "cpu", "pids.", "notify", "tasks", "blkio", "devices", "freezer", "hugetlb", "io.", "rdma", "misc"))
        ),
    }


@pytest.fixture(scope="module")
def shared(request):
    """One host for all cases (they leave nothing behind, which is the point), with a container
    named `taken` running."""
    
    from harness import Host

    from containers.conftest import RunnerHost, close_runner_host

    parent = new_test_cgroup_parent()
    host = Host.start("badinput")
    try:
        rhost = RunnerHost(host, parent)
        rhost.netctl("image", "build-busybox")
        rhost.netctl("network", "create", "--subnet", "10.88.0.0/24", "net")
        rhost.start("taken")
        yield rhost
    finally:
        close_runner_host(host, parent)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_run_input(shared, case):
    _, args, code, words = case
    before = container_state(shared)
    result = shared.netctl("run", "--rm", *args, check=False, timeout=60)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert container_state(shared) == before


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["stop", "ghost"], 3, ["container 'ghost' not found"]),
        (["kill", "-s", "NOPE", "taken"], 2, ["signal", "NOPE"]),
        (["rm", "taken"], 5, ["running", "rm -f"]),
        (["exec", "ghost", "true"], 3, ["not found"]),
        (["logs", "ghost"], 3, ["not found"]),
        (["inspect", "ghost"], 3, ["not found"]),
        (["wait", "ghost"], 3, ["not found"]),
        (["image", "rm", "ghost"], 3, ["not found"]),
        (["image", "import", "/no/such/file"], 3, ["does not exist"]),
        (["image", "import", "/etc", "x"], 2, ["not an OCI image layout"]),
        (["image", "build-busybox", "--busybox", "/no/busybox"], 3, ["busybox-static"]),
    ],
)
def test_bad_lifecycle_input(shared, argv, code, words):
    before = container_state(shared)
    result = shared.netctl(*argv, check=False, timeout=30)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert container_state(shared) == before
