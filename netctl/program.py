"""The whole `netctl` command line: netctl/cli.py's commands plus `netctl daemon`, the host agent.

`netctl daemon` lives here, not in cli.py, because the agent runs cli.py's commands for its clients
(netctl/service.py): were the agent's command one of them, cli.py and the agent would import each other.
netctl/entry.py runs this CLI when a command line is not the agent's or the fast path's.
"""

from __future__ import annotations

import os
import sys

import click

from netctl.cli import cli, main

__all__ = ["cli", "daemon", "main"]


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
@click.option("--docker-socket", "docker_socket", default="", metavar="PATH",
              help="Serve the Docker Engine API on PATH (e.g. /var/run/docker.sock) instead of ROOT/docker.sock.")
@click.option("--auto", is_flag=True, hidden=True,
              help="Started on first use by a command: leave quietly if an agent runs; "
                   "make way for one started by hand.")
@click.pass_context
def daemon(ctx, store, vtep, host_name, lease_ttl, resync_interval, group, docker_socket, auto):
    """Run this host's agent on ROOT/netctl.sock (foreground; stop with SIGTERM).

    The agent keeps netctl warm for the `netctl` command (network, sandbox, doctor, gc, firewall
    sync) and for the CNI plugins; without it they run in-process, with the same results, and start
    one in the background for the next call (NETCTL_NO_DAEMON=1: never). Only root and members of
    --group may use it. It also serves the embedded DNS server (127.0.0.11 in every container) and
    the Docker Engine API (ROOT/docker.sock, or --docker-socket). With a global store it also
    registers this host there (ROOT/global.json records the choice) and keeps its overlay networks'
    VXLAN tables and container names in step with the other hosts."""
    import logging

    from netctl import daemon as daemon_module

    if auto:
        os.chdir("/")  # started from some command's directory, which must stay unmountable
        # posix_spawn passed on every descriptor of the command that started us without close-on-exec
        # (a script's `9>lock`): holding them for the agent's life would hold the script's locks.
        os.closerange(3, 1 << 16)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s netctl daemon: %(message)s" if auto
                        else "netctl daemon: %(message)s", stream=sys.stderr)
    obj = ctx.find_root().obj
    options = daemon_module.GlobalOptions(store=store or obj.get("store") or "", vtep=vtep,
                                          host_name=host_name or obj.get("host_name") or "", lease_ttl=lease_ttl,
                                          resync_interval=resync_interval)
    daemon_module.serve(obj["root"], options=options, agent=daemon_module.AgentOptions(group=group, auto=auto,
                                                                                         docker_socket=docker_socket),
                        on_ready=lambda path: click.echo(f"netctl daemon listening on {path}", err=True))
