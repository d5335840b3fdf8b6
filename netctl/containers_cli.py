"""Container commands: `netctl run`, `ps`, `stop`, `kill`, `rm`, `logs`, `exec`, `inspect`, `wait` and
`netctl image ...`, registered on the root group by cli.py.

The runner is imported inside each command, so `netctl --help` and the network commands pay nothing for
it. Commands that change containers are requests to the host's monitor (runner/monitor.py, started on
first use); `ps`, `inspect` and `logs` read the records directly; `exec` joins the container itself.
"""

from __future__ import annotations

import os
import sys

import click

from libnetwork.errors import InvalidArgument
from netctl.output import emit_json, print_table


def _layout(ctx: click.Context):
    from runner.paths import Layout

    return Layout.of(ctx.find_root().obj["root"])


def _ago(iso: str) -> str:
    from datetime import datetime, timezone

    if not iso:
        return ""
    try:
        seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return iso
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = max(0, int(seconds))
    return f"{n} second{'s' if n != 1 else ''}"


def _status_text(state) -> str:
    if state.status == "running":
        return f"Up {_ago(state.started)}" + (" (Paused)" if state.paused else "")
    if state.status == "exited":
        oom = " (OOM)" if state.oom_killed else ""
        return f"Exited ({state.exit_code}){oom} {_ago(state.finished)} ago"
    if state.status == "restarting":  # exited, its policy's next start is due (Docker's wording)
        return f"Restarting ({state.exit_code}) {_ago(state.finished)} ago"
    return state.status.capitalize()


# --- run ------------------------------------------------------------------------------------------


def register(cli: click.Group) -> None:
    """Add the container runner's commands to the `netctl` group."""
    for command in (run, ps, stop, kill, rm, logs, exec_, inspect, wait, pause, unpause, image, monitor_stats):
        cli.add_command(command)
    from netctl import images_cli

    images_cli.register(cli, image)


def _options(table_name: str):
    """Decorator: the options of `run` or `exec` from runner/runopts.py (shared with the click-free path)."""

    def decorate(command):
        from runner import runopts

        return _add_options(command, getattr(runopts, table_name))

    return decorate


def _add_options(command, table):
    from runner.runopts import FLAG, MULTI

    for flags, dest, kind, metavar, text in reversed(table):
        if kind == FLAG:
            command = click.option(*flags, dest, is_flag=True, help=text)(command)
        else:
            default = None if dest == "entrypoint" else ("" if kind != MULTI else ())
            command = click.option(*flags, dest, multiple=kind == MULTI, default=default, metavar=metavar or None,
                                   help=text)(command)  # fmt: skip
    return command


@click.command(context_settings={"allow_interspersed_args": False})
@_options("RUN_OPTIONS")
@click.argument("image_ref", metavar="IMAGE")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, image_ref, command, **values):
    """Run COMMAND in a new container from IMAGE; exits with the container's exit code."""
    import dataclasses

    from runner import client, runopts

    values = dict(values)
    values["publish"] = [dataclasses.asdict(runopts.parse_port(p)) for p in values["publish"]]
    request = runopts.build_request(values, image_ref, list(command))
    if values["pull"] != "never":
        from runner.registry.present import ensure_image

        ensure_image(_layout(ctx), image_ref, values["pull"] or "missing", values["platform"])
    sys.stdout.flush()
    container_id, code = client.run(
        _layout(ctx), request, detach=values["detach"], interactive=values["interactive"], tty=values["tty"]
    )
    if values["detach"]:
        click.echo(container_id)
        return
    ctx.exit(code)


# --- listing and inspecting -----------------------------------------------------------------------


@click.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def ps(ctx, show_all, quiet, fmt):
    """List containers (running ones unless -a)."""
    from runner.state import Records

    containers = [c for c in Records(_layout(ctx)).all() if show_all or c.state.running]
    if quiet:
        for c in containers:
            click.echo(c.id[:12])
    elif fmt == "json":
        emit_json([_inspect_view(c) for c in containers])
    else:
        rows = []
        for c in containers:
            command = " ".join(c.config.argv)
            command = command if len(command) <= 30 else command[:27] + "..."
            networks = ",".join(a.network for a in c.config.networks) or c.config.network_mode
            rows.append([c.id[:12], c.config.image, f'"{command}"', f"{_ago(c.config.created)} ago",
                         _status_text(c.state), networks, c.name])  # fmt: skip
        print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NETWORKS", "NAMES"], rows)


def _restart_policy(text: str) -> dict:
    from runner.spec import parse_restart

    name, maximum = parse_restart(text)
    return {"Name": name, "MaximumRetryCount": maximum}


