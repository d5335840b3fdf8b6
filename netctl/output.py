"""How the CLI prints: JSON for --format json, aligned tables otherwise (shared by every command)."""

from __future__ import annotations

import click


def emit_json(data) -> None:
    import json  # lazy: only --format json and inspect pay for it

    click.echo(json.dumps(data, indent=2))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers] + rows:
        click.echo("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
