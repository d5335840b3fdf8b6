"""`netctl lab` end to end, nested in a throwaway host: up -> test -> status -> down leaves the host as
it was (links, addresses, routes, nftables, mounts, processes, cgroups, files); bad input and failures
half-way leave nothing either."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time

import pytest

from lab.conftest import LabHost
from harness import diff_snapshots

pytestmark = pytest.mark.kernel

BRIDGES = """
name: bridges
hosts:
  h1:
  h2:
networks:
  web: {driver: bridge, host: h1, subnet: 10.20.0.0/24}
  db: {driver: bridge, host: h1, subnet: 10.21.0.0/24}
  other: {driver: bridge, host: h2, subnet: 10.22.0.0/24}
containers:
  w1: {host: h1, networks: [web]}
  w2: {host: h1, networks: [web, db]}
  d1: {host: h1, networks: [db]}
  o1: {host: h2, networks: [other]}
expect:
  reach: [[w1, w2], [w2, d1]]
  isolated: [[w1, d1], [[w1, w2, d1], [o1]]]
"""


def write(tmp_path, text: str, name: str = "lab.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def assert_same(lab_host: LabHost, before: dict) -> None:
    diff = diff_snapshots(before, lab_host.state())
    assert not diff, f"the lab left something behind:\n{diff}"


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("netctl: "), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def full_cycle(lab_host: LabHost, path: str) -> dict:
    """up, test, status, down; returns the status report."""
    before = lab_host.state()
    try:
        up = lab_host.lab("up", path)
        assert "is up" in up.stdout
        tested = lab_host.lab("test", path, check=False)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "PASS" in tested.stdout and "MISMATCH" not in tested.stdout
        report = json.loads(lab_host.lab("status", "--format", "json", path).stdout)
    finally:
        lab_host.lab("down", path, check=False)
    assert_same(lab_host, before)
    return report


def test_bridge_lab_lifecycle(lab_host, tmp_path):
    path = write(tmp_path, BRIDGES)
    before = lab_host.state()
    lab_host.lab("up", path)
    try:
        again = lab_host.lab("up", path, check=False)
        assert again.returncode == 4 and "already up" in one_line_error(again)
        report = json.loads(lab_host.lab("status", "--format", "json", path).stdout)
        assert {c["name"]: c["state"] for c in report["containers"]} == dict.fromkeys(["w1", "w2", "d1", "o1"], "running")
        assert all(h["daemon_alive"] and h["lease"] and h["link_up"] for h in report["hosts"]), report["hosts"]
        w2 = next(c for c in report["containers"] if c["name"] == "w2")
        assert set(w2["addresses"]) == {"web", "db"}
        table = lab_host.lab("status", path).stdout
        assert "HOST" in table and "198.18.0.1" in table and "w2" in table
        tested = lab_host.lab("test", path, check=False)
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "PASS: 25/25 rows" in tested.stdout, tested.stdout
        as_json = json.loads(lab_host.lab("test", "--format", "json", "--settle", "0", path).stdout)
        assert as_json["ok"] and len(as_json["sections"][0]["rows"]) == 25
    finally:
        down = lab_host.lab("down", path)
    assert "removed" in down.stdout
    assert_same(lab_host, before)
    again = lab_host.lab("down", path)
    assert "not up" in again.stdout
    status = lab_host.lab("status", path, check=False)
    assert status.returncode == 3 and "is not up" in one_line_error(status)


def test_expectation_that_fails_is_reported(lab_host, tmp_path):
    """A topology whose expectation is wrong: `lab test` exits 1 and marks the row."""
    path = write(tmp_path, """
        name: wrong
        hosts: {h1: }
        networks: {a: {driver: bridge, host: h1, subnet: 10.60.0.0/24}}
        containers: {x: {host: h1, networks: [a]}, y: {host: h1, networks: [a]}}
        expect: {isolated: [[x, y]]}
    """)
    lab_host.lab("up", path)
    try:
        tested = lab_host.lab("test", "--failures-only", path, check=False)
    finally:
        lab_host.lab("down", path)
    assert tested.returncode == 1
    assert "MISMATCH" in tested.stdout and "FAIL: 0/4 rows" in tested.stdout


BAD_FILES = {
    "unknown-key": "name: bad\nhosts: {h1: }\ncontainer: {}\n",
    "unknown-host": "name: bad\nhosts: {h1: }\nnetworks: {n: {driver: overlay}}\ncontainers: {c: {host: h2, networks: [n]}}\n",
    "duplicate": "name: bad\nhosts:\n  h1:\n  h1:\n",
    "bad-subnet": "name: bad\nhosts: {h1: }\nnetworks: {n: {driver: overlay, subnet: 10.1.0.0/33}}\n",
}


def test_bad_topologies_create_nothing(lab_host, tmp_path):
    before = lab_host.state()
    for name, text in BAD_FILES.items():
        proc = lab_host.lab("up", write(tmp_path, text, f"{name}.yaml"), check=False)
        assert proc.returncode == 2, (name, proc.stderr)
        line = one_line_error(proc)
        assert len(proc.stderr.strip().splitlines()) == 1 and f"{name}.yaml" in line, (name, proc.stderr)
    assert_same(lab_host, before)


def test_failure_half_way_removes_everything(lab_host, tmp_path):
    """The second host's container names an image nobody has: everything made before is removed."""
    path = write(tmp_path, BRIDGES.replace("o1: {host: h2, networks: [other]}",
                                           "o1: {host: h2, networks: [other], image: no-such-image}"))
    before = lab_host.state()
    proc = lab_host.lab("up", path, check=False)
    assert proc.returncode != 0
    line = one_line_error(proc)
    assert "lab bridges did not come up" in line and "o1" in line, proc.stderr
    assert_same(lab_host, before)


