"""netctl-overlay on a real multi-host lab: hosts h1, h2 running `netctl daemon --store` (registered,
programming each other's peers), h3 with a store configured but no daemon (unregistered), etcd inside
the lab's switch (198.18.0.254:2379). The plugin runs the way libcni runs it (all six CNI_* variables,
config on stdin) inside each host; it finds the store in ROOT/global.json, as on a real host.

Every test leaves the lab as it found it: no container attachment, no address held in etcd, no
overlay namespace built on any host."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import statistics
import subprocess
import time

import pytest

from cni.helpers import Cni, with_prev
from overlay.agent_helpers import start_daemon
from overlay.lab import netctl_lab

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
ALLOCATIONS = (
    "import json\nfrom libnetwork.controller import Controller\n"
    "with Controller() as c, c.global_store.snapshot() as g: print(json.dumps(g.allocations()))"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import harness

    from overlay.conftest import _require_etcd

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    logs = str(tmp_path_factory.mktemp("daemons"))
    with netctl_lab(3, register=False) as lab:
        lab.daemons = {}
        try:
            for host in lab.hosts[:2]:
                lab.daemons[host.name] = start_daemon(lab, host, logs)
            lab.write_global(lab.hosts[2])  # h3: a store, but no daemon: never registered
            yield lab
        finally:
            for daemon in lab.daemons.values():
                if daemon.alive:
                    daemon.stop()


@pytest.fixture
def cnis(lab, plugin_dir):
    """One plugin runner per host; afterwards every host and etcd must be back to nothing attached."""
    runners = [Cni(host, plugin_dir) for host in lab.hosts]
    yield runners
    if not lab.etcd.running:
        lab.etcd.start()
    left = {"etcd addresses": endpoint_addresses(lab), **{f"{h.name} segments": lab.overlay_netns(h) for h in lab.hosts},
            **{f"{c.host.name} sandboxes": c.sandboxes() for c in runners}}
    # Clean up whatever a failed test left, so the next one starts from nothing; then report it.
    for cni in runners:
        for name in list(cni.made_netns):
            cni.drop_netns(name)
        lab.netctl(cni.host, "gc", check=False)
    assert not any(left.values()), left


def overlay_conf(name: str, subnet: str = "", *, version: str = "1.1.0", **extra) -> dict:
    conf = {"cniVersion": version, "name": name, "type": "netctl-overlay"}
    if subnet:
        conf["ipam"] = {"type": "netctl-ipam", "ranges": [[{"subnet": subnet}]]}
    conf.update(extra)
    return conf


def endpoint_addresses(lab) -> list[str]:
    """Addresses held in etcd by endpoints (not gateways): empty after every DEL."""
    allocations = json.loads(lab.py(lab.hosts[0], ALLOCATIONS).stdout)
    return sorted(a for _, a, owner in allocations if not owner.startswith(("gateway:", "aux:")))


def ping_soon(cni: Cni, netns: str, address: str, timeout: float = 10.0) -> bool:
    """The other host's daemon programs its FDB within ~1 s of the ADD: ping until then, bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cni.inside(netns, "ping", "-n", "-c", "1", "-W", "1", address, check=False).returncode == 0:
            return True
    return False


def links_in(host, path: str) -> set[str]:
    out = host.run("nsenter", f"--net={path}", "ip", "-j", "link", check=False)
    return {link["ifname"] for link in json.loads(out.stdout or "[]")}


# --- the data plane -------------------------------------------------------------------------------


