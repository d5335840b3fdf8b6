"""Networks through the Docker API with the real docker CLI (its default API version and pinned to
1.41) and docker-py, inside a throwaway host whose agent serves the socket."""

from __future__ import annotations

import json
import socket

import pytest

from harness import CommandFailed


def _inspect(dhost, name: str, template: str, **kw) -> str:
    return dhost.docker("network", "inspect", "-f", template, name, **kw).stdout.strip()


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_network_create_ls_inspect_rm_with_the_docker_cli(dhost, api_version):
    kw = {"api_version": api_version}
    net_id = dhost.docker("network", "create", "--subnet", "10.71.0.0/24", "--gateway", "10.71.0.254",
                          "--ip-range", "10.71.0.128/25", "--aux-address", "printer=10.71.0.200",
                          "--label", "team=blue", "-o", "com.docker.network.bridge.name=br-docker-t",
                          "-o", "com.docker.network.driver.mtu=1400", "n1", **kw).stdout.strip()
    assert len(net_id) == 64
    dhost.docker("network", "create", "--internal", "--label", "team=red", "n2", **kw)
    # The CLI's own templates read Docker's shape.
    assert _inspect(dhost, "n1", "{{.Id}} {{.Driver}} {{.Scope}} {{.Internal}}", **kw) == f"{net_id} bridge local false"
    assert _inspect(dhost, "n1", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}} {{.IPRange}} "
                                 "{{index .AuxiliaryAddresses \"printer\"}}{{end}}", **kw) \
        == "10.71.0.0/24 10.71.0.254 10.71.0.128/25 10.71.0.200"
    assert _inspect(dhost, "n1", "{{index .Labels \"team\"}} {{index .Options \"com.docker.network.driver.mtu\"}}",
                    **kw) == "blue 1400"
    assert _inspect(dhost, "n2", "{{.Internal}}", **kw) == "true"
    # The kernel has what the options asked for.
    link = json.loads(dhost.run("ip", "-j", "link", "show", "br-docker-t").stdout)[0]
    assert link["mtu"] == 1400
    # ls, with the CLI's filters and formats
    names = dhost.docker("network", "ls", "--format", "{{.Name}}", **kw).stdout.split()
    assert {"n1", "n2", "host", "none"} <= set(names)
    assert dhost.docker("network", "ls", "-q", "--filter", "label=team=blue", "--no-trunc", **kw).stdout.split() \
        == [net_id]
    assert dhost.docker("network", "ls", "--filter", "name=n2", "--format", "{{.Name}} {{.Driver}}",
                        **kw).stdout.strip() == "n2 bridge"
    assert dhost.docker("network", "ls", "--filter", "driver=null", "--format", "{{.Name}}", **kw).stdout.split() \
        == ["none"]
    # netctl sees the same network (one implementation)
    assert json.loads(dhost.netctl("network", "inspect", "n1").stdout)[0]["Id"] == net_id
    out = dhost.docker("network", "rm", "n1", "n2", **kw).stdout.split()
    assert out == ["n1", "n2"]
    assert dhost.run("ip", "link", "show", "br-docker-t", check=False).returncode != 0
    dhost.doctor_clean()


