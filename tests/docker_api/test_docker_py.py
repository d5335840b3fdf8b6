"""docker-py 7 (PyPI `docker`) drives netctl's Docker Engine API through both its faces: the low-level
APIClient and the DockerClient models. Networks (IPAM, labels, aliases, connect/disconnect), containers
(create/start/wait/stop/remove, env, labels, published ports, filters), exec (exit codes, demuxed
streams), logs (whole and followed), images (list, inspect, tag, save, load, remove) and docker-py's
own error types for what does not exist.

The clients run in the test process on the agent's socket (reached through /proc/PID/root); what needs
the host's network namespace (the published port) is done inside it with host.py.
"""

from __future__ import annotations

import json
import time

import pytest

from containers.conftest import wait_for


docker = pytest.importorskip("docker", reason="docker-py missing: sudo bash scripts/bootstrap.sh")

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

WAIT_S = 30.0




def test_api_client_networks_containers_exec_logs(dhost):
    api = dhost.api_client()
    try:
        assert api.ping() is True
        assert api.version()["ApiVersion"] == api.api_version

        # a network with IPAM and labels, found by name and by label
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.124.0.0/24",
                                                                           gateway="10.124.0.1")])  # fmt: skip
        net_id = api.create_network("pynet", driver="bridge", ipam=ipam, labels={"suite": "docker-py"})["Id"]
        view = api.inspect_network(net_id)
        assert view["Name"] == "pynet" and view["Driver"] == "bridge"
        assert view["IPAM"]["Config"][0]["Subnet"] == "10.124.0.0/24"
        assert view["IPAM"]["Config"][0]["Gateway"] == "10.124.0.1"
        assert view["Labels"] == {"suite": "docker-py"}
        assert [n["Id"] for n in api.networks(names=["pynet"])] == [net_id]
        assert net_id in [n["Id"] for n in api.networks(filters={"label": "suite=docker-py"})]

        # a server with an alias, env, labels and a published port
        host_config = api.create_host_config(port_bindings={80: 8093})
        networking = api.create_networking_config({"pynet": api.create_endpoint_config(aliases=["files"])})
        server = api.create_container(
            "busybox", ["sh", "-c", 'mkdir -p /w && echo "$GREETING" > /w/index.html && echo ready && '
                                    "exec httpd -f -p 80 -h /w"],
            name="server", environment={"GREETING": "hi from docker-py"}, labels={"role": "server"},
            ports=[80], host_config=host_config, networking_config=networking,
        )["Id"]  # fmt: skip
        api.start(server)
        wait_for(lambda: b"ready" in api.logs(server),
                 WAIT_S, what="the server's log line")
        info = api.inspect_container(server)
        assert info["State"]["Running"] and info["Name"] == "/server"
        assert info["Config"]["Labels"]["role"] == "server"
        assert "GREETING=hi from docker-py" in info["Config"]["Env"]
        address = info["NetworkSettings"]["Networks"]["pynet"]["IPAddress"]
        assert address.startswith("10.124.0.")
        assert "files" in info["NetworkSettings"]["Networks"]["pynet"]["Aliases"]
        assert info["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"] == "8093"
        assert dhost.fetch("http://10.124.0.1:8093/") == "hi from docker-py\n"
        assert [c["Id"] for c in api.containers(filters={"label": "role=server"})] == [server]

        # exec: exit code, stdout and stderr apart, a name lookup by alias on the user network
        exec_id = api.exec_create(server, ["sh", "-c", "echo out; echo err >&2; exit 3"])["Id"]
        out, err = api.exec_start(exec_id, demux=True)
        assert (out, err) == (b"out\n", b"err\n")
        assert api.exec_inspect(exec_id)["ExitCode"] == 3
        assert api.exec_inspect(exec_id)["Running"] is False

        # a client connected afterwards reaches the server by its alias
        client = api.create_container("busybox", ["sleep", "600"], name="client")["Id"]
        api.start(client)
        api.connect_container_to_network(client, net_id, aliases=["asker"])
        exec_id = api.exec_create(client, ["wget", "-q", "-O", "-", "http://files/index.html"])["Id"]
        assert api.exec_start(exec_id) == b"hi from docker-py\n"
        assert api.exec_inspect(exec_id)["ExitCode"] == 0
        networks = api.inspect_container(client)["NetworkSettings"]["Networks"]
        assert "pynet" in networks and "asker" in networks["pynet"]["Aliases"]
        api.disconnect_container_from_network(client, net_id)
        assert "pynet" not in api.inspect_container(client)["NetworkSettings"]["Networks"]

        # followed logs: lines arrive while the container runs; the stream ends when it exits
        talker = api.create_container("busybox", ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"],
                                      name="talker")["Id"]  # fmt: skip
        api.start(talker)
        streamed = b"".join(api.logs(talker, stream=True, follow=True))
        assert streamed == b"line1\nline2\nline3\n"
        assert api.wait(talker, timeout=30)["StatusCode"] == 0
        assert api.logs(talker, tail=1) == b"line3\n"
        assert api.logs(talker, timestamps=True).split(b" ", 1)[1].startswith(b"line1")

        # stop, wait, remove; the network goes last
        api.stop(server, timeout=1)
        assert api.wait(server, timeout=30)["StatusCode"] in (0, 137, 143)
        for container in (server, client, talker):
            api.remove_container(container, force=True)
        assert api.containers(all=True) == []
        api.remove_network(net_id)
        assert api.networks(names=["pynet"]) == []
    finally:
        api.close()
    dhost.doctor_clean()


