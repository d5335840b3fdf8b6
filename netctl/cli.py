"""`netctl`: the Docker-like command line.

Each command parses and validates its flags, calls one controller operation and prints the result.
Errors are one line on stderr with a non-zero exit code (see libnetwork/errors.py); `--debug` adds the
traceback. The controller and its drivers are imported inside the commands so `netctl --help` stays cheap.
"""

from __future__ import annotations

import os
import sys

import click

from libnetwork.errors import InvalidArgument, NetctlError, StoreError
from netctl.output import emit_json, print_table


# --- shared helpers -----------------------------------------------------------------------------


def controller(ctx: click.Context):
    from libnetwork.controller import Controller

    obj = ctx.find_root().obj
    if "controller" not in obj:
        warm = obj.get("warm_controller")  # the agent's (netctl/service.py): kept open between requests
        if warm is not None and obj.get("store") is None and obj.get("host_name") is None:
            obj["controller"] = warm
        else:
            from netctl.names import keep_hosts_files_current

            ctl = Controller(obj["root"], store_url=obj.get("store"), host_name=obj.get("host_name"))
            keep_hosts_files_current(ctl)  # the warm one subscribed when the agent made it
            obj["controller"] = ctx.find_root().with_resource(ctl)
    return obj["controller"]


def parse_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{flag} {value!r} must have the form KEY=VALUE")
        pairs[key] = val
    return pairs


def parse_port(spec: str):
    """[HOSTIP:]HOSTPORT:PORT[/tcp|udp] -> PortMapping; IPv6 host addresses go in brackets."""
    from libnetwork.model import PortMapping

    body, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise InvalidArgument(f"port {spec!r}: protocol must be tcp or udp")
    host_ip = ""
    if body.startswith("["):
        host_ip, _, body = body[1:].partition("]")
        body = body.lstrip(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip, body = parts[0], ":".join(parts[1:])
    host_port, sep, container_port = body.partition(":")
    if not sep:
        raise InvalidArgument(f"port {spec!r} must have the form [HOSTIP:]HOSTPORT:PORT[/tcp|udp]")
    numbers = []
    for text in (host_port, container_port):
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise InvalidArgument(f"port {spec!r}: {text!r} is not a port number (1-65535)")
        numbers.append(int(text))
    if host_ip:
        import ipaddress

        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise InvalidArgument(f"port {spec!r}: host address {host_ip!r} is not an IP address") from None
    return PortMapping(host_port=numbers[0], container_port=numbers[1], protocol=protocol, host_ip=host_ip)


format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format."
)