def test_containers_added_on_two_hosts_reach_each_other_and_del_leaves_nothing(lab, cnis):
    c1, c2, _ = cnis
    h1, h2, _ = lab.hosts
    conf = overlay_conf("ov1", "10.71.0.0/24", vni=4242, dns={"nameservers": ["10.71.0.53"]},
                        capabilities={"ips": True}, args={"cni": {"labels": [{"key": "app", "value": "x"}]}})
    r1 = c1.add(conf, "a1")
    r2 = c2.add(conf, "a2", args="IgnoreUnknown=1;K8S_POD_NAME=pod-a2;K8S_POD_NAMESPACE=ns")
    assert r1["cniVersion"] == "1.1.0" and r1["dns"] == {"nameservers": ["10.71.0.53"]}
    bridge, port, inside = r1["interfaces"]
    [network_id] = lab.overlay_netns(h1)
    segment = f"{h1.root}/overlay/{network_id}"
    assert bridge == {"name": f"no-{network_id[:12]}", "mac": bridge["mac"], "sandbox": segment}
    assert all(MAC.match(i["mac"]) for i in r1["interfaces"])
    assert port["name"].startswith("ny") and port["sandbox"] == segment
    assert inside["name"] == "eth0" and inside["sandbox"] == "/run/netns/a1" and inside["mtu"] == 1450
    assert r1["ips"] == [{"address": "10.71.0.2/24", "interface": 2}]  # no gateway: the segment has no router
    assert r2["ips"] == [{"address": "10.71.0.3/24", "interface": 2}]
    assert r1["routes"] == []
    assert c1.addresses("a1") == ["10.71.0.2/24"] and c1.links("a1")["eth0"]["address"] == inside["mac"]
    assert {bridge["name"], port["name"]} <= links_in(h1, segment)

    assert ping_soon(c1, "a1", "10.71.0.3") and ping_soon(c2, "a2", "10.71.0.2")

    # Both attachments are ordinary netctl endpoints, listed with their host on either host.
    view = json.loads(lab.netctl(h2, "network", "inspect", "ov1").stdout)[0]
    assert view["Scope"] == "global" and view["VNI"] == 4242
    assert sorted((e["Name"], e.get("Host", "")) for e in view["Containers"].values()) == [("a1", "h1"), ("a2", "h2")]

    # CHECK on each host: all there, as ADD made it.
    assert c1.run("netctl-overlay", "CHECK", with_prev(conf, r1), cid="a1", netns="/run/netns/a1", ifname="eth0").ok
    assert c2.run("netctl-overlay", "CHECK", with_prev(conf, r2), cid="a2", netns="/run/netns/a2", ifname="eth0").ok
    c1.inside("a1", "ip", "addr", "flush", "dev", "eth0")
    broken = c1.run("netctl-overlay", "CHECK", with_prev(conf, r1), cid="a1", netns="/run/netns/a1", ifname="eth0")
    assert broken.error()["code"] == 999 and "10.71.0.2/24 is missing" in broken.error()["msg"]

    c1.delete(with_prev(conf, r1), "a1")
    assert "eth0" not in c1.links("a1") and lab.overlay_netns(h1) == []  # its last endpoint: the segment goes
    assert endpoint_addresses(lab) == ["10.71.0.3/24"]
    c1.delete(conf, "a1")  # again: success, nothing printed
    c2.delete(conf, "a2")
    assert endpoint_addresses(lab) == [] and lab.overlay_netns(h2) == []


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0", "0.3.1", "0.3.0", "0.2.0", "0.1.0"])
def test_result_shape_follows_the_request_version(lab, cnis, version):
    c1 = cnis[0]
    conf = overlay_conf("ov-shape", "10.72.0.0/24", version=version)
    result = c1.add(conf, "v", args="IP=10.72.0.9")
    assert result["cniVersion"] == version
    if version in ("0.2.0", "0.1.0"):
        assert result["ip4"] == {"ip": "10.72.0.9/24"} and "interfaces" not in result
    else:
        assert [ip["address"] for ip in result["ips"]] == ["10.72.0.9/24"]
        assert result["ips"][0].get("version") == (None if version == "1.0.0" else "4")
        assert "mtu" not in result["interfaces"][2]
    c1.delete(conf, "v")


def test_dual_stack_across_hosts(lab, cnis):
    c1, c2, _ = cnis
    conf = overlay_conf("ov-v6", "10.80.0.0/24")
    conf["ipam"]["ranges"].append([{"subnet": "fd00:80::/64"}])
    r1 = c1.add(conf, "s1", args="IgnoreUnknown=1;IP=10.80.0.10,fd00:80::10")
    r2 = c2.add(conf, "s2")
    assert [ip["address"] for ip in r1["ips"]] == ["10.80.0.10/24", "fd00:80::10/64"]
    v6 = next(ip["address"].split("/")[0] for ip in r2["ips"] if ":" in ip["address"])
    assert ping_soon(c1, "s1", v6) and ping_soon(c2, "s2", "fd00:80::10")
    c1.delete(conf, "s1")
    c2.delete(conf, "s2")


