"""Registry commands: `netctl image pull|push|tag|save`, and at the top level `netctl pull`, `push`,
`login`, `logout` (as Docker has them). Registered by containers_cli.register; the registry code
(runner/registry) is imported inside each command.
"""

from __future__ import annotations

import sys

import click

from libnetwork.errors import InvalidArgument

_INSECURE_HELP = (
    "Registry (HOST[:PORT]) to reach without TLS verification, or else over plain HTTP (repeatable); "
    "also registries.json in netctl's config directory."
)


def register(cli: click.Group, image: click.Group) -> None:
    for command in (pull, push, tag, save):
        image.add_command(command)
    for command in (pull, push, login, logout):
        cli.add_command(command)


def _layout(ctx: click.Context):
    from runner.paths import Layout

    return Layout.of(ctx.find_root().obj["root"])


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="No progress; print only the reference.")
@click.option(
    "--platform",
    metavar="OS/ARCH[/VARIANT]",
    default=None,
    help="Platform to pick from a multi-platform image (default: this host's).",
)
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]", help=_INSECURE_HELP)
@click.argument("ref", metavar="[REGISTRY/]NAME[:TAG|@DIGEST]")
@click.pass_context
def pull(ctx, quiet, platform, insecure, ref):
    """Download an image from a registry (docker.io by default) into the store; print its digest.

    Layers the store already holds are not downloaded; an interrupted pull continues where it stopped.
    Credentials come from `netctl login` and ~/.docker/config.json."""
    if platform is None and not insecure:  # present and unchanged: one HEAD, no requests (runner/registry/quick.py)
        from runner import fastcli

        if fastcli.main(["--root", _layout(ctx).root, "pull", *(["-q"] if quiet else []), ref]) == 0:
            return
    from runner.registry.pull import pull_and_report

    pull_and_report(_layout(ctx), ref, quiet=quiet, platform=platform, insecure=tuple(insecure))


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="No progress; print only the digest line.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]", help=_INSECURE_HELP)
@click.option(
    "--chunk-size",
    type=int,
    default=64 << 20,
    show_default=True,
    metavar="BYTES",
    help="Blobs larger than this are uploaded in chunks of this size (PATCH), smaller ones in one PUT.",
)
@click.argument("ref", metavar="[REGISTRY/]NAME[:TAG]")
@click.argument("target", metavar="[TARGET]", required=False, default="")
@click.pass_context
def push(ctx, quiet, insecure, chunk_size, ref, target):
    """Upload an image to a registry: REF names both the local image and where it goes, or TARGET
    names the destination. Blobs the registry has are not sent; the manifest goes last."""
    from runner.registry_store import RegistryImageStore
    from runner.registry.config import Settings
    from runner.registry.progress import for_terminal
    from runner.registry.push import push as do_push

    if chunk_size < 1 << 10:
        raise InvalidArgument(f"--chunk-size {chunk_size}: use at least 1024 bytes")
    progress = for_terminal(quiet)
    try:
        result = do_push(
            RegistryImageStore(_layout(ctx)),
            ref,
            settings=Settings.load(insecure),
            progress=progress,
            target=target,
            chunk_size=chunk_size,
        )
    finally:
        progress.close()
    click.echo(f"{result.reference.tag}: digest: {result.digest} size: {result.size}")


@click.command()
@click.argument("source", metavar="IMAGE")
@click.argument("target", metavar="NAME[:TAG]")
@click.pass_context
def tag(ctx, source, target):
    """Give IMAGE another name, e.g. to push it: netctl image tag busybox localhost:5000/bb:1"""
    from runner.registry_store import RegistryImageStore

    RegistryImageStore(_layout(ctx)).tag(source, target)


@click.command()
@click.option("-o", "--output", required=True, metavar="PATH", help="File (or directory for oci-dir) to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["docker-archive", "oci-archive", "oci-dir"]),
    default="docker-archive",
    show_default=True,
    help="docker save's tar, an OCI image layout as a tar, or as a directory.",
)
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_context
def save(ctx, output, fmt, refs):
    """Write images to a file that docker load, podman, skopeo or `netctl image import` read."""
    from runner.registry_store import RegistryImageStore
    from runner.registry.save import save as do_save

    do_save(RegistryImageStore(_layout(ctx)), list(refs), output, fmt)


@click.command()
@click.option("-u", "--username", default="", help="User name (asked for when missing and stdin is a terminal).")
@click.option("-p", "--password", default="", help="Password or token (prefer --password-stdin: this shows in ps).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]", help=_INSECURE_HELP)
@click.argument("registry", required=False, default="", metavar="[REGISTRY]")
def login(username, password, password_stdin, insecure, registry):
    """Check credentials with REGISTRY (default docker.io) and keep them for pull and push, in
    netctl's auth.json (mode 0600; NETCTL_CONFIG or ~/.config/netctl)."""
    from runner.registry.client import Registry
    from runner.registry.config import Credentials, Settings, store_credentials
    from runner.registry.reference import DOCKER_HUB, DOCKER_HUB_API, registry_host

    host = registry_host(registry)
    if password and password_stdin:
        raise InvalidArgument("use -p or --password-stdin, not both")
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty() or password_stdin:
            raise InvalidArgument("a user name is needed: -u USER")
        username = click.prompt("Username")
    if not password:
        if not sys.stdin.isatty():
            raise InvalidArgument("a password is needed: -p or --password-stdin")
        password = click.prompt("Password", hide_input=True)
    creds = Credentials(username, password, "the command line")
    client = Registry(host, DOCKER_HUB_API if host == DOCKER_HUB else host, Settings.load(insecure), creds)
    try:
        client.check_login()
    finally:
        client.close()
    path = store_credentials(host, username, password)
    click.echo(f"Login Succeeded (credentials for {host} kept in {path})")


@click.command()
@click.argument("registry", required=False, default="", metavar="[REGISTRY]")
def logout(registry):
    """Forget the credentials `netctl login` kept for REGISTRY (default docker.io)."""
    from runner.registry.config import auth_file, remove_credentials
    from runner.registry.reference import registry_host

    host = registry_host(registry)
    if remove_credentials(host):
        click.echo(f"Removing login credentials for {host}")
    else:
        click.echo(f"Not logged in to {host} (nothing in {auth_file()})")
