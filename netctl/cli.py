"""`netctl`: the Docker-like command line.

Each command parses and validates its flags, calls one controller operation and prints the result.
Errors are one line on stderr with a non-zero exit code (see libnetwork/errors.py); `--debug` adds the
traceback. The controller and its drivers are imported inside the commands so `netctl --help` stays cheap.
"""

from __future__ import annotations

import os
import sys

import click

from libnetwork.errors import NetctlError, StoreError
from libnetwork.rootdir import DEFAULT_ROOT
from netctl.cli_shared import controller, format_option, parse_pairs
from netctl.output import emit_json, print_table


# --- root -------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    envvar="NETCTL_ROOT",
    default=DEFAULT_ROOT,
    show_default=True,
    help="State directory of this host (env NETCTL_ROOT).",
)
@click.option(
    "--store",
    envvar="NETCTL_STORE",
    default=None,
    metavar="URL",
    help="Global store for overlay networks, etcd://HOST:PORT (env NETCTL_STORE; default: the daemon's, "
         "from ROOT/global.json).",
)
@click.option(
    "--host-name",
    envvar="NETCTL_HOST_NAME",
    default=None,
    help="This host's name in the global store (env NETCTL_HOST_NAME; default: the daemon's, else the hostname).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, root: str, store: str | None, host_name: str | None, debug: bool) -> None:
    """netctl: container networks (bridge, null, overlay across hosts) with sandboxes, IPAM and an nftables firewall."""
    # The agent passes its warm controller in (obj=...); everything else is this command line's.
    ctx.obj = {**(ctx.obj or {}), "root": root, "debug": debug, "store": store or None, "host_name": host_name or None}
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


# --- network ----------------------------------------------------------------------------------


@cli.group()
def network() -> None:
    """Create, list, inspect and remove networks; connect sandboxes to them."""


@network.command("create")
@click.option("-d", "--driver", default="bridge", show_default=True,
              help="Network driver: bridge, null, or overlay (global: spans hosts, needs --store).")
@click.option("--subnet", multiple=True, help="Subnet in CIDR form (repeatable; IPv4 and/or IPv6).")
@click.option("--gateway", multiple=True, help="Gateway of the matching --subnet (repeatable, in order).")
@click.option("--ip-range", multiple=True,
              help="Allocate container addresses from this sub-range of the matching --subnet.")
@click.option("--aux-address", multiple=True, metavar="NAME=IP", help="Reserve an address so it is never handed out.")
@click.option("--ipv6", is_flag=True,
              help="Give the network an IPv6 subnet too (a default one unless --subnet gives it).")
@click.option("--internal", is_flag=True, help="No way in or out: no masquerade, no default route, no published ports.")
@click.option("--mtu", type=int, default=0,
              help="MTU of the bridge and both ends of every veth (default: the uplink's; "
                   "overlay: the underlay's - 50).")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE",
              help="Driver option, e.g. bridge=br0, icc=false, masquerade=false; overlay: vni=N, port=P, "
                   "fastpath=false.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Metadata label.")
@click.argument("name")
@click.pass_context
def network_create(ctx, driver, subnet, gateway, ip_range, aux_address, ipv6, internal, mtu, opt, label, name):
    """Create a network NAME and print its id."""
    from libnetwork.controller import NetworkSpec
    from netctl.network_requests import request_pools  # shared with the Docker API

    spec = NetworkSpec(
        name=name,
        driver=driver,
        pools=request_pools(subnet, gateway, ip_range, aux_address),
        ipv6=ipv6,
        internal=internal,
        mtu=mtu,
        options=parse_pairs(opt, "-o"),
        labels=parse_pairs(label, "--label"),
    )
    click.echo(controller(ctx).create_network(spec).id)


@network.command("ls")
@format_option
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@click.pass_context
def network_ls(ctx, fmt, quiet):
    """List networks."""
    ctl = controller(ctx)
    unreachable = None
    try:
        networks = ctl.list_networks()
    except StoreError as err:
        if not ctl.store_url:
            raise
        # etcd away: the local networks are still worth showing; the exit status says the list is partial.
        networks = ctl.list_networks(local_only=True)
        unreachable = StoreError(f"global networks not listed: {err.message}")
    if quiet:
        for n in networks:
            click.echo(n.short_id)
    elif fmt == "json":
        emit_json([n.to_dict() for n in networks])  # each carries its "scope": local or global
    else:
        print_table(
            ["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNETS"],
            [[n.short_id, n.name, n.driver, n.scope, ",".join(p.subnet for p in n.pools)] for n in networks],
        )
    if unreachable is not None:
        raise unreachable


@network.command("inspect")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", help="Output format.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def network_inspect(ctx, fmt, names):
    """Show networks in detail (JSON)."""
    from netctl.views import inspect_network

    emit_json([inspect_network(controller(ctx), name) for name in names])


