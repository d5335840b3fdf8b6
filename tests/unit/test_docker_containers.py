"""Pure logic behind the Docker API's containers: create's body to the runner's request (and what is
refused), the list/inspect shapes and filters, restart policies and their back-off, log selection."""

from __future__ import annotations

import json
import os

import pytest

from netctl.docker_api import containers_config, containers_view
from netctl.docker_api.http import ApiError
from runner import logs, restart
from runner.spec import ContainerConfig, NetworkAttachment, RunRequest
from runner.state import Container, ContainerState

FIELDS = set(RunRequest.__dataclass_fields__)


def translate(body: dict, name: str = "") -> dict:
    return containers_config.run_request(body, name, FIELDS)


def test_create_body_maps_to_the_runners_request():
    body = {
        "Image": "busybox", "Cmd": ["sleep", "1"], "Entrypoint": None, "Env": ["A=1", "B"], "Labels": {"k": "v"},
        "Tty": True, "OpenStdin": True, "StdinOnce": True, "StopSignal": "SIGQUIT", "StopTimeout": 3,
        "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}},
        "HostConfig": {
            "Binds": ["/tmp:/t:ro,z", "vol:/data"], "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
            "Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 10, "CapAdd": ["NET_ADMIN"],
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}, "ExtraHosts": ["db:10.0.0.5"],
            "Tmpfs": {"/run": "size=1m"}, "NetworkMode": "appnet", "Links": [], "LogConfig": {"Type": "json-file"},
            "Mounts": [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 4096}}],
        },
        "NetworkingConfig": {"EndpointsConfig": {"appnet": {"Aliases": ["www"], "IPAMConfig": {"IPv4Address":
                                                                                                "10.9.0.9"}}}},
    }  # fmt: skip
    request = translate(body, "web")
    assert request["name"] == "web" and request["command"] == ["sleep", "1"] and request["env"] == ["A=1"]
    assert request["volumes"] == ["/tmp:/t:ro", "vol:/data"]
    assert request["publish"] == [{"host_port": 8080, "container_port": 80, "protocol": "tcp", "host_ip": ""}]
    assert (request["memory"], request["cpus"], request["pids_limit"]) == (str(64 << 20), "0.5", "10")
    assert request["restart"] == "on-failure:3" and request["stop_signal"] == "SIGQUIT"
    assert request["networks"] == ["appnet"]
    assert request["endpoints"] == {"appnet": {"aliases": ["www"], "ip": "10.9.0.9", "mac": ""}}
    assert request["tmpfs"] == ["/run:size=1m", "/scratch:size=4096"]
    assert request["tty"] and request["interactive"] and request["stdin_once"]
    RunRequest.from_dict(request)  # every key is a field of the runner's request


