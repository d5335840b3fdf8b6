"""Concurrent ADDs (cni-conformance.md A14) and ADDs killed half-way, cleaned up by DEL or GC."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from cni.helpers import _child_pid, bridge_conf

pytestmark = pytest.mark.kernel

# Runs inside the host: N plugin processes started together, as a runtime starting N pods would.
CONCURRENT = """
import json, subprocess, sys
plugin, command, conf, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = lambda i: {"CNI_COMMAND": command, "CNI_CONTAINERID": f"p{i}", "CNI_NETNS": f"/run/netns/p{i}",
                 "CNI_IFNAME": "eth0", "CNI_ARGS": "", "CNI_PATH": sys.argv[5], "NETCTL_ROOT": "/run/netctl"}
procs = [subprocess.Popen([plugin], env=env(i), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
         for i in range(n)]
for p in procs:
    p.stdin.write(conf.encode()); p.stdin.close()
print(json.dumps([(p.wait(timeout=120), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]))
"""


def run_concurrently(cni, command: str, conf: dict, n: int) -> list[dict | None]:
    done = cni.host.run(sys.executable, "-c", CONCURRENT, f"{cni.plugin_dir}/netctl-bridge", command,
                        json.dumps(conf), str(n), cni.plugin_dir, timeout=240)
    results = json.loads(done.stdout)
    failures = [r for r in results if r[0] != 0]
    assert not failures, failures[:3]
    return [json.loads(out) if out else None for _, out, _ in results]


@pytest.mark.parametrize("with_service", [False, True], ids=["in-process", "service"])
def test_twenty_concurrent_adds_get_twenty_distinct_addresses(cni, request, with_service):
    if with_service:
        request.getfixturevalue("service")
    cni.host.run("sh", "-c", "for i in $(seq 0 19); do ip netns add p$i; done")
    conf = bridge_conf("busy", "10.60.0.0/24")
    results = run_concurrently(cni, "ADD", conf, 20)
    addresses = [r["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == 20
    assert sorted(cni.endpoint_addresses()) == sorted(addresses)
    assert len(cni.inspect("busy")["Containers"]) == 20
    run_concurrently(cni, "DEL", conf, 20)
    assert cni.endpoint_addresses() == [] and cni.sandboxes() == []
    assert cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")}) == set()


def start_add(cni, conf: dict, cid: str, pause_at: str = ""):
    """The plugin started in the background; (nsenter's Popen, the plugin's own PID)."""
    env = f"CNI_COMMAND=ADD CNI_CONTAINERID={cid} CNI_NETNS={cni.netns(cid)} CNI_IFNAME=eth0 CNI_ARGS= CNI_PATH={cni.path}"
    if pause_at:
        env += f" NETCTL_TEST_PAUSE={pause_at}"
    cni.host.run("sh", "-c", f"cat > /run/{cid}.json", input=json.dumps(conf))
    # exec all the way down: the PID under nsenter is the plugin's
    proc = cni.host.popen("sh", "-c", f"exec env {env} {cni.plugin_dir}/netctl-bridge < /run/{cid}.json",
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, _child_pid(proc.pid)


def kill9(proc, pid: int) -> None:
    try:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    finally:
        proc.wait(timeout=10)


def leftovers(cni, cid: str) -> dict:
    return {"host veths": [n for n in cni.links() if n.startswith("nv")],
            "container": [n for n in cni.links(cid) if n != "lo"],
            "addresses": cni.endpoint_addresses(), "sandboxes": cni.sandboxes()}


CLEAN = {"host veths": [], "container": [], "addresses": [], "sandboxes": []}


@pytest.mark.parametrize("point", ["connect-before-join", "connect-after-join"])
def test_an_add_killed_half_way_is_cleaned_up_by_del(cni, point):
    conf = bridge_conf("crash", "10.59.0.0/24")
    cni.add(conf, "warm")  # the network exists: the kill hits the attachment itself
    proc, pid = start_add(cni, conf, "victim", pause_at=point)
    assert proc.stderr.readline().startswith("paused at"), "the fault point was not reached"
    kill9(proc, pid)
    state = leftovers(cni, "victim")
    assert state["addresses"] == ["10.59.0.2/24"]  # the transaction died with the process
    cni.delete(conf, "victim")
    cni.delete(conf, "warm")
    # The first ADD started the host's agent, which serves these DELs and deletes veths in the background.
    cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")})
    assert leftovers(cni, "victim") == CLEAN


def test_adds_killed_at_random_moments_are_cleaned_up_by_del_or_gc(cni):
    conf = bridge_conf("crash2", "10.58.0.0/24")
    cni.add(conf, "warm")
    rng = random.Random(4)
    victims = [f"v{i}" for i in range(6)]
    for cid in victims:
        proc, pid = start_add(cni, conf, cid)
        time.sleep(rng.uniform(0.02, 0.25))
        kill9(proc, pid)
    # Half go away by DEL, the rest by a GC that lists only what the runtime still has.
    for cid in victims[:3]:
        cni.delete(conf, cid)
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "warm", "ifname": "eth0"}]})
    assert cni.run("netctl-bridge", "GC", gc).ok
    assert cni.endpoint_addresses() == ["10.58.0.2/24"]
    kept = cni.inspect("crash2")["Containers"].popitem()[1]["HostInterface"]
    cni.wait_links_gone({n for n in cni.links() if n.startswith("nv")} - {kept})  # the agent's, in the background
    assert [n for n in cni.links() if n.startswith("nv")] == [kept]
    for cid in victims[:3]:
        assert [n for n in cni.links(cid) if n != "lo"] == []
    assert cni.host.netctl("doctor", check=False).returncode == 0