def test_chained_after_another_plugin_and_ipam_routes(lab, cnis):
    c1 = cnis[0]
    conf = overlay_conf("ov-chain", "10.73.0.0/24", mtu=1400)
    conf["ipam"]["routes"] = [{"dst": "10.200.0.0/16"}]
    previous = {"cniVersion": "1.1.0", "interfaces": [{"name": "lo", "sandbox": "/run/netns/ch"}],
                "ips": [{"address": "192.0.2.9/32", "interface": 0}], "dns": {"search": ["example"]}}
    result = c1.add(with_prev(conf, previous), "ch", ifname="net1")
    assert [i["name"] for i in result["interfaces"]][0] == "lo" and result["interfaces"][3]["name"] == "net1"
    assert result["ips"] == [previous["ips"][0], {"address": "10.73.0.2/24", "interface": 3}]
    assert result["routes"] == [{"dst": "10.200.0.0/16"}] and result["dns"] == {"search": ["example"]}
    assert "10.200.0.0/16 dev net1" in c1.inside("ch", "ip", "route").stdout
    assert c1.links("ch")["net1"]["mtu"] == 1400
    c1.delete(conf, "ch", ifname="net1")


def test_gc_releases_what_the_runtime_no_longer_knows_on_this_host_only(lab, cnis):
    c1, c2, _ = cnis
    conf = overlay_conf("ov-gc", "10.74.0.0/24", cniVersion="1.1.0")
    c1.add(conf, "g1")
    c1.add(conf, "g2")
    c2.add(conf, "g3")
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "g1", "ifname": "eth0"}]})
    assert c1.run("netctl-overlay", "GC", gc).ok
    assert endpoint_addresses(lab) == ["10.74.0.2/24", "10.74.0.4/24"]  # g2 gone; g3 is h2's, untouched
    assert "eth0" not in c1.links("g2")
    c1.delete(conf, "g1")
    c2.delete(conf, "g3")


# --- failures: spec error JSON, nothing left behind -------------------------------------------------


def test_status_says_50_once_the_subnet_is_full(lab, cnis):
    c1 = cnis[0]
    conf = overlay_conf("ov-full", "10.83.0.0/30")  # one address for containers (.1 is the reserved gateway)
    assert c1.run("netctl-overlay", "STATUS", conf).ok  # no network yet: ADD would create it
    c1.add(conf, "f1")
    status = c1.run("netctl-overlay", "STATUS", conf).error()
    assert status["code"] == 50 and "no free IPv4 address" in status["msg"]
    full = c1.run("netctl-overlay", "ADD", conf, cid="f2", netns=c1.netns("f2"), ifname="eth0").error()
    assert "eth0" not in c1.links("f2"), full
    c1.delete(conf, "f1")
    assert c1.run("netctl-overlay", "STATUS", conf).ok