def test_two_underlays_routed_by_the_switch(lab_host, tmp_path):
    """Hosts on different underlays reach each other (and etcd) through the switch; the overlay is
    sized for the smaller underlay MTU."""
    path = write(tmp_path, """
        name: routed
        underlays:
          a: {subnet: 198.18.1.0/24}
          b: {subnet: 198.18.2.0/24, mtu: 1400}
        hosts:
          h1: {underlay: a}
          h2: {underlay: b}
        networks:
          blue: {driver: overlay, subnet: 10.70.0.0/24}
        containers:
          c1: {host: h1, networks: [blue]}
          c2: {host: h2, networks: [blue]}
        expect:
          reach: [[c1, c2]]
    """)
    before = lab_host.state()
    try:
        lab_host.lab("up", path)
        tested = lab_host.lab("test", path, check=False)
        assert tested.returncode == 0 and "PASS: 4/4" in tested.stdout, tested.stdout + tested.stderr
        mtu = lab_host.host.run("nsenter", "--net=/run/netctl/labs/routed/netns/host-h2", "--", "env",
                                "NETCTL_ROOT=/run/netctl/labs/routed/hosts/h2", *lab_netctl(), "network", "inspect", "blue")
        assert json.loads(mtu.stdout)[0]["MTU"] == 1350
        # The switch bridges keep a fixed MAC (02:42 + the switch address), not their lowest port's, which
        # would change under the hosts' ARP entries as hosts' ports come and go.
        for underlay, mac in (("a", "02:42:c6:12:01:fe"), ("b", "02:42:c6:12:02:fe")):
            link = lab_host.host.run("nsenter", "--net=/run/netctl/labs/routed/netns/switch", "--", "ip", "-j", "link",
                                     "show", f"ul-{underlay}")
            assert json.loads(link.stdout)[0]["address"] == mac
    finally:
        lab_host.lab("down", path)
    assert_same(lab_host, before)


def test_down_after_up_was_killed(lab_host, tmp_path):
    """`lab up` killed -9 half-way leaves a half-made lab: `up` refuses it with a clear line, `down`
    removes it completely."""
    path = write(tmp_path, BRIDGES)
    before = lab_host.state()
    proc = lab_host.host.popen(*lab_netctl(), "lab", "up", path, env=lab_host.env)
    deadline = time.monotonic() + 60
    log = lab_host.host.path("/run/netctl/labs/bridges/logs")
    while time.monotonic() < deadline and not any(f.endswith("daemon.log") for f in _listdir(log)):
        time.sleep(0.02)
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        up_pid = int(f.read().split()[0])  # nsenter's child: the `netctl lab up` process
    os.kill(up_pid, signal.SIGKILL)
    proc.wait(timeout=30)
    again = lab_host.lab("up", path, check=False)
    assert again.returncode == 4 and "half-made" in again.stderr, again.stderr
    lab_host.lab("down", path)
    assert_same(lab_host, before)


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def lab_netctl() -> list[str]:
    return [sys.executable, "-m", "netctl"]
