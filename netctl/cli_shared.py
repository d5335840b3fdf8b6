"""What the command modules share (netctl/cli.py, containers_cli.py, program.py): this command line's
controller and its KEY=VALUE and --format options. Printing is netctl/output.py's.

A module of its own so the command modules import it rather than each other: cli.py registers the
container commands, and those must not import cli.py back.
"""

from __future__ import annotations

import click

from libnetwork.errors import InvalidArgument

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from libnetwork.controller import Controller


def controller(ctx: click.Context) -> Controller:
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


format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format."
)