def test_network_errors_are_dockers(dhost):
    dhost.docker("network", "create", "--subnet", "10.72.0.0/24", "dup")
    taken = dhost.docker("network", "create", "dup", check=False)
    assert taken.returncode == 1 and "network with name dup already exists" in taken.stderr
    missing = dhost.docker("network", "inspect", "nope", check=False)
    assert missing.returncode == 1 and "network nope not found" in missing.stderr
    bad_gateway = dhost.docker("network", "create", "--subnet", "10.73.0.0/24", "--gateway", "10.99.0.1", "bad",
                               check=False)
    assert bad_gateway.returncode == 1 and "10.99.0.1" in bad_gateway.stderr  # the CLI checks this one itself
    # ... the server checks it too, for the clients that do not
    body = json.dumps({"Name": "bad", "IPAM": {"Config": [{"Subnet": "10.73.0.0/24", "Gateway": "10.99.0.1"}]}})
    status, answer = _raw(dhost, b"POST /v1.47/networks/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
    assert status == 400 and json.loads(answer)["message"] == (
        "network 'bad': IPAM.Config[0]: gateway 10.99.0.1 is outside subnet 10.73.0.0/24")
    bad_subnet = dhost.docker("network", "create", "--subnet", "10.73.0.0/33", "bad", check=False)
    assert bad_subnet.returncode != 0 and "bad" not in dhost.docker("network", "ls", "--format", "{{.Name}}").stdout
    overlap = dhost.docker("network", "create", "--subnet", "10.72.0.0/25", "overlap", check=False)
    assert overlap.returncode == 1 and "overlap" not in dhost.docker("network", "ls", "--format", "{{.Name}}").stdout
    unknown_opt = dhost.docker("network", "create", "-o", "com.docker.network.bridge.host_binding_ipv4=1.2.3.4",
                               "opt", check=False)
    assert unknown_opt.returncode == 1 and "host_binding_ipv4" in unknown_opt.stderr
    ipam_driver = dhost.docker("network", "create", "--ipam-driver", "dhcp", "ipamd", check=False)
    assert ipam_driver.returncode == 1 and "IPAM driver 'dhcp' is not supported" in ipam_driver.stderr
    driver = dhost.docker("network", "create", "-d", "macvlan", "mv", check=False)
    assert driver.returncode == 1 and "macvlan" in driver.stderr
    predefined = dhost.docker("network", "rm", "host", check=False)
    assert predefined.returncode == 1 and "pre-defined network" in predefined.stderr
    # Nothing was made by the refused requests.
    assert set(dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == {"dup", "host", "none"}
    dhost.docker("network", "rm", "dup")
    dhost.doctor_clean()


def _raw(dhost, request: bytes) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(dhost.outside_socket)
        conn.sendall(request)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_malformed_json_and_unknown_fields_answer_400_and_change_nothing(dhost):
    body = b'{"Name": "x", '
    status, answer = _raw(dhost, b"POST /v1.41/networks/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
                                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert status == 400 and json.loads(answer)["message"].startswith("malformed JSON")
    body = json.dumps({"Name": "y", "Frobnicate": True}).encode()
    status, answer = _raw(dhost, b"POST /networks/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert status == 400 and "Frobnicate" in json.loads(answer)["message"]
    status, answer = _raw(dhost, b"GET /v1.12/networks HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 400 and json.loads(answer)["message"] == (
        "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a "
        "newer version")
    status, answer = _raw(dhost, b"GET /v1.99/networks HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 400 and "client version 1.99 is too new" in json.loads(answer)["message"]
    status, answer = _raw(dhost, b"GET /v1.41/nothing/here HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
    assert status == 404 and json.loads(answer) == {"message": "page not found"}
    status, answer = _raw(dhost, b"POST /build HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert status == 400 and "build" in json.loads(answer)["message"]
    names = dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert set(names) == {"host", "none"}


def test_connect_and_disconnect_a_running_container(dhost):
    dhost.docker("network", "create", "--subnet", "10.74.0.0/24", "front")
    dhost.docker("network", "create", "--subnet", "10.75.0.0/24", "back")
    cid = dhost.netctl("run", "-d", "--name", "web", "--network", "front", "busybox", "sleep", "600").stdout.strip()
    dhost.docker("network", "connect", "--alias", "api", "--ip", "10.75.0.50", "back", "web")
    containers = json.loads(_inspect(dhost, "back", "{{json .Containers}}"))
    assert list(containers) == [cid]
    assert containers[cid]["Name"] == "web" and containers[cid]["IPv4Address"] == "10.75.0.50/24"
    addrs = dhost.netctl("exec", "web", "ip", "-o", "-4", "addr").stdout
    assert "10.75.0.50/24" in addrs and "10.74.0.2/24" in addrs
    again = dhost.docker("network", "connect", "back", "web", check=False)
    assert again.returncode == 1 and "already connected" in again.stderr
    no_container = dhost.docker("network", "connect", "back", "ghost", check=False)
    assert no_container.returncode == 1 and "No such container: ghost" in no_container.stderr
    busy = dhost.docker("network", "rm", "back", check=False)
    assert busy.returncode == 1 and "active endpoints" in busy.stderr
    dhost.docker("network", "disconnect", "back", "web")
    assert "10.75.0.50" not in dhost.netctl("exec", "web", "ip", "-o", "-4", "addr").stdout
    assert json.loads(_inspect(dhost, "back", "{{json .Containers}}")) == {}
    not_connected = dhost.docker("network", "disconnect", "back", "web", check=False)
    assert not_connected.returncode == 1 and "not connected" in not_connected.stderr
    dhost.docker("network", "disconnect", "--force", "back", "web")
    # prune removes the unused network only; the one with the container stays
    pruned = dhost.docker("network", "prune", "-f").stdout
    assert "back" in pruned and "front" not in pruned
    dhost.netctl("rm", "-f", "web")
    dhost.docker("network", "rm", "front")
    dhost.doctor_clean()


def test_docker_py_networks(dhost):
    import docker
    from docker.types import IPAMConfig, IPAMPool

    client = dhost.client()
    try:
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet="10.76.0.0/24", gateway="10.76.0.1")])
        net = client.networks.create("pynet", driver="bridge", ipam=ipam, labels={"k": "v"},
                                     options={"com.docker.network.bridge.enable_icc": "false"})
        assert net.name == "pynet" and net.attrs["IPAM"]["Config"][0]["Subnet"] == "10.76.0.0/24"
        assert net.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        assert [n.name for n in client.networks.list(names=["pynet"])] == ["pynet"]
        assert [n.name for n in client.networks.list(filters={"label": "k=v"})] == ["pynet"]
        with pytest.raises(docker.errors.APIError) as conflict:
            client.networks.create("pynet")
        assert conflict.value.status_code == 409
        with pytest.raises(docker.errors.NotFound):
            client.networks.get("nothere")
        low = dhost.api_client()
        assert low.inspect_network(net.id)["Labels"] == {"k": "v"}
        low.close()
        net.remove()
        assert client.networks.prune() == {"NetworksDeleted": []}
    finally:
        client.close()
    dhost.doctor_clean()


def test_stranger_is_refused(dhost):
    """A client that is neither root nor in the agent's group: the socket's mode refuses it, and
    with the mode opened up the peer check still does."""
    as_stranger = ["setpriv", "--reuid", "4712", "--regid", "4712", "--clear-groups"]
    refused = dhost.run(*as_stranger, "docker", "-H", f"unix://{dhost.socket}", "network", "ls", check=False,
                        env={"DOCKER_CONFIG": "/tmp"})
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    dhost.run("chmod", "666", dhost.socket)
    refused = dhost.run(*as_stranger, "docker", "-H", f"unix://{dhost.socket}", "network", "ls", check=False,
                        env={"DOCKER_CONFIG": "/tmp"})
    assert refused.returncode != 0 and "serves root and the members of its group only" in refused.stderr
    assert "refused a client with uid 4712" in dhost.agent_log()


def test_build_is_refused_by_name(dhost):
    dhost.run("mkdir", "-p", "/run/buildctx")
    dhost.run("sh", "-c", "echo 'FROM busybox' > /run/buildctx/Dockerfile")
    with pytest.raises(CommandFailed) as failed:
        dhost.docker("build", "-t", "x", "/run/buildctx")
    assert "image build (POST /build) is not supported by netctl" in failed.value.stderr


def test_connect_a_created_container_before_it_starts(dhost):
    """A container that does not run yet records the network; its start attaches it (as Docker)."""
    dhost.docker("network", "create", "--subnet", "10.77.0.0/24", "first")
    dhost.docker("network", "create", "--subnet", "10.78.0.0/24", "later")
    dhost.docker("create", "--name", "idle", "--network", "first", "busybox", "sleep", "600")
    dhost.docker("network", "connect", "--alias", "worker", "later", "idle")
    dhost.docker("start", "idle")
    addrs = dhost.netctl("exec", "idle", "ip", "-o", "-4", "addr").stdout
    assert "10.77.0." in addrs and "10.78.0." in addrs
    networks = json.loads(dhost.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", "idle").stdout)
    assert set(networks) == {"first", "later"}
    dhost.docker("stop", "-t", "1", "idle")
    dhost.docker("network", "disconnect", "later", "idle")
    dhost.docker("start", "idle")
    assert "10.78.0." not in dhost.netctl("exec", "idle", "ip", "-o", "-4", "addr").stdout
    dhost.docker("rm", "-f", "idle")
    dhost.docker("network", "rm", "first", "later")
    dhost.doctor_clean()


def test_ipv6_null_and_overlay_without_a_store(dhost):
    dhost.docker("network", "create", "--ipv6", "--subnet", "fd00:77::/64", "--subnet", "10.79.0.0/24", "dual")
    view = dhost.json("network", "inspect", "dual")[0]
    assert view["EnableIPv6"] is True
    assert sorted(c["Subnet"] for c in view["IPAM"]["Config"]) == ["10.79.0.0/24", "fd00:77::/64"]
    dhost.docker("network", "create", "-d", "null", "nothing")
    assert dhost.docker("network", "inspect", "-f", "{{.Driver}} {{len .IPAM.Config}}", "nothing").stdout.strip() \
        == "null 0"
    overlay = dhost.docker("network", "create", "-d", "overlay", "ov", check=False)
    assert overlay.returncode == 1 and overlay.stderr.count("\n") == 1 and "ov" not in \
        dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    swarm = dhost.docker("network", "create", "--scope", "swarm", "sw", check=False)
    assert swarm.returncode == 1 and "Scope 'swarm' is not supported" in swarm.stderr
    dhost.docker("network", "rm", "dual", "nothing")
    dhost.doctor_clean()


def test_concurrent_network_requests(dhost):
    """16 clients at once, each creating, inspecting and removing its own network, and all racing for
    one name: each gets its answer, exactly one creation of the shared name wins, nothing is left."""
    from concurrent.futures import ThreadPoolExecutor

    import docker

    def work(i: int) -> tuple[str, int]:
        client = dhost.api_client()
        try:
            own = client.create_network(f"c{i}", driver="bridge")
            assert client.inspect_network(own["Id"])["Name"] == f"c{i}"
            try:
                client.create_network("shared")
                won = 1
            except docker.errors.APIError as err:
                assert err.status_code == 409
                won = 0
            client.remove_network(own["Id"])
            return own["Id"], won
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    assert len({net_id for net_id, _ in results}) == 16
    assert sum(won for _, won in results) == 1
    assert set(dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == {"shared", "host", "none"}
    dhost.docker("network", "rm", "shared")
    dhost.doctor_clean()
