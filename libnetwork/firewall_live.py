"""netctl's nftables tables as the kernel holds them now: the packets each commented rule counted,
and drift, i.e. whether the live ruleset is still the one libnetwork/firewall_rules.py renders (for
`netctl doctor` and repair at the agent's start).

Separate from rendering (pure) and from applying (one transaction): these only read, and drift builds
its reference in a scratch network namespace of its own.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from typing import Any

from libnetwork import nftables
from libnetwork.errors import KernelError
from libnetwork.firewall_rules import BRIDGE, INET, TABLE, BridgeNet, render

_CLONE_NEWNET = 0x40000000


def _netctl_tables(listing: dict[str, Any]) -> list[str]:
    return [t["table"]["family"] for t in listing.get("nftables", [])
            if "table" in t and t["table"]["name"] == TABLE and t["table"]["family"] in (INET, BRIDGE)]


def _rule_counters(listing: dict[str, Any]) -> dict[str, int]:
    packets: dict[str, int] = {}
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):  # an anonymous counter; a string would name a counter object
                packets[rule["comment"]] = packets.get(rule["comment"], 0) + int(counter.get("packets", 0))
    return packets


def counters(*, netns_path: str | None = None) -> dict[str, int]:
    """Packets counted by each commented rule of netctl's tables, keyed by comment (rules sharing a
    comment are summed). Empty when the tables do not exist."""
    with nftables.in_netns(netns_path):
        families = _netctl_tables(json.loads(nftables.run([{"list": {"tables": None}}], doing="list tables") or "{}"))
        # One list command per batch: nft 1.0.6 fills its cache for the first table of a batch only.
        listings = [nftables.run([{"list": {"table": {"family": f, "name": TABLE}}}], doing=f"list table {f} {TABLE}")
                    for f in families]
    packets: dict[str, int] = {}
    for listing in listings:
        for comment, count in _rule_counters(json.loads(listing or "{}")).items():
            packets[comment] = packets.get(comment, 0) + count
    return packets


# --------------------------------------------------------------------------------------------------
# Drift: is the live ruleset still the one render() derives? (for `netctl doctor`)


def _canonical(item: dict[str, Any]) -> str:
    """One listed object as comparable text: no handle, no counter values."""
    (kind, body), = item.items()
    body = {k: v for k, v in body.items() if k != "handle"}
    if kind == "rule":
        body["expr"] = [{"counter": {}} if isinstance(e, dict) and "counter" in e else e for e in body["expr"]]
    return json.dumps(body, sort_keys=True)


def _snapshot() -> dict[str, list[str]]:
    """netctl's tables in the current namespace: {"chain inet netctl forward": [chain, rule, ...], ...}."""
    families = _netctl_tables(json.loads(nftables.run([{"list": {"tables": None}}], doing="list tables") or "{}"))
    objects: dict[str, list[str]] = {}
    for family in families:
        listing = json.loads(nftables.run([{"list": {"table": {"family": family, "name": TABLE}}}],
                                  doing=f"list table {family} {TABLE}") or "{}")
        for item in listing.get("nftables", []):
            kind = next(iter(item))
            if kind in ("table", "chain", "set"):
                name = TABLE if kind == "table" else f"{TABLE} {item[kind]['name']}"
                objects.setdefault(f"{kind} {family} {name}", []).append(_canonical(item))
            elif kind == "rule":
                objects.setdefault(f"chain {family} {TABLE} {item['rule']['chain']}", []).append(_canonical(item))
    return objects


def _expected_snapshot(commands: list[dict[str, Any]]) -> dict[str, list[str]]:
    """What ``commands`` produce, read back from nft in a scratch network namespace.

    nft lists rules in its own normal form (``meta l4proto tcp th dport 80`` comes back as ``tcp dport
    80``), so the reference is made by the kernel itself: a thread unshares a fresh namespace (only
    that thread moves), applies there, lists, and ends, taking the namespace with it.
    """
    result: dict[str, Any] = {}

    def in_scratch_namespace() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNET) != 0:
                raise KernelError(f"cannot create a scratch network namespace: {os.strerror(ctypes.get_errno())}")
            nftables.run(commands)
            result["snapshot"] = _snapshot()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = err

    worker = threading.Thread(target=in_scratch_namespace, name="nft-scratch-netns")
    worker.start()
    worker.join(nftables.NFT_TIMEOUT_S)
    if worker.is_alive():
        raise KernelError(f"nft did not finish within {nftables.NFT_TIMEOUT_S} s in a scratch namespace")
    if "error" in result:
        raise result["error"]
    return result["snapshot"]


def drift(nets: list[BridgeNet], *, netns_path: str | None = None) -> list[str]:
    """How netctl's live tables differ from what ``sync(nets)`` would make: one line per table, chain
    or set out of step (missing, foreign, or changed); empty when in step. Needs CAP_SYS_ADMIN (it
    builds the reference in a scratch namespace)."""
    expected = _expected_snapshot(render(nets))
    with nftables.in_netns(netns_path):
        live = _snapshot()
    problems = []
    missing_tables = [f" {family} {TABLE}" for family in (INET, BRIDGE) if f"table {family} {TABLE}" not in live]
    for key in sorted(set(expected) | set(live), key=lambda k: (not k.startswith("table"), k)):
        if key not in live and key.startswith(("chain", "set")) and any(t + " " in key for t in missing_tables):
            continue  # its table is reported missing already
        if key not in live:
            problems.append(f"{key} is missing")
        elif key not in expected:
            problems.append(f"{key} is not part of netctl's ruleset (added by hand or left over)")
        elif live[key] != expected[key]:
            detail = ""
            if key.startswith("chain"):  # [the chain itself, its rules...]
                detail = f" ({len(live[key]) - 1} rules, expected {len(expected[key]) - 1})"
            problems.append(f"{key} differs from netctl's ruleset{detail}")
    return problems