@pytest.mark.parametrize("body, field", [
    ({"HostConfig": {"Privileged": True}}, "HostConfig.Privileged"),
    ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/kvm"}]}}, "HostConfig.Devices"),
    ({"HostConfig": {"NetworkMode": "container:other"}}, "HostConfig.NetworkMode"),
    ({"HostConfig": {"SomethingNew": 5}}, "HostConfig.SomethingNew"),
    ({"HostConfig": {"Init": True}}, "HostConfig.Init"),
    ({"HostConfig": {"Sysctls": ["net.ipv4.ip_forward=1"]}}, "HostConfig.Sysctls"),
    ({"HostConfig": {"PidMode": "host"}}, "HostConfig.PidMode"),
    ({"Healthcheck": {"Test": ["WHATEVER", "true"]}}, "Config.Healthcheck.Test"),
    ({"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}}, "Config.Healthcheck.Interval"),
    ({"Volumes": {"/anon": {}}}, "Config.Volumes"),
    ({"Weird": 1}, "Config.Weird"),
    ({"HostConfig": {"Mounts": [{"Type": "npipe", "Target": "/x"}]}}, "HostConfig.Mounts"),
    ({"HostConfig": {"LogConfig": {"Type": "syslog"}}}, "HostConfig.LogConfig.Type"),
])  # fmt: skip
def test_what_netctl_cannot_do_is_refused_by_name(body, field):
    with pytest.raises(ApiError) as refused:
        translate({"Image": "busybox", **body})
    assert refused.value.status == 400 and field in refused.value.message


def test_zero_values_and_defaults_pass():
    request = translate({"Image": "busybox", "Cmd": None, "HostConfig": {
        "Privileged": False, "Devices": [], "IpcMode": "private", "Runtime": "runc", "CpuShares": 0,
        "OomKillDisable": False, "MemorySwappiness": None, "ShmSize": 0, "NewThing": None}})  # fmt: skip
    assert request["networks"] == ["bridge"] and request["command"] == []
    with pytest.raises(ApiError):
        translate({"Cmd": ["true"]})  # no image


def _container(**state) -> Container:
    config = ContainerConfig(id="ab" * 32, name="web", created="2026-01-01T00:00:00+00:00", image="busybox",
                             image_id="cd" * 32, layers=[], argv=["sleep", "600"], env=[], workdir="/", user="",
                             hostname="h", labels={"tier": "front", "app": "x"},
                             networks=[NetworkAttachment(network="appnet")])  # fmt: skip
    return Container(config, ContainerState(**state))


def test_list_and_inspect_shapes():
    views = {"appnet": {"EndpointID": "e1", "IPv4Address": "10.9.0.2/24", "Gateway": "10.9.0.1", "NetworkID": "n1",
                        "Aliases": ["www"], "Ports": ["8080->80/tcp", "127.0.0.1:9090->90/udp"], "Name": "web"}}
    container = _container(status="running", pid=5, started="2026-01-01T00:00:01+00:00")
    entry = containers_view.list_entry(container, views)
    assert entry["Names"] == ["/web"] and entry["State"] == "running" and entry["Status"].startswith("Up ")
    assert {"IP": "127.0.0.1", "PrivatePort": 90, "PublicPort": 9090, "Type": "udp"} in entry["Ports"]
    view = containers_view.inspect(container, views, "/d")
    network = view["NetworkSettings"]["Networks"]["appnet"]
    assert (network["IPAddress"], network["IPPrefixLen"], network["Gateway"]) == ("10.9.0.2", 24, "10.9.0.1")
    assert network["Aliases"] == ["www", container.id[:12]]
    assert view["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                                                          {"HostIp": "::", "HostPort": "8080"}]
    assert view["State"]["ExitCode"] == 0 and view["Name"] == "/web" and view["State"]["FinishedAt"].startswith("0001")
    json.dumps(view)


def test_list_filters():
    container = _container(status="exited", exit_code=3)
    match = lambda f: containers_view.matches(container, f, {}, {"busybox": "cd" * 32})  # noqa: E731
    assert match({"label": ["tier=front", "app"]}) and not match({"label": ["tier=front", "app=y"]})
    assert match({"name": ["we"]}) and match({"status": ["exited", "running"]}) and match({"exited": ["3"]})
    assert match({"network": ["appnet"]}) and match({"ancestor": ["busybox"]}) and not match({"id": ["ff"]})
    with pytest.raises(ApiError):
        match({"status": ["sleeping"]})
    with pytest.raises(ApiError):
        match({"colour": ["blue"]})


def test_human_durations_as_docker_prints_them():
    assert [containers_view.human_duration(s) for s in (0.2, 1, 59, 60, 150, 3600, 7200, 86400 * 3)] == [
        "Less than a second", "1 second", "59 seconds", "About a minute", "2 minutes", "About an hour", "2 hours",
        "3 days"]  # fmt: skip


def test_restart_policies_and_back_off():
    assert not restart.should_restart("no", 1, 0, False)
    assert not restart.should_restart("", 1, 0, False)
    assert restart.should_restart("always", 0, 99, False) and not restart.should_restart("always", 0, 0, True)
    assert restart.should_restart("unless-stopped", 0, 0, False)
    assert restart.should_restart("on-failure", 1, 1000, False)
    assert not restart.should_restart("on-failure", 0, 0, False)
    assert restart.should_restart("on-failure:2", 1, 1, False)
    assert not restart.should_restart("on-failure:2", 1, 2, False)
    delays = [0.0]
    for _ in range(12):
        delays.append(restart.next_delay(delays[-1], 0.5))
    assert delays[1:4] == [0.1, 0.2, 0.4] and delays[-1] == restart.BACKOFF_MAX_S
    assert restart.next_delay(6.4, 11.0) == 0.1  # it ran 10 s or more: start over
    assert restart.should_restart("unless-stopped", 255, 0, False)  # ended unwatched: a new monitor starts it
    assert not restart.should_restart("always", 255, 0, True)  # stopped by hand stays stopped


def test_log_selection_tail_since_until(tmp_path):
    path = os.path.join(tmp_path, "container.log")
    with open(path, "w") as f:
        for t, stream, data in ((10.0, 1, "a\nb\n"), (20.0, 2, "e\n"), (30.0, 1, "c\nd")):
            f.write(json.dumps({"t": t, "s": stream, "d": data}) + "\n")
    text = lambda **kw: "".join(r["d"] for r in logs.read(path, **kw))  # noqa: E731
    assert text() == "a\nb\ne\nc\nd"
    assert text(tail=2) == "c\nd" and text(tail=0) == ""
    assert text(since=15) == "e\nc\nd" and text(until=25) == "a\nb\ne\n" and text(since=15, tail=1) == "d"
    assert logs.stamp(1.5) == "1970-01-01T00:00:01.500000000Z"


def test_healthcheck_settings_and_judgement():
    from runner.monitor_health import judge

    check = containers_config.healthcheck({"Test": ["CMD-SHELL", "test -e /ok"], "Interval": 2_000_000_000,
                                           "Retries": 2})  # fmt: skip
    assert check == {"argv": ["/bin/sh", "-c", "test -e /ok"], "interval": 2.0, "retries": 2}
    assert containers_config.healthcheck({"Test": ["NONE"]}) == {"argv": []}  # the image's check disabled
    assert containers_config.healthcheck({}) == {}  # the image's check, if it has one
    fail, ok = {"ExitCode": 1, "Output": "no"}, {"ExitCode": 0, "Output": ""}
    health = judge({}, fail, 2, in_start_period=True)
    assert (health["Status"], health["FailingStreak"]) == ("starting", 0)  # the start period forgives
    health = judge(health, fail, 2, in_start_period=False)
    assert (health["Status"], health["FailingStreak"]) == ("starting", 1)
    health = judge(health, fail, 2, in_start_period=False)
    assert (health["Status"], health["FailingStreak"]) == ("unhealthy", 2)
    health = judge(health, ok, 2, in_start_period=False)
    assert (health["Status"], health["FailingStreak"], len(health["Log"])) == ("healthy", 0, 4)
    for _ in range(9):
        health = judge(health, ok, 2, in_start_period=False)
    assert len(health["Log"]) == 5


def test_detach_keys():
    from netctl.docker_api.containers_io import _scan, parse_detach_keys

    keys = parse_detach_keys("ctrl-p,ctrl-q")
    assert keys == b"\x10\x11" and parse_detach_keys("ctrl-a,x") == b"\x01x"
    assert _scan(b"ab\x10", keys) == (b"ab", b"\x10", False)  # held: it may start the sequence
    assert _scan(b"\x10x", keys) == (b"\x10x", b"", False)
    assert _scan(b"ls\x10\x11rest", keys) == (b"ls", b"", True)
    with pytest.raises(ApiError):
        parse_detach_keys("ctrl-1")


@pytest.mark.parametrize("body, field", [
    ({"HostConfig": {"Memory": "lots"}}, "HostConfig.Memory"),
    ({"HostConfig": {"AutoRemove": "yes"}}, "HostConfig.AutoRemove"),
    ({"HostConfig": {"PidsLimit": True}}, "HostConfig.PidsLimit"),
    ({"Cmd": 5}, "Config.Cmd"),
    ({"Labels": ["a"]}, "Config.Labels"),
    ({"HostConfig": "x"}, "Config.HostConfig"),
])  # fmt: skip
def test_wrong_types_are_named(body, field):
    with pytest.raises(ApiError) as refused:
        translate({"Image": "busybox", **body})
    assert refused.value.status == 400 and field in refused.value.message


def test_sysctls_of_the_containers_own_namespaces_only():
    from libnetwork.errors import InvalidArgument
    from runner.spec import check_sysctls

    assert check_sysctls({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1024"}, "bridge") == {
        "net.ipv4.ip_forward": "1", "kernel.shmmax": "1024"}  # fmt: skip
    for bad, mode in (({"kernel.hostname": "x"}, "bridge"), ({"net.core.somaxconn": "1"}, "host"),
                      ({"net.ipv4/../x": "1"}, "bridge"), ({"net.ipv4.ip_forward": ""}, "bridge")):  # fmt: skip
        with pytest.raises(InvalidArgument):
            check_sysctls(bad, mode)
