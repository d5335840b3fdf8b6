"""The nftables firewall of bridge networks: the public face of three modules.

netctl owns exactly two tables (``table inet netctl`` and ``table bridge netctl``) and never touches
anything else (other tools' tables, iptables chains). The whole ruleset is *derived*:

- :func:`render` (libnetwork/firewall_rules.py) is a pure function of the bridge networks and their
  published endpoints;
- :func:`apply` (here) replaces both tables in ONE atomic nft transaction (``add table; delete table;
  add table; chains; rules``), through libnftables in-process or the ``nft`` binary
  (libnetwork/nftables.py);
- :func:`counters` and :func:`drift` (libnetwork/firewall_live.py) read the live tables back.

Anything that went wrong outside netctl (someone flushed or deleted our tables) is repaired by
rendering and applying again; :func:`drift` tells whether that is needed.
"""

from __future__ import annotations

from typing import Any

from libnetwork import nftables
from libnetwork.firewall_live import counters, drift
from libnetwork.firewall_rules import (
    BRIDGE,
    BRIDGES_SET,
    INET,
    OPEN_BRIDGES_SET,
    PRIO_DSTNAT,
    PRIO_FILTER,
    PRIO_SRCNAT,
    PUBLISHED_CHAIN,
    TABLE,
    BridgeNet,
    PublishedEndpoint,
    delete_tables,
    render,
)

__all__ = [
    "BRIDGE", "BRIDGES_SET", "INET", "OPEN_BRIDGES_SET", "PRIO_DSTNAT", "PRIO_FILTER", "PRIO_SRCNAT",
    "PUBLISHED_CHAIN", "TABLE", "BridgeNet", "PublishedEndpoint", "apply", "counters", "drift", "remove",
    "render", "sync",
]


def apply(commands: list[dict[str, Any]], *, netns_path: str | None = None) -> None:
    """Run ``commands`` (from render()) as one atomic transaction.

    On failure raises KernelError with nft's message; the kernel then keeps the previous tables.
    """
    with nftables.in_netns(netns_path):
        nftables.run(commands)


def sync(nets: list[BridgeNet], *, netns_path: str | None = None) -> None:
    """Make netctl's tables match ``nets`` (render + apply)."""
    apply(render(nets), netns_path=netns_path)


def remove(*, netns_path: str | None = None) -> None:
    """Delete both netctl tables; nothing happens if they are already gone."""
    apply(delete_tables(), netns_path=netns_path)
