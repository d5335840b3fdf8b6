"""Container commands (`netctl run`, `ps`, `image`, ...): registered on the root group by cli.py."""


def register(cli) -> None:
    """Add the container runner's commands to the `netctl` group (filled in by the runner)."""
