"""The docker CLI's everyday commands at its own API version and pinned to 1.41 (DOCKER_API_VERSION, as
a docker 20.10 client speaks): terminals, a followed log read while the container still writes,
stop and restart, network connect/disconnect/prune, and events streamed as they happen."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

import pytest

from docker_api.test_attach_logs_exec import on_pty

pytestmark = pytest.mark.kernel

VERSIONS = [pytest.param(None, id="negotiated"), pytest.param("1.41", id="api-1.41")]


class _Lines:
    """A process's stdout lines as they come (a reader thread; every wait bounded)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.found = proc, queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.found.put(line) for line in stream], daemon=True).start()

    def until(self, predicate, timeout: float = 15.0) -> list[str]:
        """Lines read until predicate(line) holds for one (that one included)."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.found.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching line within {timeout:g} s; read {seen}") from None
            seen.append(line)
            if predicate(line):
                return seen

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.parametrize("version", VERSIONS)
def test_terminals_follow_stop_restart(dhost, version):
    d = lambda *a, **kw: dhost.docker(*a, api_version=version, **kw)  # noqa: E731
    out = on_pty(dhost, "run", "-it", "--rm", "busybox", "sh", api_version=version)
    assert "sum=42" in out and "/dev/" in out and out.strip().endswith("exit 5"), out
    d("run", "-d", "--name", "box", "busybox", "sh", "-c",
      "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo tick$i; sleep 0.2; done")  # fmt: skip
    out = on_pty(dhost, "exec", "-it", "box", "sh", api_version=version)
    assert "sum=42" in out and "/dev/pts/" in out and out.strip().endswith("exit 5"), out

    # logs -f shows lines while the container is still writing them
    follow = _Lines(dhost.docker_popen("logs", "-f", "box", api_version=version, stdout=subprocess.PIPE, text=True))
    first = follow.until(lambda line: line.startswith("tick"))
    later = follow.until(lambda line: line.strip() == f"tick{int(first[-1].strip()[4:]) + 3}")
    assert d("inspect", "-f", "{{.State.Running}}", "box").stdout.strip() == "true", later

    started = d("inspect", "-f", "{{.State.StartedAt}}", "box").stdout.strip()
    d("restart", "-t", "5", "box")  # the TERM trap exits 0 at once
    assert d("inspect", "-f", "{{.State.Running}} {{.RestartCount}}", "box").stdout.split()[0] == "true"
    assert d("inspect", "-f", "{{.State.StartedAt}}", "box").stdout.strip() != started
    follow.end()  # the first run's follow ended with its exit, or is ended here

    began = time.monotonic()
    d("stop", "-t", "5", "box")
    assert time.monotonic() - began < 4.5  # TERM got through: no wait for the KILL
    assert d("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "box").stdout.split() == ["exited", "0"]
    d("rm", "box")
    assert d("ps", "-aq").stdout == ""


@pytest.mark.parametrize("version", VERSIONS)
def test_networks_connect_disconnect_prune_and_events(dhost, version):
    d = lambda *a, **kw: dhost.docker(*a, api_version=version, **kw)  # noqa: E731
    watcher = _Lines(dhost.docker_popen("events", "--format", "{{json .}}", "--filter", "type=network",
                                        api_version=version, stdout=subprocess.PIPE, text=True))  # fmt: skip
    time.sleep(0.5)  # subscribed (the agent's bus queues every event from then on)
    d("network", "create", "--subnet", "10.77.0.0/24", "vfront")
    back_id = d("network", "create", "--subnet", "10.78.0.0/24", "vback").stdout.strip()
    d("run", "-d", "--name", "web", "--network", "vfront", "busybox", "sleep", "600")
    d("network", "connect", "--alias", "api", "--ip", "10.78.0.40", "vback", "web")
    d("run", "--rm", "--network", "vback", "busybox", "ping", "-c1", "-W2", "api")
    assert "10.78.0.40/24" in d("exec", "web", "ip", "-o", "-4", "addr").stdout
    d("network", "disconnect", "vback", "web")
    assert "10.78.0.40" not in d("exec", "web", "ip", "-o", "-4", "addr").stdout
    assert json.loads(d("network", "inspect", "-f", "{{json .Containers}}", "vback").stdout) == {}

    pruned = d("network", "prune", "-f").stdout
    assert "vback" in pruned and "vfront" not in pruned
    listed = d("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "vback" not in listed and "vfront" in listed

    seen = [json.loads(line) for line in watcher.until(lambda line: '"destroy"' in line and back_id in line)]
    actions = [(e["Action"], e["Actor"]["Attributes"].get("name")) for e in seen]
    for expected in (("create", "vfront"), ("create", "vback"), ("connect", "vback"), ("disconnect", "vback"),
                     ("destroy", "vback")):  # fmt: skip
        assert expected in actions, actions
    watcher.end()
    d("rm", "-f", "web")
    d("network", "rm", "vfront")
    dhost.doctor_clean()
