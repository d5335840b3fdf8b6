"""More overlay operations through the controller: network prune and rm -f, CNI-style attachments
(attach_container/detach_container, what the netctl-overlay plugin builds on), doctor/gc of records
nobody owns, and the local path paying nothing for the global store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.kernel


def test_prune_removes_global_networks_without_endpoints_on_any_host_and_rm_f_disconnects_local_ones(overlay_lab):
    lab = overlay_lab(2)
    h1, h2 = lab.hosts
    for name in ("idle", "used", "here"):
        lab.netctl(h1, "network", "create", "-d", "overlay", name)
    lab.netctl(h2, "sandbox", "create", "--name", "s2")
    lab.netctl(h2, "network", "connect", "used", "s2")
    lab.netctl(h1, "sandbox", "create", "--name", "s1")
    lab.netctl(h1, "network", "connect", "here", "s1")
    pruned = lab.netctl(h1, "network", "prune", "-f").stdout.split()
    assert pruned == ["idle"]  # "used" has an endpoint on h2, "here" one on h1
    # rm -f disconnects this host's endpoints, but never another host's.
    proc = lab.netctl(h1, "network", "rm", "-f", "used", check=False)
    assert proc.returncode == 5 and "s2 on h2" in proc.stderr
    assert lab.netctl(h1, "network", "rm", "-f", "here").stdout.strip() == "here"
    assert lab.overlay_netns(h1) == []
    assert lab.netctl_json(h1, "sandbox", "inspect", "s1")[0]["endpoints"] == []
    names = {n["name"] for n in lab.netctl_json(h2, "network", "ls", "--format", "json")}
    assert names == {"used"}
    keys = lab.etcd_dump()
    assert not any('"here"' in v or '"idle"' in v for v in keys.values())


ATTACH = textwrap.dedent(
    """
    import json, sys
    from libnetwork import netns
    from libnetwork.controller import Controller
    op, network, container, path = sys.argv[1:5]
    with Controller() as c:
        if op == "attach":
            netns.create(path)
            net, endpoint = c.attach_container(network, container, path, "eth0")
            usage = [[u.subnet, u.allocated, u.in_use, u.capacity] for u in c.pool_usage(network)]
            print(json.dumps({"network": net.id, "addresses": endpoint.addresses, "state": endpoint.state,
                              "usage": usage}))
        else:
            endpoint = c.detach_container(network, container, "eth0")
            netns.delete(path)
            print(json.dumps({"detached": endpoint.id if endpoint else None}))
    """
)


def test_a_runtime_attachment_joins_an_overlay_like_a_sandbox_and_detach_removes_it_everywhere(overlay_lab):
    lab = overlay_lab(2)
    h1, h2 = lab.hosts
    lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.70.0.0/24", "cni")
    lab.netctl(h2, "sandbox", "create", "--name", "s2")
    remote = lab.netctl(h2, "network", "connect", "cni", "s2").stdout.split()[1].split("/")[0]
    path = f"{h1.root}/cni-ns"
    attached = json.loads(h1.run(sys.executable, "-c", ATTACH, "attach", "cni", "ctr-1", path, env=lab.env(h1)).stdout)
    assert attached["state"] == "ready" and attached["addresses"][0].startswith("10.70.0.")
    assert attached["usage"] == [["10.70.0.0/24", 2, 2, 253]]  # s2 on h2 and this one; .1 is the gateway
    lab.reconcile(h2)
    address = attached["addresses"][0].split("/")[0]
    assert h1.in_netns(path, "ping", "-c", "1", "-W", "2", remote, check=False).returncode == 0
    assert lab.ping(h2, "s2", address)
    view = lab.netctl_json(h2, "network", "inspect", "cni")[0]
    assert {c["Host"] for c in view["Containers"].values()} == {"h1", "h2"}
    detached = json.loads(h1.run(sys.executable, "-c", ATTACH, "detach", "cni", "ctr-1", path, env=lab.env(h1)).stdout)
    assert detached["detached"]
    assert lab.overlay_netns(h1) == []
    assert not any(address in v for k, v in lab.etcd_dump().items() if "/ipam/addresses/" in k)
    assert lab.netctl(h1, "doctor").stdout.strip() == "no problems found"


def test_doctor_reports_and_gc_removes_global_records_nobody_owns(overlay_lab):
    lab = overlay_lab(1)
    h1 = lab.hosts[0]
    network_id = lab.netctl(h1, "network", "create", "-d", "overlay", "--subnet", "10.80.0.0/24", "o").stdout.strip()
    ghost = "f" * 64
    address_key = f"/netctl/v1/ipam/addresses/{network_id}/v4/{int.from_bytes(bytes([10, 80, 0, 9]), 'big'):032x}"
    lab.etcd.ctl("put", address_key, json.dumps({"owner": ghost, "address": "10.80.0.9/24"}))
    peer = {"network_id": network_id, "endpoint_id": ghost, "name": "ghost", "host": "h1", "vtep": "198.18.0.1",
            "mac": "02:42:0a:50:00:09", "addresses": ["10.80.0.9/24"]}
    lab.etcd.ctl("put", f"/netctl/v1/peers/{network_id}/{ghost}", json.dumps(peer))
    doctor = lab.netctl(h1, "doctor", check=False)
    assert doctor.returncode == 1
    assert "leaked-global-address: global address 10.80.0.9/24 allocated to endpoint ffffffffffff" in doctor.stdout
    assert "stale-peer: peer record of endpoint ffffffffffff (ghost)" in doctor.stdout
    lab.netctl(h1, "gc")
    keys = lab.etcd_dump()
    assert address_key not in keys and f"/netctl/v1/peers/{network_id}/{ghost}" not in keys
    assert lab.netctl(h1, "doctor").stdout.strip() == "no problems found"


LOCAL_ONLY = textwrap.dedent(
    """
    import sys
    from libnetwork.controller import Controller, NetworkSpec
    from libnetwork.model import PoolConfig
    with Controller() as c:
        assert c.store_url == "" and c.global_store is None
        c.create_network(NetworkSpec(name="n", pools=[PoolConfig("10.90.0.0/24")]))
        c.create_sandbox("s")
        c.connect("n", "s")
        c.list_networks(); c.inspect_network("n"); c.doctor()
        c.delete_sandbox("s")
        c.delete_network("n")
    print(sorted(m for m in sys.modules if "etcd" in m or m.startswith(("requests", "urllib3"))))
    """
)


def test_a_host_without_a_store_never_loads_the_etcd_client(host):
    env = {"NETCTL_STORE": "", "NETCTL_HOST_NAME": ""}
    assert host.py(LOCAL_ONLY, env=env).stdout.strip() == "[]"


def test_concurrent_connects_on_three_hosts_get_distinct_addresses_and_all_reach_each_other(overlay_lab):
    lab = overlay_lab(3)
    lab.netctl(lab.hosts[0], "network", "create", "-d", "overlay", "--subnet", "10.85.0.0/24", "busy")
    per_host = 4
    for host in lab.hosts:
        for i in range(per_host):
            lab.netctl(host, "sandbox", "create", "--name", f"{host.name}-{i}")
    # Every connect of every host at once: etcd's compare-and-swap orders the hosts, each host's store
    # lock its own processes; nothing may collide and nothing may be lost.
    procs = [host.popen(sys.executable, "-m", "netctl", "network", "connect", "busy", f"{host.name}-{i}",
                        env=lab.env(host), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for host in lab.hosts for i in range(per_host)]
    addresses = {}
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        addresses[out.split()[1]] = proc
    assert len(addresses) == len(procs)
    lab.reconcile_all()
    view = lab.netctl_json(lab.hosts[1], "network", "inspect", "busy")[0]
    assert len(view["Containers"]) == len(procs)
    first = {host.name: f"{host.name}-0" for host in lab.hosts}
    for source in lab.hosts:
        for target in lab.hosts:
            if source is not target:
                address = lab.netctl_json(target, "sandbox", "inspect", first[target.name])[0]["endpoints"][0]["IPv4Address"]
                assert lab.ping(source, first[source.name], address.split("/")[0]), (source.name, target.name)
    for host in lab.hosts:
        assert lab.netctl(host, "doctor").stdout.strip() == "no problems found"
