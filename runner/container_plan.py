"""What a container is made of, worked out from its request and its config: the network plan, the
files the init binds on /etc, the init's plan and the namespaces it unshares. Pure but for
write_etc_files (which writes them into the container's directory); runner/lifecycle.py does the steps.
"""

from __future__ import annotations

import os
import shutil

from libnetwork.errors import InvalidArgument
from runner import hosts, spec
from runner.paths import Layout
from runner.process import InitSpec, ProcessSpec
from runner.spec import NETWORK_HOST, NETWORK_NONE, ContainerConfig, NetworkAttachment, RunRequest

DEFAULT_NETWORK = "bridge"  # Docker's default; created on first use like Docker's


def network_plan(request: RunRequest) -> tuple[str, list[NetworkAttachment]]:
    """(network mode, attachments) of a run request: `none`/`host` alone, else netctl networks
    (the default one if none is named) with the address, ports and aliases asked for each."""
    names = list(dict.fromkeys(request.networks)) or [DEFAULT_NETWORK]
    special = [n for n in names if n in (NETWORK_NONE, NETWORK_HOST)]
    if special and len(names) > 1:
        raise InvalidArgument(f"--network {special[0]} cannot be combined with other networks")
    if special:
        if request.ip or request.publish or request.network_aliases:
            raise InvalidArgument(f"--ip, -p and --network-alias need a netctl network, not --network {special[0]}")
        return special[0], []
    attachments = [NetworkAttachment(network=n, aliases=list(request.network_aliases)) for n in names]
    attachments[0].ip = request.ip
    attachments[0].ports = [dict(p) for p in request.publish]  # parsed by the CLI into PortMapping dicts
    for attachment in attachments:  # the Docker API's EndpointsConfig: per network
        settings = request.endpoints.get(attachment.network) or {}
        attachment.aliases = list(dict.fromkeys(attachment.aliases + list(settings.get("aliases") or [])))
        attachment.ip = settings.get("ip") or attachment.ip
        if settings.get("mac"):
            from libnetwork.records import check_mac

            attachment.mac = check_mac(settings["mac"])
    return "bridge", attachments


def write_etc_files(directory: str, config: ContainerConfig) -> None:
    """The files the init binds on /etc: its hosts file gets its entries from attach_network, in
    place (a bind mount pins the inode)."""
    with open(os.path.join(directory, "hostname"), "w") as f:
        f.write(config.hostname + "\n")
    extra = "".join(f"{address}\t{name}\n" for name, address in map(spec.parse_extra_host, config.extra_hosts))
    if extra:
        with open(os.path.join(directory, hosts.EXTRA_HOSTS), "w") as f:
            f.write(extra)
    if config.network_mode == NETWORK_HOST:
        shutil.copyfile("/etc/hosts", os.path.join(directory, "hosts"))
        shutil.copyfile("/etc/resolv.conf", os.path.join(directory, "resolv.conf"))
        with open(os.path.join(directory, "hosts"), "a") as f:
            f.write(extra)
        return
    with open(os.path.join(directory, "hosts"), "w") as f:
        f.write(hosts.HOSTS_HEADER + extra)
    with open(os.path.join(directory, "resolv.conf"), "w") as f:  # names: the agent's server (runner/hosts.py)
        f.write(hosts.resolv_conf() if config.network_mode == NETWORK_NONE
                else hosts.container_resolv_conf(config.dns_search, config.dns_options))


def init_spec(layout: Layout, directory: str, config: ContainerConfig) -> InitSpec:
    """What the init does to become the container (runner/process.py), from its config."""
    lowerdirs = [layout.layer_diff(d) for d in reversed(config.layers)]
    return InitSpec(
        process=ProcessSpec(
            argv=config.argv,
            env=config.env,
            workdir=config.workdir,
            user=config.user,
            capabilities=config.capabilities,
            nofile=config.nofile,
            rlimits=dict(config.ulimits),
            tty=config.tty,
        ),
        rootfs=os.path.join(directory, "rootfs"),
        lowerdirs=lowerdirs,
        upper=os.path.join(directory, "upper"),
        work=os.path.join(directory, "work"),
        etc_files={name: os.path.join(directory, name) for name in ("hostname", "hosts", "resolv.conf")},
        volumes=config.volumes,
        tmpfs=[spec.parse_tmpfs(t) for t in config.tmpfs],
        sysctls=dict(config.sysctls),
        shm_size=config.shm_size,
        hostname="" if config.network_mode == NETWORK_HOST else config.hostname,
        read_only=config.read_only,
    )


def unshare_flags(mode: str) -> int:
    from runner import linux

    flags = linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID | linux.CLONE_NEWCGROUP
    if mode != NETWORK_HOST:
        flags |= linux.CLONE_NEWUTS  # with the host's network, the host's name too (as Docker does)
    return flags


def default_path() -> str:
    from runner.images import DEFAULT_PATH

    return DEFAULT_PATH


def caller_hard_nofile(request: RunRequest) -> int:
    """The CLI sends its hard RLIMIT_NOFILE (the monitor's may differ); default to ours."""
    import resource

    return request.caller_nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[1]