# --- root -------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    envvar="NETCTL_ROOT",
    default="/var/lib/netctl",
    show_default=True,
    help="State directory of this host (env NETCTL_ROOT).",
)
@click.option(
    "--store",
    envvar="NETCTL_STORE",
    default=None,
    metavar="URL",
    help="Global store for overlay networks, etcd://HOST:PORT (env NETCTL_STORE; default: the daemon's, from ROOT/global.json).",
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
@click.option("--ip-range", multiple=True, help="Allocate container addresses from this sub-range of the matching --subnet.")
@click.option("--aux-address", multiple=True, metavar="NAME=IP", help="Reserve an address so it is never handed out.")
@click.option("--ipv6", is_flag=True, help="Give the network an IPv6 subnet too (a default one unless --subnet gives it).")
@click.option("--internal", is_flag=True, help="No way in or out: no masquerade, no default route, no published ports.")
@click.option("--mtu", type=int, default=0, help="MTU of the bridge and both ends of every veth (default: the uplink's; overlay: the underlay's - 50).")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE", help="Driver option, e.g. bridge=br0, icc=false, masquerade=false; overlay: vni=N, port=P, fastpath=false.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Metadata label.")
@click.argument("name")
@click.pass_context
def network_create(ctx, driver, subnet, gateway, ip_range, aux_address, ipv6, internal, mtu, opt, label, name):
    """Create a network NAME and print its id."""
    from libnetwork.controller import NetworkSpec

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


def request_pools(subnets, gateways, ip_ranges, aux_addresses):
    """Pair --gateway/--ip-range/--aux-address with the --subnet that contains them, like Docker."""
    import ipaddress

    from libnetwork.model import PoolConfig

    def network_of(text: str, flag: str):
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidArgument(f"{flag} {text!r} is not a valid CIDR (e.g. 10.1.0.0/16 or fd00:1::/64)") from None

    def address_of(text: str, flag: str):
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise InvalidArgument(f"{flag} {text!r} is not a valid IP address") from None

    pools = []
    for text in subnets:
        network_of(text, "--subnet")
        pools.append(PoolConfig(subnet=text))
    if not pools and (gateways or ip_ranges or aux_addresses):
        raise InvalidArgument("--gateway, --ip-range and --aux-address need a --subnet to belong to")

    def owner(address, flag: str, text: str) -> PoolConfig:
        for pool in pools:
            net = ipaddress.ip_network(pool.subnet, strict=False)
            if address.version == net.version and (
                address in net if not hasattr(address, "subnet_of") else address.subnet_of(net)
            ):
                return pool
        raise InvalidArgument(f"{flag} {text} is outside every --subnet ({', '.join(p.subnet for p in pools)})")

    for text in gateways:
        pool = owner(address_of(text, "--gateway"), "--gateway", text)
        if pool.gateway:
            raise InvalidArgument(f"--gateway given twice for subnet {pool.subnet}")
        pool.gateway = text
    for text in ip_ranges:
        rng = network_of(text, "--ip-range")
        pool = owner(rng, "--ip-range", text)
        if pool.ip_range:
            raise InvalidArgument(f"--ip-range given twice for subnet {pool.subnet}")
        pool.ip_range = text
    for name, text in parse_pairs(aux_addresses, "--aux-address").items():
        pool = owner(address_of(text, "--aux-address"), "--aux-address", text)
        pool.aux_addresses[name] = text
    return pools


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
    for name in names:
        removed = controller(ctx).delete_network(name, force=force)
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
    controller(ctx).disconnect(network_name, sandbox)


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
            [[sb.short_id, sb.name, str(len(eps)), ",".join(a for e in eps for a in e.addresses)] for sb, eps in entries],
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


@cli.command()
@click.option("--store", "store", default="", metavar="URL",
              help="Global store etcd://HOST:PORT (default: NETCTL_STORE, then ROOT/global.json); none: local only.")
@click.option("--vtep", default="", metavar="ADDR",
              help="This host's underlay address for VXLAN (default: the source address towards etcd).")
@click.option("--host-name", "host_name", default="", metavar="NAME",
              help="This host's name in the global store (default: NETCTL_HOST_NAME, ROOT/global.json, hostname).")
@click.option("--lease-ttl", type=click.IntRange(min=2), default=10, show_default=True, metavar="S",
              help="Seconds without the daemon after which other hosts drop this host's containers.")
@click.option("--resync-interval", type=click.FloatRange(min=0.1), default=30.0, hidden=True,
              help="Seconds between full reconciles when nothing changes (tests shorten it).")
@click.option("--group", default="", metavar="NAME",
              help="Also let members of this group use the agent (its socket becomes 0660 root:NAME).")
@click.option("--auto", is_flag=True, hidden=True,
              help="Started on first use by a command: leave quietly if an agent runs; make way for one started by hand.")
@click.pass_context
def daemon(ctx, store, vtep, host_name, lease_ttl, resync_interval, group, auto):
    """Run this host's agent on ROOT/netctl.sock (foreground; stop with SIGTERM).

    The agent keeps netctl warm for the `netctl` command (network, sandbox, doctor, gc, firewall
    sync) and for the CNI plugins; without it they run in-process, with the same results, and start
    one in the background for the next call (NETCTL_NO_DAEMON=1: never). Only root and members of
    --group may use it. With a global store it also registers this host there (ROOT/global.json records
    the choice) and keeps its overlay networks' VXLAN tables and containers' /etc/hosts in step with
    the other hosts."""
    import logging

    from netctl import daemon as daemon_module

    if auto:
        os.chdir("/")  # started from some command's directory, which must stay unmountable
    logging.basicConfig(level=logging.INFO, format="%(asctime)s netctl daemon: %(message)s" if auto
                        else "netctl daemon: %(message)s", stream=sys.stderr)
    obj = ctx.find_root().obj
    options = daemon_module.GlobalOptions(store=store or obj.get("store") or "", vtep=vtep,
                                          host_name=host_name or obj.get("host_name") or "", lease_ttl=lease_ttl,
                                          resync_interval=resync_interval)
    daemon_module.serve(obj["root"], options=options, agent=daemon_module.AgentOptions(group=group, auto=auto),
                        on_ready=lambda path: click.echo(f"netctl daemon listening on {path}", err=True))


# --- containers -------------------------------------------------------------------------------

from netctl import containers_cli  # noqa: E402  (its commands import the runner lazily)

containers_cli.register(cli)
cli.add_command(__import__("netctl.lab_cli", fromlist=["lab"]).lab)  # `netctl lab`: netctl/lab_cli.py


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
