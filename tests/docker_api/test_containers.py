"""Containers through the real docker CLI (28.x, also pinned to API 1.41) on the agent's Docker socket:
run -d/--rm/-p/-e/-v/--name/--network-alias/--memory, ps -a --filter, inspect -f, stop/kill/restart/
rm -f, wait, stats --no-stream, top, rename, restart policies, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

FETCH = "import urllib.request as u; print(u.urlopen('http://{}/', timeout=3).read().decode(), end='')"



def _until(check, timeout: float = 20.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_run_detached_with_options_on_a_user_network(dhost, api_version):
    d = lambda *a, **kw: dhost.docker(*a, api_version=api_version, **kw)  # noqa: E731
    dhost.netctl("network", "create", "--subnet", "10.90.0.0/24", "appnet")
    dhost.run("sh", "-c", "mkdir -p /run/www && echo served > /run/www/index.html")
    cid = d("run", "-d", "--name", "web", "--network", "appnet", "--network-alias", "www", "-p", "8081:80",
            "-e", "GREETING=hi", "-v", "/run/www:/www:ro", "--memory", "64m", "--label", "tier=front",
            "busybox", "httpd", "-f", "-p", "80", "-h", "/www").stdout.strip()  # fmt: skip
    assert len(cid) == 64
    fmt = "{{.Name}} {{.State.Status}} {{.NetworkSettings.Networks.appnet.IPAddress}} {{.HostConfig.Memory}}"
    name, status, address, memory = d("inspect", "-f", fmt, "web").stdout.split()
    assert (name, status, memory) == ("/web", "running", str(64 << 20))
    assert address.startswith("10.90.0.")
    aliases = json.loads(d("inspect", "-f", "{{json .NetworkSettings.Networks.appnet.Aliases}}", "web").stdout)
    assert "www" in aliases
    ports = json.loads(d("inspect", "-f", "{{json .NetworkSettings.Ports}}", "web").stdout)
    assert {"HostIp": "0.0.0.0", "HostPort": "8081"} in ports["80/tcp"]
    # The published port from the host, the alias from a peer, the environment through exec.
    assert dhost.host.py(FETCH.format("10.90.0.1:8081"), timeout=15).stdout == "served\n"
    peer = d("run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-", "http://www/").stdout
    assert peer == "served\n"
    assert d("exec", "web", "sh", "-c", "echo $GREETING").stdout == "hi\n"
    # ps: Docker's columns and filters.
    line = d("ps", "--filter", "label=tier=front", "--format", "{{.Names}}|{{.Status}}|{{.Ports}}").stdout
    assert line.startswith("web|Up ") and "8081->80/tcp" in line
    assert d("ps", "-q", "--filter", "name=nothing-like-it").stdout == ""
    assert d("ps", "-q", "--filter", "network=appnet").stdout.strip() == cid[:12]
    assert d("ps", "-q", "--filter", "ancestor=busybox").stdout.strip() == cid[:12]
    d("rm", "-f", "web")
    assert d("ps", "-aq").stdout == ""
    dhost.doctor_clean()


def test_foreground_run_output_exit_code_and_auto_remove(dhost):
    result = dhost.docker("run", "--rm", "--name", "once", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3",
                          check=False)  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert _until(lambda: dhost.docker("ps", "-aq").stdout == "", 10)
    # Without --rm it stays, exited, with its code and its logs.
    dhost.docker("run", "--name", "kept", "busybox", "sh", "-c", "echo kept; exit 4", check=False)
    assert dhost.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "kept").stdout.split() == [
        "exited", "4"]  # fmt: skip
    assert dhost.docker("logs", "kept").stdout == "kept\n"
    line = dhost.docker("ps", "-a", "--filter", "exited=4", "--format", "{{.Names}} {{.Status}}").stdout
    assert line.startswith("kept Exited (4) ")
    dhost.docker("rm", "kept")
    dhost.doctor_clean()


def test_stop_kill_start_restart_wait_rename(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "sleeper", "busybox", "sleep", "600")
    started = d("inspect", "-f", "{{.State.StartedAt}}", "sleeper").stdout.strip()
    d("restart", "-t", "1", "sleeper")
    assert d("inspect", "-f", "{{.State.StartedAt}}", "sleeper").stdout.strip() != started
    assert d("inspect", "-f", "{{.State.Running}}", "sleeper").stdout.strip() == "true"
    waiter = dhost.docker_popen("wait", "sleeper", stdout=-1, stderr=-1)
    d("kill", "sleeper")
    out, err = waiter.communicate(timeout=20)
    assert out.strip() == "137", err
    assert d("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "sleeper").stdout.split() == ["exited", "137"]
    d("start", "sleeper")
    d("rename", "sleeper", "dozer")
    assert d("inspect", "-f", "{{.Name}}", "dozer").stdout.strip() == "/dozer"
    t0 = time.monotonic()
    d("stop", "-t", "1", "dozer")  # sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s
    assert time.monotonic() - t0 < 8
    assert d("wait", "dozer").stdout.strip() == "137"
    # A stopped container: stop again is fine, kill is refused.
    d("stop", "dozer")
    refused = d("kill", "dozer", check=False)
    assert refused.returncode != 0 and "is not running" in refused.stderr
    d("rm", "dozer")
    dhost.doctor_clean()


def test_stats_and_top(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "busy", "--memory", "32m", "busybox", "sh", "-c", "while :; do :; done")
    out = d("stats", "--no-stream", "--format", "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}", "busy").stdout
    name, cpu, mem, pids = out.strip().split("|")
    assert name == "busy" and pids == "1"
    assert float(cpu.rstrip("%")) > 10.0  # a busy loop
    assert mem.endswith("/ 32MiB")
    top = d("top", "busy").stdout
    assert "PID" in top.splitlines()[0] and "while" in top
    with dhost.api_client() as api:
        sample = api.stats("busy", stream=False)
        assert sample["cpu_stats"]["cpu_usage"]["total_usage"] > 0
        assert sample["memory_stats"]["limit"] == 32 << 20
        assert "eth0" in sample["networks"]
        streamed = api.stats("busy", stream=True, decode=True)
        first, second = next(streamed), next(streamed)
        assert second["precpu_stats"]["cpu_usage"]["total_usage"] == first["cpu_stats"]["cpu_usage"]["total_usage"]
        streamed.close()
    d("rm", "-f", "busy")


def test_restart_policies(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo try; exit 1")

    def settled():
        state = dhost.json("inspect", "flaky")[0]
        return state if state["State"]["Status"] == "exited" and state["RestartCount"] == 2 else None

    state = _until(settled, 20)
    assert state, dhost.json("inspect", "flaky")[0]["State"]
    assert state["State"]["ExitCode"] == 1 and state["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert d("logs", "flaky").stdout == "try\ntry\ntry\n"
    # always: restarted after its process dies, until stopped by hand.
    d("run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "600")
    pid = d("inspect", "-f", "{{.State.Pid}}", "always").stdout.strip()
    dhost.run("kill", "-9", pid)

    def restarted():
        out = d("inspect", "-f", "{{.State.Status}} {{.RestartCount}} {{.State.Pid}}", "always").stdout.split()
        return out[0] == "running" and out[1] == "1" and out[2] != pid

    assert _until(restarted, 20)
    d("stop", "-t", "1", "always")
    time.sleep(0.5)
    assert d("inspect", "-f", "{{.State.Status}}", "always").stdout.strip() == "exited"
    d("rm", "flaky", "always")
    dhost.doctor_clean()


def test_bad_input_is_refused_with_one_message_and_nothing_made(dhost):
    d = dhost.docker
    missing = d("container", "inspect", "nosuch", check=False)
    assert missing.returncode != 0 and "No such container: nosuch" in missing.stderr
    stop = d("stop", "nosuch", check=False)
    assert stop.returncode != 0 and "No such container" in stop.stderr
    d("run", "-d", "--name", "one", "-p", "8082:80", "busybox", "sleep", "600")
    clash = d("run", "-d", "--name", "one", "busybox", "true", check=False)
    assert clash.returncode != 0 and 'The container name "/one" is already in use' in clash.stderr
    assert clash.stderr.count("Error response from daemon") == 1, clash.stderr
    taken = d("run", "-d", "--name", "two", "-p", "8082:80", "busybox", "sleep", "600", check=False)
    assert taken.returncode != 0 and "8082" in taken.stderr, taken.stderr
    names = d("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.split("\n")
    assert "one running" in names
    with dhost.api_client() as api:
        import docker

        with pytest.raises(docker.errors.APIError) as refused:
            api.create_container("busybox", "true", host_config=api.create_host_config(privileged=True))
        assert refused.value.status_code == 400 and "Privileged" in str(refused.value)
        with pytest.raises(docker.errors.APIError) as refused:
            api.create_container("busybox", "true", host_config={"Devices": [{"PathOnHost": "/dev/null"}]})
        assert refused.value.status_code == 400 and "Devices" in str(refused.value)
        with pytest.raises(docker.errors.NotFound):
            api.create_container("no-such-image:1", "true")
    # Nothing half-made: only `one` exists (and `two`, created, whose start failed, as dockerd leaves it).
    left = set(d("ps", "-a", "--format", "{{.Names}}").stdout.split())
    assert left <= {"one", "two"}
    d("rm", "-f", *left)
    dhost.doctor_clean()
    dhost.assert_no_traceback()


def test_container_events_including_restarts(dhost):
    since = dhost.docker("version", "--format", "{{.Server.Version}}").stdout  # the agent answers
    assert since
    fmt = "{{.Action}} {{.Actor.Attributes.name}}"
    watcher = dhost.docker_popen("events", "--filter", "type=container", "--format", fmt,
                                 stdout=-1, stderr=-1)  # fmt: skip
    try:
        time.sleep(0.5)
        dhost.docker("run", "-d", "--name", "ev", "--restart", "on-failure:1", "busybox", "sh", "-c", "exit 1")
        assert _until(lambda: dhost.docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", "ev").stdout.split()
                      == ["exited", "1"], 20)  # fmt: skip
        time.sleep(0.5)
        dhost.docker("rm", "ev")
        dhost.docker("run", "-d", "--name", "ev2", "busybox", "sleep", "600")
        dhost.docker("stop", "-t", "1", "ev2")
        dhost.docker("rm", "ev2")
        time.sleep(0.5)
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)  # nsenter and the docker CLI under it
        out, _ = watcher.communicate(timeout=10)
    actions = [line.split()[0] for line in out.splitlines() if line.endswith(" ev")]
    assert actions == ["create", "start", "die", "start", "die", "destroy"], out
    actions = [line.split()[0] for line in out.splitlines() if line.endswith(" ev2")]
    assert actions == ["create", "start", "kill", "die", "stop", "destroy"], out


def test_monitor_restart_keeps_created_containers_and_restarts_always(dhost):
    d = dhost.docker
    d("create", "--name", "made", "busybox", "true")
    d("run", "-d", "--name", "keeper", "--restart", "always", "busybox", "sleep", "600")
    pid = d("inspect", "-f", "{{.State.Pid}}", "keeper").stdout.strip()
    monitor = json.loads(dhost.netctl("monitor-stats").stdout)["pid"]
    dhost.run("kill", "-9", str(monitor))
    dhost.run("kill", "-9", pid)  # dies with no monitor to see it
    d("run", "--rm", "busybox", "true")  # the next request starts a monitor, which finds both

    def restarted():
        out = d("inspect", "-f", "{{.State.Status}} {{.RestartCount}} {{.State.Pid}}", "keeper").stdout.split()
        return out[0] == "running" and out[1] == "1" and out[2] != pid

    assert _until(restarted, 20), d("inspect", "keeper").stdout
    assert d("inspect", "-f", "{{.State.Status}}", "made").stdout.strip() == "created"
    d("start", "-a", "made")
    assert d("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "made").stdout.split() == ["exited", "0"]
    d("rm", "-f", "keeper", "made")
    dhost.doctor_clean()


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_static_address_mac_and_aliases_per_network(dhost, api_version):
    d = lambda *a, **kw: dhost.docker(*a, api_version=api_version, **kw)  # noqa: E731
    dhost.netctl("network", "create", "--subnet", "10.91.0.0/24", "statics")
    # The CLI sends --mac-address per network from API 1.44 on, and refuses it itself below.
    mac = ["--mac-address", "02:42:0a:5b:00:99"] if api_version is None else []
    d("run", "-d", "--name", "pinned", "--network", "statics", "--ip", "10.91.0.50", *mac, "--network-alias", "pin",
      "--add-host", "db.example:10.1.2.3", "--tmpfs", "/scratch:size=1m", "busybox", "sleep", "600")  # fmt: skip
    fmt = "{{.NetworkSettings.Networks.statics.IPAddress}} {{.NetworkSettings.Networks.statics.MacAddress}}"
    expected_mac = "02:42:0a:5b:00:99" if mac else "02:42:0a:5b:00:32"  # else derived from the address, as Docker
    assert d("inspect", "-f", fmt, "pinned").stdout.split() == ["10.91.0.50", expected_mac]
    inside = d("exec", "pinned", "sh", "-c", "cat /sys/class/net/eth0/address; grep db.example /etc/hosts; "
               "mount | grep ' /scratch '").stdout  # fmt: skip
    assert expected_mac in inside and "10.1.2.3\tdb.example" in inside and "tmpfs on /scratch" in inside
    assert d("run", "--rm", "--network", "statics", "busybox", "ping", "-c1", "-W2", "pin").returncode == 0
    d("rm", "-f", "pinned")


def test_healthcheck_runs_in_the_monitor(dhost):
    d = dhost.docker
    d("run", "-d", "--name", "checked", "--health-cmd", "cat /tmp/ok", "--health-interval", "300ms",
      "--health-retries", "2", "--health-timeout", "2s", "busybox", "sleep", "600")  # fmt: skip
    status = lambda: d("inspect", "-f", "{{.State.Health.Status}}", "checked").stdout.strip()  # noqa: E731
    assert _until(lambda: status() == "unhealthy", 15), status()
    health = dhost.json("inspect", "checked")[0]["State"]["Health"]
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    assert "No such file" in health["Log"][-1]["Output"]
    assert "(unhealthy)" in d("ps", "--format", "{{.Status}}").stdout
    d("exec", "checked", "sh", "-c", "echo fine > /tmp/ok")
    assert _until(lambda: status() == "healthy", 15), status()
    assert d("ps", "-q", "--filter", "health=healthy").stdout.strip() != ""
    assert dhost.json("inspect", "checked")[0]["State"]["Health"]["Log"][-1]["Output"] == "fine\n"
    # A probe that outlives its timeout fails.
    d("run", "-d", "--name", "slow", "--health-cmd", "sleep 5", "--health-interval", "200ms", "--health-retries", "1",
      "--health-timeout", "300ms", "busybox", "sleep", "600")  # fmt: skip
    slow = lambda: d("inspect", "-f", "{{.State.Health.Status}}", "slow").stdout.strip()  # noqa: E731
    assert _until(lambda: slow() == "unhealthy", 15), slow()
    assert "exceeded timeout" in dhost.json("inspect", "slow")[0]["State"]["Health"]["Log"][-1]["Output"]
    d("rm", "-f", "checked", "slow")
    dhost.doctor_clean()
    dhost.assert_no_traceback()


def test_an_images_healthcheck_and_stop_signal_apply_unless_disabled(dhost):
    from containers.archives import busybox_layer, docker_save

    check = {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 200_000_000, "Retries": 1}
    docker_save(dhost.path("/run/checked.tar"), [busybox_layer()], "checked:1", Healthcheck=check,
                StopSignal="SIGUSR1")  # fmt: skip
    dhost.docker("load", "-i", "/run/checked.tar")
    dhost.docker("run", "-d", "--name", "inherits", "checked:1", "sh", "-c", "trap 'exit 7' USR1; sleep 600 & wait")
    dhost.docker("run", "-d", "--name", "disabled", "--no-healthcheck", "checked:1", "sleep", "600")
    status = lambda: dhost.docker("inspect", "-f", "{{.State.Health.Status}}", "inherits").stdout.strip()  # noqa: E731
    assert _until(lambda: status() == "unhealthy", 15), status()
    assert "Health" not in dhost.json("inspect", "disabled")[0]["State"]
    # SIGUSR1 (the image's STOPSIGNAL), which the shell traps: no wait for the timeout's SIGKILL.
    t0 = time.monotonic()
    dhost.docker("stop", "-t", "20", "inherits")
    assert time.monotonic() - t0 < 10
    assert dhost.docker("inspect", "-f", "{{.State.ExitCode}}", "inherits").stdout.strip() == "7"
    dhost.docker("rm", "-f", "inherits", "disabled")


def test_rename_of_a_running_container_renames_it_on_its_networks(dhost):
    d = dhost.docker
    dhost.netctl("network", "create", "--subnet", "10.92.0.0/24", "names")
    d("run", "-d", "--name", "before", "--network", "names", "busybox", "sleep", "600")
    d("run", "-d", "--name", "peer", "--network", "names", "busybox", "sleep", "600")
    address = d("inspect", "-f", "{{.NetworkSettings.Networks.names.IPAddress}}", "before").stdout.strip()
    d("rename", "before", "after")
    assert d("exec", "peer", "ping", "-c1", "-W2", "after").returncode == 0
    assert "after" in d("exec", "after", "cat", "/etc/hosts").stdout  # its own entry too

    def resolves(name: str) -> bool:
        return address in d("exec", "peer", "nslookup", name, "127.0.0.11", check=False).stdout

    assert _until(lambda: resolves("after"), 10) and not resolves("before")
    d("rm", "-f", "after", "peer")
    dhost.doctor_clean()


def test_sysctls_and_dns_options(dhost):
    d = dhost.docker
    out = d("run", "--rm", "--sysctl", "net.ipv4.ip_unprivileged_port_start=80", "--sysctl", "kernel.shmmni=100",
            "--dns-search", "example.org", "--dns-option", "ndots:2", "busybox", "sh", "-c",
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni /etc/resolv.conf").stdout
    assert out.startswith("80\n100\n"), out
    assert "example.org" in out and "ndots:2" in out
    refused = d("run", "--rm", "--sysctl", "kernel.hostname=x", "busybox", "true", check=False)
    assert refused.returncode != 0 and "kernel.hostname" in refused.stderr
    assert d("ps", "-aq").stdout == ""  # nothing made


def test_ulimits_and_shm_size(dhost):
    out = dhost.docker("run", "--rm", "--ulimit", "nofile=512:1024", "--ulimit", "nproc=77", "--shm-size", "8m",
                       "busybox", "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; df -k /dev/shm | tail -1").stdout
    soft, hard, nproc, shm = out.splitlines()
    assert (soft, hard, nproc) == ("512", "1024", "77")
    assert shm.split()[1] == "8192"
    refused = dhost.docker("run", "--rm", "--ulimit", "nofile=10:5", "busybox", "true", check=False)
    assert refused.returncode != 0 and "nofile" in refused.stderr


def test_network_modes_none_and_host(dhost):
    links = dhost.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    dhost.docker("run", "-d", "--name", "onhost", "--network", "host", "busybox", "sleep", "600")
    view = dhost.json("inspect", "onhost")[0]
    assert view["HostConfig"]["NetworkMode"] == "host" and "host" in view["NetworkSettings"]["Networks"]
    # dockerd drops -p with the host's network silently; netctl says so instead of ignoring it.
    refused = dhost.docker("run", "--rm", "--network", "host", "-p", "8085:80", "busybox", "true", check=False)
    assert refused.returncode != 0 and refused.stderr.count("Error response from daemon") == 1, refused.stderr
    assert "-p" in refused.stderr
    dhost.docker("rm", "-f", "onhost")