def test_configuration_errors(lab, cnis):
    c1 = cnis[0]
    c1.netns("e")
    cases = [
        (overlay_conf("ov-e1", "10.75.0.0/24", vni=17), 7, "invalid vni=17"),
        (overlay_conf("ov-e1", "10.75.0.0/24", vni="x"), 7, "invalid vni='x'"),
        (overlay_conf("ov-e1", "10.75.0.0/24", port=80), 7, "invalid port=80"),
        (overlay_conf("ov-e1", "10.75.0.0/24", fastPath="no"), 7, "invalid fastPath='no'"),
        (overlay_conf("ov-e1", "10.75.0.0/24", store="http://a/b"), 7, "invalid store="),
        (overlay_conf("ov-e1", "10.75.0.0/24", ipMasq=True), 2, "unsupported field ipMasq=True"),
        (dict(overlay_conf("ov-e1"), ipam={"type": "host-local", "subnet": "10.75.0.0/24"}), 2,
         "unsupported field ipam.type='host-local'"),
        (dict(overlay_conf("ov-e1"), ipam={"type": "netctl-ipam", "ranges": [[{"subnet": "10.75.0.0/24",
                                                                               "rangeStart": "10.75.0.10"}]]}),
         2, "rangeStart/rangeEnd"),
        (overlay_conf("ov-e1", "10.75.0.0/24", runtimeConfig={"portMappings": [{"hostPort": 80, "containerPort": 80}]}),
         2, "cannot publish ports"),
    ]
    for conf, code, text in cases:
        error = c1.run("netctl-overlay", "ADD", conf, cid="e", netns="/run/netns/e", ifname="eth0").error()
        assert error["code"] == code and text in error["msg"], (conf, error)
    assert "ov-e1" not in lab.netctl(lab.hosts[0], "network", "ls").stdout
    for conf, _, _ in cases:  # DEL of what was never added succeeds whatever the configuration says
        assert c1.run("netctl-overlay", "DEL", conf, cid="e", netns="/run/netns/e", ifname="eth0").ok, conf
    # A VNI another network holds: refused, and the network it would have created is not left in etcd.
    c1.add(overlay_conf("ov-e2", "10.75.1.0/24", vni=5000), "e")
    error = c1.run("netctl-overlay", "ADD", overlay_conf("ov-e3", "10.75.2.0/24", vni=5000), cid="e2",
                   netns=c1.netns("e2"), ifname="eth0").error()
    assert error["code"] == 7 and "VNI 5000 is already used" in error["msg"]
    mismatch = c1.run("netctl-overlay", "ADD", overlay_conf("ov-e2", "10.75.1.0/24", vni=5001), cid="e2",
                      netns="/run/netns/e2", ifname="eth0").error()
    assert mismatch["code"] == 7 and "VNI 5000, not 5001" in mismatch["msg"]
    assert "ov-e3" not in lab.netctl(lab.hosts[0], "network", "ls").stdout
    assert "eth0" not in c1.links("e2")
    c1.delete(overlay_conf("ov-e2"), "e")


def test_no_store_and_unregistered_host(lab, cnis, plugin_dir):
    c1, _, c3 = cnis
    h1, _, h3 = lab.hosts
    conf = overlay_conf("ov-reg", "10.76.0.0/24")
    # h3 has a store but no daemon: ADD and STATUS say what to start.
    error = c3.run("netctl-overlay", "ADD", conf, cid="u", netns=c3.netns("u"), ifname="eth0").error()
    assert "host 'h3' is not registered" in error["msg"] and "netctl daemon --store" in error["msg"]
    status = c3.run("netctl-overlay", "STATUS", conf).error()
    assert status["code"] == 50 and "not registered" in status["msg"]
    assert "eth0" not in c3.links("u") and lab.overlay_netns(h3) == []
    assert c3.run("netctl-overlay", "DEL", conf, cid="u", netns="/run/netns/u", ifname="eth0").ok
    # A host with no store at all (another root, no global.json, no NETCTL_STORE): one clear error.
    bare = {"NETCTL_ROOT": "/run/netctl-bare"}
    error = c1.run("netctl-overlay", "ADD", conf, cid="u", netns=c1.netns("u"), ifname="eth0", env=bare).error()
    assert error["code"] == 7 and "needs a global store" in error["msg"]
    assert c1.run("netctl-overlay", "STATUS", conf, env=bare).error()["code"] == 50
    assert c1.run("netctl-overlay", "DEL", conf, cid="u", netns="/run/netns/u", ifname="eth0", env=bare).ok
    assert c1.run("netctl-overlay", "STATUS", conf).ok  # h1: registered, etcd up


def test_etcd_down_add_fails_cleanly_del_still_cleans_the_kernel_and_gc_the_rest(lab, cnis):
    c1, c2, _ = cnis
    h1, h2, _ = lab.hosts
    conf = overlay_conf("ov-down", "10.77.0.0/24")
    r1 = c1.add(conf, "d1")
    c2.add(conf, "d2")
    assert ping_soon(c1, "d1", "10.77.0.3")
    lab.etcd.stop()
    try:
        assert ping_soon(c1, "d1", "10.77.0.3")  # the data plane does not need etcd
        error = c1.run("netctl-overlay", "ADD", conf, cid="d3", netns=c1.netns("d3"), ifname="eth0").error()
        assert error["code"] == 11 and "eth0" not in c1.links("d3")
        assert c1.run("netctl-overlay", "STATUS", conf).error()["code"] == 50
        gone = c1.run("netctl-overlay", "DEL", with_prev(conf, r1), cid="d1", netns="/run/netns/d1", ifname="eth0")
        assert gone.ok and gone.stdout == ""
        assert "stay in etcd until `netctl gc`" in gone.stderr and "10.77.0.2/24" in gone.stderr
        assert "eth0" not in c1.links("d1") and lab.overlay_netns(h1) == [] and c1.sandboxes() == []
        assert c1.run("netctl-overlay", "DEL", conf, cid="d1", netns="/run/netns/d1", ifname="eth0").ok  # again
    finally:
        lab.etcd.start()
    assert "10.77.0.2/24" in endpoint_addresses(lab)  # what the DEL could not release...
    lab.netctl(h1, "gc")
    assert endpoint_addresses(lab) == ["10.77.0.3/24"]  # ...gc releases once etcd is back
    c2.delete(conf, "d2")
    assert lab.overlay_netns(h2) == []


