"""docker-compose 1.29 (Debian's, on its own python3-docker 5) drives netctl's Docker Engine API: the
three-service project in compose/ (a user network with its own subnet plus the project's default
network, aliases, a published port, environment, a named volume, a read-only bind mount, depends_on,
restart: on-failure) comes up, its services reach each other by name, ps/logs/exec/restart work, and
`down -v` leaves nothing behind.

compose runs inside the throwaway host (the docker CLI too, for `exec`), DOCKER_HOST on the agent's
socket; the project directory is read from the repository (the bind mount is compose/www, read-only).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from containers.conftest import wait_for


pytestmark = [pytest.mark.kernel, pytest.mark.timeout(600)]

COMPOSE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compose")
PROJECT = "proj"
CLIENT_LINE = "client got: served by web / hello-from-store"
WAIT_S = 60.0


@pytest.fixture(autouse=True)
def _compose_installed():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (sudo bash scripts/bootstrap.sh)")


def compose(dhost, *args: str, env: dict[str, str] | None = None, **kw):
    """`docker-compose -p proj ARGS` inside the host, on the agent's socket."""
    argv = ["docker-compose", "-f", os.path.join(COMPOSE_DIR, "docker-compose.yml"),
            "--project-directory", COMPOSE_DIR, "-p", PROJECT, "--ansi", "never", *args]  # fmt: skip
    kw.setdefault("timeout", 120)
    return dhost.run(*argv, env=dhost.docker_env(env=env), **kw)



def client_lines(dhost) -> int:
    return compose(dhost, "logs", "--no-color", "client").stdout.count(CLIENT_LINE)


def netctl_names(dhost, *what: str) -> set[str]:
    out = dhost.netctl(*what, "ls", "--format", "json").stdout
    return {item.get("Name") or item.get("name") for item in json.loads(out or "[]")}



def test_compose_project_up_reach_ps_logs_exec_restart_down(dhost):
    networks_before = set(dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    netctl_networks_before = netctl_names(dhost, "network")
    try:
        up = compose(dhost, "up", "-d", check=False)
        assert up.returncode == 0, up.stdout + up.stderr

        # depends_on ordered the start; the client retried until both answered by service name:
        # `web` over the default network, `store` over front (its only network).
        wait_for(lambda: client_lines(dhost) >= 1,
                 WAIT_S, what="the client reaching web and store by name", interval=0.3)

        # ps: three services up, the published port shown
        ps = compose(dhost, "ps", env={"COLUMNS": "250"}).stdout  # compose wraps its table to the terminal
        rows = {line.split()[0]: line for line in ps.splitlines() if line.startswith(f"{PROJECT}_")}
        assert set(rows) == {f"{PROJECT}_web_1", f"{PROJECT}_store_1", f"{PROJECT}_client_1"}, ps
        assert all(" Up" in row for row in rows.values()), ps
        assert "0.0.0.0:8080->80/tcp" in rows[f"{PROJECT}_web_1"], ps
        assert compose(dhost, "port", "web", "80").stdout.strip() in ("0.0.0.0:8080", ":::8080")
        assert set(compose(dhost, "ps", "--services").stdout.split()) == {"web", "store", "client"}

        # the networks compose made, as netctl sees them; front with the subnet the file asks for
        networks = set(dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split())
        assert {f"{PROJECT}_default", f"{PROJECT}_front"} <= networks
        front = dhost.json("network", "inspect", f"{PROJECT}_front")[0]
        assert front["IPAM"]["Config"][0]["Subnet"] == "10.123.0.0/24"
        assert {f"{PROJECT}_default", f"{PROJECT}_front"} <= netctl_names(dhost, "network")
        client = dhost.json("inspect", f"{PROJECT}_client_1")[0]
        assert set(client["NetworkSettings"]["Networks"]) == {f"{PROJECT}_default", f"{PROJECT}_front"}
        web = dhost.json("inspect", f"{PROJECT}_web_1")[0]
        assert set(web["NetworkSettings"]["Networks"]) == {f"{PROJECT}_default"}
        assert {"www", "site", "web"} <= set(web["NetworkSettings"]["Networks"][f"{PROJECT}_default"]["Aliases"] or [])
        assert web["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
        assert client["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"

        # exec through the docker CLI (compose 1.29's default) and through compose's own API calls
        for env in ({}, {"COMPOSE_INTERACTIVE_NO_CLI": "1"}):
            for alias in ("www", "site", "web"):
                got = compose(dhost, "exec", "-T", "client", "wget", "-q", "-O", "-", f"http://{alias}/index.html",
                              env=env).stdout  # fmt: skip
                assert got == "served by web\n", (alias, env, got)
            assert compose(dhost, "exec", "-T", "store", "sh", "-c", "echo $GREETING", env=env).stdout == \
                "hello-from-store\n"
        # web and store share no network: neither finds the other by name; client, on both, finds both
        assert compose(dhost, "exec", "-T", "web", "ping", "-c1", "-W1", "store", check=False).returncode != 0
        assert compose(dhost, "exec", "-T", "store", "ping", "-c1", "-W1", "www", check=False).returncode != 0
        assert compose(dhost, "exec", "-T", "client", "ping", "-c1", "-W1", "store").returncode == 0
        exit_code = compose(dhost, "exec", "-T", "client", "sh", "-c", "exit 7", check=False).returncode
        assert exit_code == 7

        # the published port, from the host through the default network's gateway
        default = dhost.json("network", "inspect", f"{PROJECT}_default")[0]
        gateway = default["IPAM"]["Config"][0]["Gateway"]
        assert dhost.fetch(f"http://{gateway}:8080/index.html") == "served by web\n"

        # the named volume holds what store wrote from its environment
        volume = dhost.json("volume", "inspect", f"{PROJECT}_data")[0]
        with open(dhost.path(os.path.join(volume["Mountpoint"], "value"))) as f:
            assert f.read() == "hello-from-store\n"

        # restart: on-failure brings the client back after it exits 3
        compose(dhost, "exec", "-T", "client", "touch", "/tmp/crash")
        wait_for(lambda: dhost.json("inspect", f"{PROJECT}_client_1")[0]["RestartCount"] >= 1,
                 WAIT_S, what="restart: on-failure restarting the client", interval=0.3)
        wait_for(lambda: client_lines(dhost) >= 2,
                 WAIT_S, what="the restarted client reaching both again", interval=0.3)
        state = dhost.json("inspect", f"{PROJECT}_client_1")[0]["State"]
        assert state["Running"], state

        # compose restart: all three again, the volume's value kept
        restarted = compose(dhost, "restart", check=False)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        wait_for(lambda: client_lines(dhost) >= 3,
                 WAIT_S, what="the client after `restart`", interval=0.3)
        assert compose(dhost, "exec", "-T", "client", "wget", "-q", "-O", "-", "http://store:8000/value").stdout == \
            "hello-from-store\n"

        logs = compose(dhost, "logs", "--no-color").stdout
        assert CLIENT_LINE in logs and "client_1" in logs
    finally:
        down = compose(dhost, "down", "-v", check=False)
    assert down.returncode == 0, down.stdout + down.stderr

    # nothing left: containers, the project's networks and volume, kernel objects (doctor)
    assert dhost.docker("ps", "-aq").stdout.split() == []
    assert set(dhost.docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == networks_before
    assert netctl_names(dhost, "network") == netctl_networks_before
    assert dhost.docker("volume", "ls", "-q").stdout.split() == []
    dhost.doctor_clean()
