"""Fixtures for the Docker Engine API tests: a throwaway host whose agent serves the Docker socket,
the real `docker` CLI run inside it, and docker-py clients on that socket.

- ``dhost``: a DockerHost (below): host + own cgroup parent + busybox image (tagged ``busybox``) +
  `netctl daemon` started by hand (its log in /run/netctl-agent.log inside the host). Teardown stops
  the agent, checks that its log and the container monitor's (ROOT/monitor.log: a process of its own,
  whose errors the agent's log never shows) hold no traceback, removes the host and its cgroups.
- ``DockerHost.docker(*args)``: `docker ARGS` inside the host's namespaces with DOCKER_HOST on the
  agent's socket and a DOCKER_CONFIG of its own (never the machine's ~/.docker); ``api_version=`` pins
  DOCKER_API_VERSION (e.g. "1.41").
- ``DockerHost.client()`` / ``api_client()``: docker-py DockerClient / APIClient on the same socket,
  reached from the test process through /proc/PID/root (a Unix socket is found by path, whatever the
  network namespace). Work in the host's network namespace (ports, pings) goes through host.run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from containers.conftest import remove_cgroup_tree
from harness import Host, new_test_cgroup_parent, stop_group

BUSYBOX = "/bin/busybox"
AGENT_LOG = "/run/netctl-agent.log"
DOCKER_CONFIG = "/run/docker-cli-config"
AGENT_START_S = 30.0


def _docker_cli() -> str:
    import shutil

    path = shutil.which("docker")
    if path is None:
        pytest.skip("the docker CLI is not installed")
    return path


class DockerHost:
    """A throwaway host whose agent serves the Docker Engine API."""

    def __init__(self, host: Host, cgroup_parent: str):
        self.host = host
        self.root = host.root
        self.cgroup_parent = cgroup_parent
        self.env = {"NETCTL_CGROUP_PARENT": cgroup_parent}
        self.socket = f"{self.root}/docker.sock"  # inside the host
        self.agent: subprocess.Popen | None = None

    # --- the agent ---------------------------------------------------------------------------------

    def start_agent(self, *args: str) -> None:
        self.agent = self.host.popen("sh", "-c", f'exec "$0" -m netctl daemon "$@" 2>>{AGENT_LOG}',
                                     sys.executable, *args, env=dict(self.env))
        deadline = time.monotonic() + AGENT_START_S
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise AssertionError(f"the agent exited ({self.agent.returncode}):\n{self.agent_log()}")
            if self._answers():
                return
            time.sleep(0.05)
        raise AssertionError(f"the agent did not serve {self.socket} within {AGENT_START_S}s:\n{self.agent_log()}")

    def _answers(self) -> bool:
        path = self.outside_socket
        if not os.path.exists(path):
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(2)
            try:
                probe.connect(path)
                probe.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
                return probe.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

    def stop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            stop_group(agent, signal.SIGTERM)

    def agent_log(self) -> str:
        try:
            with open(self.host.path(AGENT_LOG), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # --- clients -----------------------------------------------------------------------------------

    @property
    def outside_socket(self) -> str:
        return self.host.path(self.socket)

    @property
    def base_url(self) -> str:
        return f"unix://{self.outside_socket}"

    def docker_env(self, api_version: str | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
        out = {**self.env, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": DOCKER_CONFIG,
               "DOCKER_CLI_HINTS": "false"}
        if api_version:
            out["DOCKER_API_VERSION"] = api_version
        out.update(env or {})
        return out

    def docker(self, *args: str, api_version: str | None = None, env: dict[str, str] | None = None,
               **kw) -> subprocess.CompletedProcess:
        """`docker ARGS...` inside the host (check=True by default, as host.run)."""
        return self.host.run(_docker_cli(), *args, env=self.docker_env(api_version, env), **kw)

    def docker_popen(self, *args: str, api_version: str | None = None, env: dict[str, str] | None = None,
                     **kw) -> subprocess.Popen:
        return self.host.popen(_docker_cli(), *args, env=self.docker_env(api_version, env), **kw)

    def client(self, **kw: Any):
        """docker-py's DockerClient on the agent's socket (version negotiated, as from_env does)."""
        import docker

        kw.setdefault("version", "auto")
        kw.setdefault("timeout", 60)
        return docker.DockerClient(base_url=self.base_url, **kw)

    def api_client(self, **kw: Any):
        """docker-py's low-level APIClient on the agent's socket."""
        import docker

        kw.setdefault("version", "auto")
        kw.setdefault("timeout", 60)
        return docker.APIClient(base_url=self.base_url, **kw)

    # --- netctl and checks -------------------------------------------------------------------------

    def netctl(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        return self.host.netctl(*args, env={**self.env, **(env or {})}, **kw)

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.host.run(*argv, **kw)

    def path(self, inner: str) -> str:
        return self.host.path(inner)

    def doctor_clean(self, timeout: float = 30.0) -> None:
        """`netctl doctor` finds nothing, once the kernel has caught up: a removed container's veth
        pair goes with its namespace after the API answered (deferred on purpose, runner/lifecycle.py),
        and the kernel frees namespaces one after the other for the whole machine: while other tests
        churn namespaces that took more than 10 s. So ask again, bounded."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.netctl("doctor", check=False)
            if result.returncode == 0 and result.stdout.strip() == "no problems found":
                return
            assert time.monotonic() < deadline, result.stdout + result.stderr
            time.sleep(0.2)

    def fetch(self, url: str) -> str:
        """GET `url` from the host's own namespace (a published port, as a user on the host reaches it)."""
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode(), end='')"
        return self.host.py(code, timeout=20).stdout

    def assert_no_traceback(self) -> None:
        log = self.agent_log()
        assert "Traceback" not in log, f"the agent logged a traceback:\n{log}"
        logged = self.host.tracebacks()  # the container monitor's
        assert not logged, logged

    def json(self, *docker_args: str, **kw) -> Any:
        """`docker ARGS` whose output is JSON (inspect, --format '{{json .}}')."""
        return json.loads(self.docker(*docker_args, **kw).stdout)


