"""`docker inspect` templates that read state a user set: the static address of each network in
NetworkSettings.Networks.N.IPAMConfig (it was null whatever --ip said), and SandboxKey (it was "")."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


@pytest.mark.parametrize("api_version", [None, "1.41"])
def test_ipam_config_shows_the_static_addresses(dhost, api_version):
    v = {"api_version": api_version}
    dhost.docker("network", "create", "--subnet", "10.91.0.0/24", "n1", **v)
    dhost.docker("network", "create", "--subnet", "10.92.0.0/24", "n2", **v)
    dhost.docker("run", "-d", "--name", "c", "--network", "n1", "--ip", "10.91.0.50", "busybox", "sleep", "600", **v)
    dhost.docker("network", "connect", "--ip", "10.92.0.60", "n2", "c", **v)
    dhost.docker("run", "-d", "--name", "d", "--network", "n1", "busybox", "sleep", "600", **v)

    def show(template: str, name: str = "c") -> str:
        return dhost.docker("inspect", "-f", template, name, **v).stdout.strip()

    assert show("{{.NetworkSettings.Networks.n1.IPAMConfig.IPv4Address}}") == "10.91.0.50"
    assert show("{{.NetworkSettings.Networks.n1.IPAddress}}") == "10.91.0.50"
    assert show("{{.NetworkSettings.Networks.n2.IPAMConfig.IPv4Address}}") == "10.92.0.60"
    assert show("{{.NetworkSettings.Networks.n2.IPAddress}}") == "10.92.0.60"
    assert show("{{json .NetworkSettings.Networks.n1.IPAMConfig}}", "d") == "null"  # none asked: dockerd's null
    # SandboxKey: the container's network namespace, which nsenter --net= enters (it was "")
    key = show("{{.NetworkSettings.SandboxKey}}")
    seen = dhost.run("nsenter", f"--net={key}", "ip", "-o", "-4", "addr", "show").stdout
    assert "10.91.0.50/24" in seen and "10.92.0.60/24" in seen, seen
    dhost.docker("rm", "-f", "c", "d", **v)
    dhost.docker("network", "rm", "n1", "n2", **v)


def test_config_shows_the_images_entrypoint_cmd_and_ports_apart(dhost):
    """Config.Entrypoint was null and Config.Cmd the whole argv (entrypoint included) when the image
    gave them; the image's ExposedPorts were missing."""
    from containers.archives import busybox_layer, docker_save

    docker_save(dhost.path("/run/entry.tar"), [busybox_layer()], "entry:1", Entrypoint=["/bin/echo", "hi"],
                Cmd=["there"], ExposedPorts={"8080/tcp": {}})  # fmt: skip
    dhost.docker("load", "-i", "/run/entry.tar")
    dhost.docker("create", "--name", "plain", "entry:1")
    dhost.docker("create", "--name", "args", "entry:1", "you")
    dhost.docker("create", "--name", "none", "--entrypoint", "", "entry:1", "true")

    def show(name: str) -> str:
        return dhost.docker("inspect", "-f", "{{json .Config.Entrypoint}} {{json .Config.Cmd}} "
                            "{{json .Config.ExposedPorts}}", name).stdout.strip()  # fmt: skip

    assert show("plain") == '["/bin/echo","hi"] ["there"] {"8080/tcp":{}}'
    assert show("args") == '["/bin/echo","hi"] ["you"] {"8080/tcp":{}}'
    assert show("none").split()[1] == '["true"]'
    assert dhost.docker("start", "-a", "args").stdout.strip() == "hi you"
    dhost.docker("rm", "plain", "args", "none")