@network.command("rm")
@click.option("-f", "--force", is_flag=True, help="Disconnect endpoints first; no error if the network is missing.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def network_rm(ctx, force, names):
    """Remove networks."""
    later = ctx.find_root().obj.get("later")  # the agent deletes devices after answering (netctl/service.py)
    for name in names:
        removed = controller(ctx).delete_network(name, force=force, later=later)
        if removed is not None:
            click.echo(removed.name)


@network.command("connect")
@click.option("--ip", default="", help="IPv4 address for the endpoint.")
@click.option("--ip6", default="", help="IPv6 address for the endpoint.")
@click.option("--alias", multiple=True, help="Extra name of the sandbox on this network.")
@click.option("-p", "--publish", multiple=True, metavar="[HOSTIP:]HOSTPORT:PORT[/PROTO]", help="Publish a port.")
@click.option("--ifname", default="", help="Interface name inside the sandbox (default: next free ethN).")
@click.argument("network_name", metavar="NETWORK")
@click.argument("sandbox")
@click.pass_context
def network_connect(ctx, ip, ip6, alias, publish, ifname, network_name, sandbox):
    """Connect SANDBOX to NETWORK and print the endpoint's addresses."""
    from runner.runopts import parse_port  # -p as `netctl run -p` reads it

    endpoint = controller(ctx).connect(
        network_name,
        sandbox,
        ip=ip,
        ip6=ip6,
        aliases=list(alias),
        ports=[parse_port(p) for p in publish],
        ifname=ifname,
    )
    click.echo(" ".join([endpoint.ifname] + endpoint.addresses))


@network.command("disconnect")
@click.argument("network_name", metavar="NETWORK")
@click.argument("sandbox")
@click.pass_context
def network_disconnect(ctx, network_name, sandbox):
    """Disconnect SANDBOX from NETWORK, releasing its addresses."""
    # In the agent the veth pair is deleted after the answer (netctl/service.py); in-process, now.
    controller(ctx).disconnect(network_name, sandbox, remove_links=ctx.find_root().obj.get("remove_links"))


@network.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def network_prune(ctx, force):
    """Remove every network without endpoints."""
    if not force and not click.confirm("Remove all networks without endpoints?", default=False):
        return
    for name in controller(ctx).prune_networks():
        click.echo(name)


# --- sandbox ----------------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """Bare network namespaces (what CNI calls a container netns)."""


@sandbox.command("create")
@click.option("--name", default="", help="Sandbox name (default sb-<id>).")
@click.option("--hostname", default="", help="Hostname recorded for the sandbox.")
@click.option("--label", multiple=True, metavar="KEY=VALUE")
@click.pass_context
def sandbox_create(ctx, name, hostname, label):
    """Create a sandbox (a network namespace with lo up) and print its id."""
    sb = controller(ctx).create_sandbox(name, hostname=hostname, labels=parse_pairs(label, "--label"))
    click.echo(sb.id)


@sandbox.command("ls")
@format_option
@click.option("-q", "--quiet", is_flag=True, help="Print ids only.")
@click.pass_context
def sandbox_ls(ctx, fmt, quiet):
    """List sandboxes."""
    entries = controller(ctx).list_sandboxes()
    if quiet:
        for sb, _ in entries:
            click.echo(sb.short_id)
    elif fmt == "json":
        emit_json([dict(sb.to_dict(), endpoints=[e.id for e in eps]) for sb, eps in entries])
    else:
        print_table(
            ["SANDBOX ID", "NAME", "ENDPOINTS", "ADDRESSES"],
            [[sb.short_id, sb.name, str(len(eps)), ",".join(a for e in eps for a in e.addresses)]
             for sb, eps in entries],
        )


@sandbox.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def sandbox_inspect(ctx, names):
    """Show sandboxes in detail (JSON)."""
    from netctl.views import inspect_sandbox

    emit_json([inspect_sandbox(controller(ctx), name) for name in names])


@sandbox.command("rm")
@click.option("-f", "--force", is_flag=True, help="No error if the sandbox is missing.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def sandbox_rm(ctx, force, names):
    """Remove sandboxes, disconnecting them from every network."""
    for name in names:
        removed = controller(ctx).delete_sandbox(name, force=force)
        if removed is not None:
            click.echo(removed.name)


@sandbox.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def sandbox_exec(ctx, name, command):
    """Run COMMAND inside the sandbox's network namespace (netctl sandbox exec SB -- CMD ...)."""
    sb = controller(ctx).get_sandbox(name)
    argv = ["nsenter", f"--net={sb.netns_path}", "--", *command]
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise NetctlError(f"cannot run {command[0]!r} in sandbox {sb.name!r}: {exc.strerror}") from None


# --- doctor, gc, firewall ---------------------------------------------------------------------


@cli.command()
@format_option
@click.pass_context
def doctor(ctx, fmt):
    """Report what is out of step between the store and the kernel (exit 1 if anything is)."""
    problems = controller(ctx).doctor()
    if fmt == "json":
        emit_json([p.to_dict() for p in problems])
    elif not problems:
        click.echo("no problems found")
    else:
        for p in problems:
            click.echo(f"{p.kind}: {p.detail}")
        click.echo(f"{len(problems)} problem(s); `netctl gc` removes them")
    ctx.exit(1 if problems else 0)


@cli.command()
@click.pass_context
def gc(ctx):
    """Remove leftovers: orphan kernel objects, stale records, leaked addresses."""
    removed = controller(ctx).gc()
    for p in removed:
        click.echo(f"removed {p.kind}: {p.detail}")
    click.echo(f"{len(removed)} item(s) removed")


@cli.group()
def firewall() -> None:
    """netctl's nftables tables (inet netctl, bridge netctl)."""


@firewall.command("sync")
@click.pass_context
def firewall_sync(ctx):
    """Rebuild netctl's nftables tables from the store (e.g. after a flush)."""
    controller(ctx).sync_firewall()


# --- containers -------------------------------------------------------------------------------

from netctl import containers_cli  # noqa: E402  (its commands import the runner lazily)
from netctl.lab_cli import lab  # noqa: E402  (`netctl lab`; the lab package is imported lazily)

containers_cli.register(cli)
cli.add_command(lab)


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, obj: dict | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        # Without standalone mode click returns the exit code of ctx.exit()/--help instead of exiting.
        rc = cli.main(args=argv, prog_name="netctl", standalone_mode=False, obj=obj)
        sys.exit(rc if isinstance(rc, int) else 0)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        # One line, like every other error: what is wrong and where to look.
        hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
        click.echo(f"netctl: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except NetctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"netctl: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        click.echo(f"netctl: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
        sys.exit(70)
