"""testcontainers-python (4.x, on docker-py 7) starts a busybox container on netctl's Docker Engine API,
waits for its log line, reaches its exposed port on the address testcontainers picks (for a unix://
DOCKER_HOST that is localhost) and removes it on leaving the `with` block.

The script runs inside the throwaway host (its network namespace is where the port is published), with
DOCKER_HOST on the agent's socket and Ryuk off (TESTCONTAINERS_RYUK_DISABLED: Ryuk is a container image
pulled from a registry). busybox is imported beforehand by the fixture and the host has no route
anywhere, so nothing can be pulled: a lookup that missed would fail the test rather than reach out.
"""

from __future__ import annotations

import json
import sys

import pytest


pytest.importorskip("testcontainers", reason="testcontainers missing: sudo bash scripts/bootstrap.sh")

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

SCRIPT = r"""
import json, urllib.request
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

command = ["sh", "-c", "mkdir -p /w && echo pong > /w/ping && echo serving on 8000 && exec httpd -f -p 8000 -h /w"]
container = (DockerContainer("busybox").with_command(command).with_exposed_ports(8000)
             .with_env("MODE", "test").waiting_for(LogMessageWaitStrategy("serving on 8000").with_startup_timeout(60)))
with container as c:
    host, port = c.get_container_host_ip(), c.get_exposed_port(8000)
    body = urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=10).read().decode()
    stdout, _ = c.get_logs()
    inner = c.get_wrapped_container()
    inner.reload()
    result = {"host": host, "port": port, "body": body, "id": c.get_container_id(), "logs": stdout.decode(),
              "status": inner.status, "env": inner.attrs["Config"]["Env"],
              "labels": inner.attrs["Config"]["Labels"]}
print(json.dumps(result))
"""


# How testcontainers reaches the port: docker_host (a unix:// DOCKER_HOST: localhost) is what it picks on
# a plain machine; gateway_ip is what it picks when it believes it runs inside a container (this machine
# has a /.dockerenv, which the throwaway host shares): the container network's gateway, found through
# the container list's HostConfig.NetworkMode and NetworkSettings. Both are asked for explicitly.
@pytest.mark.parametrize("mode", ["docker_host", "gateway_ip"])
def test_testcontainers_busybox_exposed_port_and_log_wait(dhost, mode):
    env = dhost.docker_env(env={"TESTCONTAINERS_RYUK_DISABLED": "true", "TESTCONTAINERS_CONNECTION_MODE": mode})
    ran = dhost.run(sys.executable, "-c", SCRIPT, env=env, check=False, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["body"] == "pong\n"
    if mode == "docker_host":
        assert result["host"] == "localhost"
    else:
        gateway = dhost.json("network", "inspect", "bridge")[0]["IPAM"]["Config"][0]["Gateway"]
        assert result["host"] == gateway
    assert 1024 <= result["port"] <= 65535  # an ephemeral host port the engine chose
    assert "serving on 8000" in result["logs"]
    assert result["status"] == "running"
    assert "MODE=test" in result["env"]
    assert any(key.startswith("org.testcontainers") for key in result["labels"]), result["labels"]
    # leaving the `with` block removed the container (and its port mapping)
    assert dhost.docker("ps", "-aq").stdout.split() == []
    dhost.doctor_clean()