ETCD_BLACK_HOLE = """table inet netctl_test_black_hole {
    chain out { type filter hook output priority 0; policy accept; tcp dport 2379 drop; }
}"""


@pytest.mark.parametrize("mode", ["in-process", "service"])
def test_etcd_black_holed_del_waits_out_one_etcd_timeout_not_one_per_call(lab, cnis, mode):
    """etcd not refusing but silent (a partition, a dead peer's address): every request waits out the
    store's timeout. A DEL must not pay it again for each etcd step it skips: it learns once that etcd
    is away and takes the etcd-away path (kernel side and local copy go, the address waits for gc).
    Only h1's packets to etcd are dropped, in h1's own namespace, so h2's daemon keeps its lease."""
    from libnetwork.store.etcd import DEFAULT_TIMEOUT_S

    c1 = cnis[0]
    h1 = lab.hosts[0]
    conf = overlay_conf("ov-hole", "10.84.0.0/24")
    # "service": h1's agent (warm: its store is open when etcd goes silent) serves the plugin calls.
    env = {"NETCTL_NO_DAEMON": "1"} if mode == "in-process" else {}
    agent_log = lab.daemons[h1.name].log()
    try:
        r1 = c1.add(conf, "e1", env=env)
        address = r1["ips"][0]["address"]
        h1.run("nft", "-f", "-", input=ETCD_BLACK_HOLE)
        started = time.monotonic()
        gone = c1.run("netctl-overlay", "DEL", with_prev(conf, r1), cid="e1", netns="/run/netns/e1", ifname="eth0",
                      env=env)
        took = time.monotonic() - started
        assert gone.ok and gone.stdout == "", gone.stderr
        assert "stay in etcd until `netctl gc`" in gone.stderr and address in gone.stderr
        assert "eth0" not in c1.links("e1") and lab.overlay_netns(h1) == [] and c1.sandboxes() == []
        print(f"\nDEL with etcd black-holed: {took:.1f} s (etcd timeout {DEFAULT_TIMEOUT_S:g} s)")
        assert DEFAULT_TIMEOUT_S <= took < 1.6 * DEFAULT_TIMEOUT_S, f"DEL took {took:.1f} s"
    finally:
        h1.run("nft", "delete", "table", "inet", "netctl_test_black_hole", check=False)
    served = lab.daemons[h1.name].log()[len(agent_log):].count("DEL netctl-overlay e1")
    assert served == (1 if mode == "service" else 0)  # the agent answered, or nobody but the plugin
    assert address in endpoint_addresses(lab)  # what the DEL could not release...
    lab.netctl(h1, "gc")
    assert address not in endpoint_addresses(lab)  # ...gc releases once etcd answers


def test_local_plugins_on_an_overlay_host_do_not_need_etcd(lab, cnis):
    """h1 has a global store (ROOT/global.json); its bridge networks are local and must not wait for etcd."""
    c1 = cnis[0]
    conf = {"cniVersion": "1.1.0", "name": "loc-br", "type": "netctl-bridge", "bridge": "locbr0",
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.78.0.0/24"}]]}}
    kept = c1.add(conf, "k1")
    lab.etcd.stop()
    try:
        gone = c1.add(conf, "k2")  # an existing local network: no etcd needed
        assert c1.run("netctl-bridge", "CHECK", with_prev(conf, gone), cid="k2", netns="/run/netns/k2",
                      ifname="eth0").ok
        assert c1.run("netctl-bridge", "STATUS", conf).ok
        c1.delete(with_prev(conf, gone), "k2")
        c1.delete(conf, "never-added")  # DEL of an unknown attachment: idempotent, with etcd away too
        c1.delete(dict(conf, name="never-made"), "k9")  # of a network this host never had (not asked of etcd)
        gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "k1", "ifname": "eth0"}]})
        assert c1.run("netctl-bridge", "GC", gc).ok
    finally:
        lab.etcd.start()
    c1.delete(with_prev(conf, kept), "k1")
    lab.netctl(lab.hosts[0], "network", "rm", "loc-br")  # the network a CNI ADD made stays until removed