def test_docker_client_models(dhost):
    client = dhost.client()
    try:
        assert client.ping() is True
        net = client.networks.create("models", driver="bridge", labels={"suite": "models"})
        assert client.networks.get("models").id == net.id
        assert [n.name for n in client.networks.list(names=["models"])] == ["models"]

        # run to completion: output returned, container removed
        assert client.containers.run("busybox", ["echo", "hello"], remove=True) == b"hello\n"
        with pytest.raises(docker.errors.ContainerError) as failed:
            client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 4"], remove=True)
        assert failed.value.exit_status == 4
        assert client.containers.list(all=True) == []

        # detached, on the network, with a hostname, env and labels
        box = client.containers.run("busybox", ["sleep", "600"], detach=True, name="box", network="models",
                                    hostname="boxhost", environment={"K": "v"}, labels={"suite": "models"})  # fmt: skip
        box.reload()
        assert box.status == "running" and box.name == "box"
        assert client.containers.get("box").id == box.id
        assert [c.id for c in client.containers.list(filters={"label": "suite=models"})] == [box.id]
        assert [c.id for c in client.containers.list(filters={"network": "models"})] == [box.id]
        result = box.exec_run(["sh", "-c", "hostname; echo $K"])
        assert result.exit_code == 0 and result.output == b"boxhost\nv\n"
        assert box.exec_run(["sh", "-c", "exit 5"]).exit_code == 5
        net.reload()
        assert [c.id for c in net.containers] == [box.id]

        # a second container joins by network.connect with an alias and reaches box by name
        peer = client.containers.run("busybox", ["sleep", "600"], detach=True, name="peer")
        net.connect(peer, aliases=["buddy"])
        assert peer.exec_run(["ping", "-c1", "-W2", "box"]).exit_code == 0
        assert box.exec_run(["ping", "-c1", "-W2", "buddy"]).exit_code == 0
        net.disconnect(peer)
        net.reload()
        assert [c.id for c in net.containers] == [box.id]

        # logs, stop, wait, remove
        speaker = client.containers.run("busybox", ["sh", "-c", "echo one; echo two >&2"], detach=True)
        assert speaker.wait(timeout=30)["StatusCode"] == 0
        assert speaker.logs(stdout=True, stderr=False) == b"one\n"
        assert speaker.logs(stdout=False, stderr=True) == b"two\n"
        box.stop(timeout=1)
        box.reload()
        assert box.status == "exited"
        for container in (box, peer, speaker):
            container.remove(force=True)
        net.remove()
        assert client.networks.list(names=["models"]) == []
        assert client.containers.list(all=True) == []

        # what does not exist: docker-py's NotFound from a 404
        with pytest.raises(docker.errors.NotFound):
            client.containers.get("nothing-here")
        with pytest.raises(docker.errors.NotFound):
            client.networks.get("nothing-here")
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("nothing-here:latest")
    finally:
        client.close()
    dhost.doctor_clean()


