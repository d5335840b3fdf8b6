"""A CNI runtime's containers get names too: Debian's podman 4.3 (CNI backend) on a netctl-bridge
conflist. netctl-bridge returns `dns: {nameservers: [127.0.0.11], search: [netctl.internal]}` in its
result; podman 4.3 puts a network status's name servers first in the container's resolv.conf
(libpod generateResolvConf: networkNameServers before the host's), and passes the container's name in
CNI_ARGS K8S_POD_NAME, which the name server answers for. Fixtures: tests/cni/test_podman.py's."""

from __future__ import annotations

import pytest

from cni.conftest import cni, plugin_dir  # noqa: F401  (fixtures)
from cni.helpers import Service
from cni.test_podman import busybox_image, podman  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


def test_two_podman_containers_resolve_each_other_by_name(cni, podman):  # noqa: F811
    service = Service(cni.host)  # the agent, its name server with it, before the first container
    try:
        first = podman.run_detached("alpha")
        second = podman.run_detached("beta")
        resolv = podman("exec", "alpha", "cat", "/etc/resolv.conf")
        servers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")]
        assert servers[0] == "127.0.0.11" and "search netctl.internal" in resolv, resolv
        for source, target, address in (("alpha", "beta", second), ("beta", "alpha", first)):
            out = podman("exec", source, "nslookup", f"{target}.netctl.internal", check=False)
            assert address in out, out
            ping = podman("exec", source, "ping", "-c", "1", "-W", "2", target, check=False)
            assert " 0% packet loss" in ping, ping
        podman("rm", "-f", "-t", "0", "beta")
        gone = podman("exec", "alpha", "nslookup", "beta.netctl.internal", check=False)
        assert "NXDOMAIN" in gone, gone
        assert "Traceback" not in service.log()
    finally:
        service.stop()


def test_a_netctl_bridge_result_names_the_embedded_server_unless_the_config_names_one(cni):  # noqa: F811
    from cni.helpers import bridge_conf

    conf = bridge_conf("dnsres", "10.86.0.0/24")
    assert cni.add(conf, "a")["dns"] == {"nameservers": ["127.0.0.11"], "search": ["netctl.internal"]}
    conf["dns"] = {"nameservers": ["10.86.0.1"]}
    assert cni.add(conf, "b")["dns"] == {"nameservers": ["10.86.0.1"]}


def test_podman_network_aliases_resolve(cni, podman):  # noqa: F811
    """podman --network-alias reaches netctl-bridge as runtimeConfig.aliases (the conflist declares
    the capability, as podman's own dnsname conflists do), and the name server answers for them."""
    import json

    from cni.test_podman import CONF_DIR, CONFLIST

    conflist = json.loads(json.dumps(CONFLIST))
    conflist["name"] = "aliasnet"
    conflist["plugins"][0].update(bridge="alsbr0", capabilities={"aliases": True, "portMappings": True})
    conflist["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.87.0.0/24"}]]
    cni.host.run("sh", "-c", f"cat > {CONF_DIR}/net.d/aliasnet.conflist", input=json.dumps(conflist))
    service = Service(cni.host)
    try:
        for name, alias in (("one", "db"), ("two", "db")):
            podman("run", "-d", "--name", name, "--cgroup-parent", podman.cgroup_parent, "--network", "aliasnet",
                   "--network-alias", alias, "--network-alias", f"{name}-alias", "localhost/busybox", "sleep", "120")
        address = {n: podman("inspect", n, "--format", '{{(index .NetworkSettings.Networks "aliasnet").IPAddress}}')
                   for n in ("one", "two")}
        out = podman("exec", "one", "nslookup", "two-alias.netctl.internal", check=False)
        assert address["two"] in out, out
        shared = podman("exec", "two", "nslookup", "db.netctl.internal", check=False)
        assert all(a in shared for a in address.values()), (address, shared)
        assert "Traceback" not in service.log()
    finally:
        service.stop()