@pytest.mark.parametrize("pause", ["connect-overlay-after-allocate", "connect-overlay-after-join"])
@pytest.mark.parametrize("cleaner", ["DEL", "GC"])
def test_an_add_killed_half_way_is_cleaned_up_by_del_or_gc(lab, cnis, pause, cleaner):
    c1, c2, _ = cnis
    h1 = lab.hosts[0]
    conf = overlay_conf("ov-kill", "10.79.0.0/24")
    deadline = time.monotonic() + 20  # a test before may have stopped etcd: h1 registered, etcd answering
    while not c1.run("netctl-overlay", "STATUS", conf).ok:
        assert time.monotonic() < deadline, c1.run("netctl-overlay", "STATUS", conf).error()
        time.sleep(0.2)
    k2 = c2.add(conf, "k2")["ips"][0]["address"]  # the network exists, another host holds an address in it
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "k1", "CNI_NETNS": c1.netns("k1"), "CNI_IFNAME": "eth0",
           "CNI_ARGS": "", "CNI_PATH": c1.path, "NETCTL_TEST_PAUSE": pause}
    proc = h1.popen("env", *[f"{k}={v}" for k, v in env.items()], f"{c1.plugin_dir}/netctl-overlay",
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(json.dumps(conf))
        proc.stdin.close()
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        line = proc.stderr.readline().strip() if ready else "(nothing within 30 s)"
        if line != f"paused at {pause}":  # it ended before the pause: say how (its CNI error is on stdout)
            try:
                ended: object = proc.wait(timeout=10)  # stderr closes as it exits, a moment before it is reaped
            except subprocess.TimeoutExpired:
                ended = "still running"
            out = proc.stdout.read(4000) if ended != "still running" else ""
            raise AssertionError(f"the plugin did not pause: stderr {line!r}, stdout {out!r}, exit {ended}")
        assert len(endpoint_addresses(lab)) == 2  # k1's address is taken in etcd
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # nsenter, env and the plugin: one group, started here
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    if cleaner == "DEL":
        c1.delete(conf, "k1")
    else:
        gc = dict(conf, **{"cni.dev/valid-attachments": []})
        assert c1.run("netctl-overlay", "GC", gc).ok
    assert endpoint_addresses(lab) == [k2]
    assert "eth0" not in c1.links("k1") and lab.overlay_netns(h1) == []
    assert lab.netctl(h1, "doctor").stdout.strip() == "no problems found"
    c2.delete(conf, "k2")


# --- the lead's figure ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["in-process", "service"])
def test_add_del_cycle_time(lab, cnis, mode):
    """ADD then DEL of one container on a host where the segment is already built (another container
    keeps it), n=30: in-process (each call imports the etcd client) and through the CNI service."""
    c1 = cnis[0]
    env = {"NETCTL_NO_DAEMON": "1"} if mode == "in-process" else {}  # "service": h1's agent serves them
    agent_log = lab.daemons[c1.host.name].log()
    conf = overlay_conf("ov-bench", "10.78.0.0/24")
    c1.netns("b")
    c1.add(conf, "b0", env=env)
    cycles = []
    for _ in range(30):
        started = time.perf_counter()
        c1.add(conf, "b", env=env)
        c1.delete(conf, "b", env=env)
        cycles.append((time.perf_counter() - started) * 1000)
    c1.delete(conf, "b0", env=env)
    served = lab.daemons[c1.host.name].log()[len(agent_log):].count("netctl-overlay")
    assert served >= 60 if mode == "service" else served == 0  # the agent answered, or the plugin itself
    print(f"\nnetctl-overlay ADD+DEL {mode} (each call through nsenter, ~8 ms): median "
          f"{statistics.median(cycles):.1f} ms, min {min(cycles):.1f} ms, max {max(cycles):.1f} ms, n={len(cycles)}")