def _inspect_view(container) -> dict:
    """`docker inspect`'s shape for the fields netctl has."""
    config, state = container.config, container.state
    return {
        "Id": config.id,
        "Name": config.name,
        "Created": config.created,
        "Path": config.argv[0],
        "Args": config.argv[1:],
        "State": {
            "Status": "paused" if state.paused else state.status,
            "Running": state.running,
            "Paused": state.paused,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "OOMKilled": state.oom_killed,
            "Error": state.error,
            "StartedAt": state.started,
            "FinishedAt": state.finished,
        },
        "RestartCount": state.restart_count,
        "Image": config.image_id,
        "ImageName": config.image,
        "Config": {
            "Hostname": config.hostname,
            "User": config.user,
            "Env": config.env,
            "Cmd": config.argv,
            "WorkingDir": config.workdir,
            "Tty": config.tty,
            "OpenStdin": config.interactive,
        },
        "HostConfig": {
            "NetworkMode": (config.network_mode if config.network_mode != "bridge"
                            else ",".join(a.network for a in config.networks)),
            "Memory": config.limits.memory,
            "NanoCpus": int(config.limits.cpus * 1e9),
            "PidsLimit": config.limits.pids,
            "ReadonlyRootfs": config.read_only,
            "Binds": [str(v) for v in config.volumes],
            "CapAdd": [],
            "Capabilities": config.capabilities,
            "AutoRemove": config.auto_remove,
            "RestartPolicy": _restart_policy(config.restart),
            "CgroupParent": config.cgroup_path.rpartition("/")[0],
            "Ulimits": [{"Name": "nofile", "Soft": config.nofile, "Hard": config.nofile}],
        },
        "NetworkSettings": {
            "SandboxID": config.sandbox_id,
            "Networks": {
                name: {
                    "NetworkID": view.get("NetworkID", ""),
                    "EndpointID": view.get("EndpointID", ""),
                    "IPAddress": view.get("IPv4Address", "").split("/")[0],
                    "IPPrefixLen": (int(view.get("IPv4Address", "/0").split("/")[1] or 0)
                                    if view.get("IPv4Address") else 0),
                    "Gateway": view.get("Gateway", ""),
                    "GlobalIPv6Address": view.get("IPv6Address", "").split("/")[0],
                    "MacAddress": view.get("MacAddress", ""),
                    "Aliases": view.get("Aliases", []),
                    "Ports": view.get("Ports", []),
                }
                for name, view in (state.networks or {}).items()
            },
        },
        "Cgroup": config.cgroup_path,
        "LogPath": "",
    }


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def inspect(ctx, refs):
    """Show containers in detail (JSON, shaped like docker inspect)."""
    from runner.state import Records

    records = Records(_layout(ctx))
    views = []
    for ref in refs:
        container = records.find(ref)
        if container.state.running and container.config.sandbox_id:
            # Live, not as at start: `network connect/disconnect` may have changed them since.
            from runner.lifecycle import Runtime

            runtime = Runtime(records.layout)
            try:
                container.state.networks = runtime.network_views(container.config)
            finally:
                runtime.close()
        view = _inspect_view(container)
        view["LogPath"] = os.path.join(records.directory(container.id), "container.log")
        views.append(view)
    emit_json(views)


# --- lifecycle ------------------------------------------------------------------------------------


@click.command()
@click.option("-t", "--time", "timeout", type=int, default=10, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def stop(ctx, timeout, refs):
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    from runner import client

    if timeout < 0:
        raise InvalidArgument(f"-t {timeout}: the timeout must be 0 or more seconds")
    for ref in refs:
        client.call(_layout(ctx), {"op": "stop", "ref": ref, "timeout": timeout})
        click.echo(ref)


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True, help="Signal to send (name or number).")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def kill(ctx, sig, refs):
    """Send a signal to containers' main process."""
    from runner import client

    from runner.spec import parse_signal

    number = parse_signal(sig)
    for ref in refs:
        client.call(_layout(ctx), {"op": "kill", "ref": ref, "signal": number})
        click.echo(ref)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill running containers first.")
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def rm(ctx, force, refs):
    """Remove containers: their endpoints, addresses, netns, cgroup, files and name."""
    from runner import client

    for ref in refs:
        client.call(_layout(ctx), {"op": "rm", "ref": ref, "force": force})
        click.echo(ref)


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def pause(ctx, refs):
    """Freeze every process of running containers (their cgroup's freezer); unpause thaws them."""
    from runner import client

    for ref in refs:
        client.call(_layout(ctx), {"op": "pause", "ref": ref})
        click.echo(ref)


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def unpause(ctx, refs):
    """Thaw paused containers."""
    from runner import client

    for ref in refs:
        client.call(_layout(ctx), {"op": "unpause", "ref": ref})
        click.echo(ref)


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="CONTAINER...")
@click.pass_context
def wait(ctx, refs):
    """Wait until containers stop; print their exit codes."""
    from runner import client

    for ref in refs:
        event = client.call(_layout(ctx), {"op": "wait", "ref": ref})
        click.echo(event.get("code"))


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the container runs.")
@click.option("--timestamps", is_flag=True, help="Prefix each chunk with its time.")
@click.argument("ref", metavar="CONTAINER")
@click.pass_context
def logs(ctx, follow, timestamps, ref):
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    from runner import logs as logs_mod
    from runner.state import Records

    records = Records(_layout(ctx))
    container = records.find(ref)
    path = os.path.join(records.directory(container.id), "container.log")
    logs_mod.show(path, follow=follow, timestamps=timestamps,
                  still_running=logs_mod.follow_condition(lambda: records.state(container.id)))