def make_docker_host(name: str = "dhost", *, image: bool = True, agent_args: tuple[str, ...] = (),
                     docker_socket: str = "") -> DockerHost:
    """A DockerHost with its agent serving; `docker_socket` passes --docker-socket PATH."""
    parent = new_test_cgroup_parent()
    host = Host.start(name)
    dh = DockerHost(host, parent)
    if docker_socket:
        dh.socket = docker_socket
        agent_args = (*agent_args, "--docker-socket", docker_socket)
    try:
        if image:
            dh.netctl("image", "build-busybox")  # busybox:latest, which `busybox` names
        dh.start_agent(*agent_args)
    except BaseException:
        close_docker_host(dh, check=False)
        raise
    return dh


def close_docker_host(dh: DockerHost, *, check: bool = True) -> None:
    log = logged = ""
    try:
        dh.stop_agent()
        log, logged = dh.agent_log(), dh.host.tracebacks()
    finally:
        dh.host.close()
        left = remove_cgroup_tree(dh.cgroup_parent)
    assert not left, f"cgroups left behind: {left}"
    if check:
        assert "Traceback" not in log, f"the agent logged a traceback:\n{log}"
        assert not logged, logged


@pytest.fixture
def dhost() -> Iterator[DockerHost]:
    """A throwaway host whose agent serves the Docker API at ROOT/docker.sock, busybox imported."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (sudo bash scripts/bootstrap.sh)")
    dh = make_docker_host()
    try:
        yield dh
    finally:
        close_docker_host(dh)


@pytest.fixture
def dclient(dhost: DockerHost) -> Iterator[Any]:
    """docker-py DockerClient on dhost's socket."""
    client = dhost.client()
    try:
        yield client
    finally:
        client.close()
