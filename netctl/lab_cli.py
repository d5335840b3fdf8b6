"""`netctl lab up|down|status|test FILE`: multi-host labs from a YAML topology (see netctl/lab/).

The lab package is imported inside each command: `netctl --help` pays nothing for it.
"""

from __future__ import annotations

import sys

import click

from netctl.output import emit_json, print_table


def _root(ctx: click.Context) -> str:
    return ctx.find_root().obj["root"]


def _say(line: str) -> None:
    click.echo(line, err=True)


file_argument = click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))


@click.group()
def lab() -> None:
    """Multi-host labs: hosts as network namespaces on an underlay, etcd, a daemon per host,
    overlay and bridge networks, containers, and a reachability matrix (topology_examples/)."""


@lab.command("up")
@file_argument
@click.pass_context
def lab_up(ctx, file):
    """Build the lab FILE describes; on any failure remove what was made."""
    from netctl.lab import lab as labs

    state = labs.up(_root(ctx), file, log=_say)
    click.echo(f"lab {state.name} is up ({len(state.hosts)} hosts) in {state.up_seconds:.1f} s")


@lab.command("down")
@file_argument
@click.pass_context
def lab_down(ctx, file):
    """Remove the lab: containers, daemons, etcd, namespaces, cgroups, its directory. Idempotent."""
    from netctl.lab import lab as labs
    from netctl.lab import topology

    name = topology.lab_name(topology.read_yaml(file), file)  # only the name: the rest may have changed
    if labs.down(_root(ctx), name, log=_say):
        click.echo(f"lab {name} removed")
    else:
        click.echo(f"lab {name} is not up; nothing to remove")


@lab.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@file_argument
@click.pass_context
def lab_status(ctx, fmt, file):
    """Hosts (daemon, lease, underlay link) and containers (host, state, addresses)."""
    from netctl.lab import lab as labs

    report = labs.status(_root(ctx), file)
    if fmt == "json":
        emit_json(report)
        return
    etcd = report["etcd"]
    click.echo(f"lab {report['name']}: {report['phase']} since {report['created']} "
               f"(up took {report['up_seconds']:.1f} s); "
               f"etcd pid {etcd['pid']} {'healthy' if etcd['healthy'] else 'NOT ANSWERING'}")  # fmt: skip
    click.echo()
    print_table(
        ["HOST", "ADDRESS", "LINK", "DAEMON", "RSS", "LEASE", "TTL"],
        [[h["name"], h["address"], "up" if h["link_up"] else "CUT",
          f"{h['daemon_pid']} {'alive' if h['daemon_alive'] else 'DEAD'}",
          f"{h['daemon_rss_kib'] / 1024:.1f} MiB" if h["daemon_rss_kib"] else "-",
          f"{h['lease']:x}" if h["lease"] else "NONE", f"{h['lease_ttl']} s" if h["lease_ttl"] >= 0 else "-"]
         for h in report["hosts"]],
    )  # fmt: skip
    click.echo()
    print_table(
        ["CONTAINER", "HOST", "STATE", "ADDRESSES"],
        [[c["name"], c["host"], c["state"], " ".join(f"{n}={a}" for n, a in c["addresses"].items())]
         for c in report["containers"]],
    )  # fmt: skip
    for name in report["missing_containers"]:
        click.echo(f"missing: container {name} of the topology does not exist")


@lab.command("test")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--failures-only", is_flag=True, help="Show only rows that differ from the expectation.")
@click.option("--settle", type=click.FloatRange(0, 120), default=5.0, show_default=True,
              help="Seconds to keep retrying pairs that must reach (daemons may still be converging).")
@click.option("--parallel", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Containers probed at once.")
@file_argument
@click.pass_context
def lab_test(ctx, fmt, failures_only, settle, parallel, file):
    """Run the reachability matrix (ping by address and by name), then each scenario; exit 1 on any
    difference from the expectations."""
    from netctl.lab import lab as labs
    from netctl.lab import matrix

    report = labs.test(_root(ctx), file, settle_s=settle, parallel=parallel, log=_say)
    if fmt == "json":
        emit_json(report.to_dict())
    else:
        for name, rows in report.sections:
            shown = [r for r in rows if not (failures_only and r.ok)]
            wrong = sum(not r.ok for r in rows)
            click.echo(f"== {name}: {len(rows) - wrong}/{len(rows)} as expected")
            if shown:
                print_table(*matrix.table(shown))
        total = sum(len(rows) for _, rows in report.sections)
        wrong = sum(not r.ok for _, rows in report.sections for r in rows)
        click.echo(f"{'PASS' if not wrong else 'FAIL'}: {total - wrong}/{total} rows as expected")
    sys.stdout.flush()
    ctx.exit(0 if report.ok else 1)