@click.command("exec", context_settings={"allow_interspersed_args": False})
@_options("EXEC_OPTIONS")
@click.argument("ref", metavar="CONTAINER")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx, interactive, tty, env, user, workdir, ref, command):
    """Run COMMAND in a running container: every namespace and the cgroup of its init."""
    from runner import execute, spec
    from runner.state import Records

    container = Records(_layout(ctx)).find(ref)
    code = execute.exec_in(
        container,
        list(command),
        env=spec.parse_env(list(env)),
        user=spec.parse_user(user) if user else "",
        workdir=spec.check_workdir(workdir),
        interactive=interactive,
        tty=tty,
    )
    ctx.exit(code)


# --- images ---------------------------------------------------------------------------------------


@click.group()
def image() -> None:
    """Pull, push, import, save, tag, list, inspect and remove images."""


def _images(ctx):
    from runner.images import ImageStore

    return ImageStore(_layout(ctx))


@image.command("import")
@click.argument("path", metavar="FILE|DIR")
@click.argument("ref", metavar="[NAME[:TAG]]", required=False, default="")
@click.pass_context
def image_import(ctx, path, ref):
    """Import a rootfs tarball, a `docker save` archive or an OCI layout (dir or tar); print the id."""
    from runner.image_import import import_path

    for img in import_path(_images(ctx), path, ref):
        click.echo(f"sha256:{img.id}" + (f"  {', '.join(img.tags)}" if img.tags else ""))


@image.command("build-busybox")
@click.option("--busybox", "binary", default="/bin/busybox", show_default=True, help="Static busybox binary to use.")
@click.argument("ref", metavar="[NAME[:TAG]]", required=False, default="busybox:latest")
@click.pass_context
def image_build_busybox(ctx, binary, ref):
    """Build a small image from Debian's busybox-static (busybox + applet links); print the id."""
    from runner import busybox

    img = busybox.build_image(_images(ctx), ref, binary)
    click.echo(f"sha256:{img.id}  {', '.join(img.tags)}")


@image.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def image_ls(ctx, quiet, fmt):
    """List images."""
    from runner.images import image_size_text

    images = _images(ctx).list()
    if quiet:
        for img in images:
            click.echo(img.short_id)
    elif fmt == "json":
        emit_json([dict(img.to_dict(), tags=img.tags) for img in images])
    else:
        rows = []
        for img in images:
            for tag in img.tags or ["<none>:<none>"]:
                repository, _, version = tag.rpartition(":")
                rows.append([repository, version, img.short_id, f"{_ago(img.imported)} ago", image_size_text(img.size),
                             str(len(img.layers))])
        print_table(["REPOSITORY", "TAG", "IMAGE ID", "IMPORTED", "SIZE", "LAYERS"], rows)


@image.command("inspect")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_context
def image_inspect(ctx, refs):
    """Show images in detail (JSON)."""
    store = _images(ctx)
    views = []
    for ref in refs:
        img = store.get(ref)
        views.append({
            "Id": f"sha256:{img.id}",
            "RepoTags": img.tags,
            "RepoDigests": store.repo_digests(img.id),
            "Imported": img.imported,
            "Source": img.source,
            "Size": img.size,
            "Architecture": img.config.get("architecture", ""),
            "Os": img.config.get("os", ""),
            "Config": img.run_config,
            "RootFS": {"Type": "layers", "Layers": [f"sha256:{d}" for d in img.layers]},
        })  # fmt: skip
    emit_json(views)


@image.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove even if containers use it (they keep their layers).")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_context
def image_rm(ctx, force, refs):
    """Remove images (untag first if the image has other tags); unused layers go too."""
    from runner.state import Records

    records = Records(_layout(ctx))

    def containers():
        return [(c.name, c.config.image_id, c.config.layers) for c in records.all()]

    store = _images(ctx)
    for ref in refs:
        for line in store.remove(ref, force=force, containers=containers):
            click.echo(line)


@click.command("monitor-stats", hidden=True)
@click.pass_context
def monitor_stats(ctx):
    """The monitor's pid, memory and container count (JSON); for benchmarks."""
    from runner import client

    emit_json(client.call(_layout(ctx), {"op": "stats"}))