def test_images_list_inspect_tag_save_load_remove(dhost):
    client = dhost.client()
    api = dhost.api_client()
    try:
        busybox = client.images.get("busybox")
        assert "busybox:latest" in busybox.tags
        assert any(image.id == busybox.id for image in client.images.list())
        assert api.inspect_image("busybox")["Id"] == busybox.id

        assert busybox.tag("example/bb", "v1") is True
        assert "example/bb:v1" in client.images.get(busybox.id).tags
        assert [i.id for i in client.images.list(name="example/bb")] == [busybox.id]
        assert client.containers.run("example/bb:v1", ["echo", "tagged"], remove=True) == b"tagged\n"

        # save (docker save's tar), remove the tag, load it back under its old name
        archive = b"".join(client.images.get("example/bb:v1").save(named="example/bb:v1"))
        assert len(archive) > 100_000  # a real image archive: busybox's layer is ~2 MB
        client.images.remove("example/bb:v1")
        assert "example/bb:v1" not in client.images.get(busybox.id).tags
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get("example/bb:v1")
        loaded = client.images.load(archive)
        assert [image.id for image in loaded] == [busybox.id]
        assert "example/bb:v1" in client.images.get(busybox.id).tags

        # the low-level calls too: tag, history-free inspect, remove
        assert api.tag("busybox", "example/low", "v2") is True
        assert api.inspect_image("example/low:v2")["Id"] == busybox.id
        api.remove_image("example/low:v2")
        api.remove_image("example/bb:v1")
        assert {t for i in client.images.list() for t in i.tags} == {"busybox:latest"}
        names = json.dumps(api.images())
        assert "example/" not in names
    finally:
        client.close()
        api.close()
    dhost.doctor_clean()


def test_volumes_events_stats_attach_and_life_cycle_calls(dhost):
    client = dhost.client()
    api = dhost.api_client()
    try:
        since = int(time.time()) - 1
        # named volumes: made, used by two containers one after the other, listed, removed
        volume = client.volumes.create("pydata", labels={"suite": "docker-py"})
        assert client.volumes.get("pydata").name == "pydata"
        assert "pydata" in [v.name for v in client.volumes.list(filters={"label": "suite=docker-py"})]
        client.containers.run("busybox", ["sh", "-c", "echo kept > /data/file"], volumes={"pydata": {"bind": "/data"}},
                              remove=True)  # fmt: skip
        assert client.containers.run("busybox", ["cat", "/data/file"], volumes=["pydata:/data:ro"],
                                     remove=True) == b"kept\n"  # fmt: skip

        # attach to a running container's output, then kill, restart, rename, top, stats
        loop = "trap 'exit 0' TERM; while true; do echo tick; sleep 0.1; done"
        box = client.containers.run("busybox", ["sh", "-c", loop], detach=True, name="ticker")
        stream = box.attach(stream=True, logs=False)
        assert b"tick" in next(iter(stream))
        stream.close()
        processes = box.top()["Processes"]
        assert any("sh" in " ".join(p) for p in processes), processes
        stats = box.stats(stream=False)
        assert stats["memory_stats"].get("usage", 0) > 0 and "cpu_stats" in stats
        box.rename("ticker2")
        assert client.containers.get("ticker2").id == box.id
        box.restart(timeout=1)
        box.reload()
        assert box.status == "running"
        box.kill()
        assert box.wait(timeout=30)["StatusCode"] == 137
        box.reload()
        assert box.status == "exited"

        # prune: the exited container, then the volume no container uses any more
        pruned = client.containers.prune()
        assert box.id in (pruned.get("ContainersDeleted") or [])
        volume.remove()
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get("pydata")

        # the events of all that, filtered as compose and testcontainers filter them
        until = int(time.time()) + 1
        events = list(api.events(since=since, until=until, decode=True, filters={"type": "container",
                                                                                  "container": box.id}))  # fmt: skip
        actions = [e["Action"] for e in events]
        for action in ("create", "start", "rename", "kill", "die", "destroy"):
            assert action in actions, actions
        assert all(e["Type"] == "container" and e["Actor"]["ID"] == box.id for e in events)
        volume_events = list(api.events(since=since, until=until, decode=True, filters={"type": "volume"}))
        assert {"create", "destroy"} <= {e["Action"] for e in volume_events}
    finally:
        client.close()
        api.close()
    dhost.doctor_clean()
