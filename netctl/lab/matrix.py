"""The reachability matrix: rows from a topology's expectations, answered by pings from inside containers.

For each expected pair (source, target) there is one row per target address and one by name:
- must reach: the target's address on every network the two share, and the target's name;
- must not reach: every address of the target, and its name (which must not resolve to a reachable
  address either).

A source's probes run in one `netctl exec` of a small shell pipeline (xargs -P: parallel inside the
container, bounded), so a 100-container matrix costs 100 execs, not 20 000.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from netctl.lab.model import Expectations, Topology

PING_PARALLEL = 32  # pings at once inside one container
# A name that is not in the container's hosts file goes to its resolver, which has nobody to ask in a
# lab: RES_OPTIONS makes it give up after 1 s instead of ~5 s (same verdict: not reached). Each ping
# bounds itself (-W 1 after sending); the outer timeout is only a safety net, generous on purpose: on a
# loaded machine a tight one kills pings before they run and reports reachable pairs as unreachable.
RESOLVER_OPTIONS = "timeout:1 attempts:1"
PING_DEADLINE_S = 10
SOURCE_PARALLEL = 4  # containers probed at once (each an exec of a few pings)
# The kernel's IPv4 neighbour (ARP) table is ONE table for every network namespace of the machine, and
# gc_thresh3 (default 1024, settable only in the machine's own namespace) caps its entries; garbage
# collection frees only entries untouched for a while, so a burst of new ones fails ("neighbor table
# overflow") and pings between healthy containers fail with it. Each reached address costs about two
# entries (the source's and the target's). So sources are probed in waves of at most this many new
# entries, and between waves the caller flushes the lab's learned entries.
WAVE_NEIGHBOURS = 400
Addresses = dict[str, dict[str, str]]  # container -> {network: IPv4 address}
Probe = Callable[[str, list[str]], dict[str, bool]]  # (source container, targets) -> {target: reached}


@dataclass
class Row:
    source: str
    target: str
    expected: bool
    via: str  # the address or name pinged
    kind: str  # "address" or "name"
    got: bool | None = None

    @property
    def ok(self) -> bool:
        return self.got is self.expected

    def to_dict(self) -> dict:
        return asdict(self)


def plan(topology: Topology, expectations: Expectations, addresses: Addresses) -> list[Row]:
    rows = []
    for source, target in expectations.reach_pairs():
        for network in topology.shared_networks(source, target):
            address = addresses.get(target, {}).get(network, "")
            rows.append(Row(source, target, True, address or f"<{target} has no address on {network}>", "address"))
        rows.append(Row(source, target, True, target, "name"))
    for source, target in expectations.isolated_pairs():
        for address in addresses.get(target, {}).values():
            rows.append(Row(source, target, False, address, "address"))
        rows.append(Row(source, target, False, target, "name"))
    return rows


def ping_script(targets: list[str], parallel: int = PING_PARALLEL) -> str:
    """A POSIX sh pipeline (busybox) printing "ok TARGET" or "no TARGET" for each target."""
    one = (f'if timeout {PING_DEADLINE_S} ping -c 1 -W 1 -q "$0" >/dev/null 2>&1; '
           'then echo "ok $0"; else echo "no $0"; fi')
    listing = " ".join(shlex.quote(t) for t in targets)
    return (f"export RES_OPTIONS={shlex.quote(RESOLVER_OPTIONS)}; "
            f"printf '%s\\n' {listing} | xargs -n 1 -P {parallel} sh -c {shlex.quote(one)}")


def parse_output(text: str, targets: list[str]) -> dict[str, bool]:
    """{target: reached}; a target missing from the output counts as not reached."""
    seen = {}
    for line in text.splitlines():
        verdict, _, target = line.strip().partition(" ")
        if verdict in ("ok", "no"):
            seen[target] = verdict == "ok"
    return {t: seen.get(t, False) for t in targets}


def neighbour_cost(rows: list[Row]) -> int:
    """New neighbour entries a source's probes may create: two per distinct address it should reach."""
    return 2 * len({r.via for r in rows if r.expected and r.kind == "address"})


def run(rows: list[Row], probe: Probe, *, settle_s: float = 0.0, parallel: int = SOURCE_PARALLEL,
        between_waves: Callable[[], None] = lambda: None) -> int:  # fmt: skip
    """Fill in `got` for every row; returns how many probe rounds ran.

    Rows that must reach and did not are probed again until `settle_s` has passed: right after
    `lab up`, a daemon may still be programming its peers. Rows that must not reach are never retried
    (one success is already a failure). `between_waves` runs after each wave (see WAVE_NEIGHBOURS)."""
    _round(rows, probe, parallel, between_waves)
    rounds = 1
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        pending = [r for r in rows if r.expected and not r.got and not r.via.startswith("<")]
        if not pending:
            break
        time.sleep(0.5)
        _round(pending, probe, parallel, between_waves)
        rounds += 1
    return rounds


def waves(by_source: dict[str, list[Row]], budget: int = WAVE_NEIGHBOURS) -> list[list[str]]:
    """Sources grouped so that each group's neighbour cost stays within `budget` (a source costing
    more than the budget goes alone)."""
    result: list[list[str]] = []
    current: list[str] = []
    spent = 0
    for source, rows in by_source.items():
        cost = neighbour_cost(rows)
        if current and spent + cost > budget:
            result.append(current)
            current, spent = [], 0
        current.append(source)
        spent += cost
    if current:
        result.append(current)
    return result


def _round(rows: list[Row], probe: Probe, parallel: int, between_waves: Callable[[], None]) -> None:
    by_source: dict[str, list[Row]] = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)

    def one(source: str) -> tuple[str, dict[str, bool]]:
        targets = list(dict.fromkeys(r.via for r in by_source[source] if not r.via.startswith("<")))
        return source, probe(source, targets) if targets else {}

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(by_source)))) as pool:
        for wave in waves(by_source):
            for source, results in pool.map(one, wave):
                for row in by_source[source]:
                    row.got = results.get(row.via, False)
            between_waves()


def table(rows: list[Row], *, only_failures: bool = False) -> tuple[list[str], list[list[str]]]:
    headers = ["SOURCE", "TARGET", "EXPECTED", "GOT", "VIA", ""]
    shown = [r for r in rows if not (only_failures and r.ok)]

    def word(value: bool | None) -> str:
        return "-" if value is None else ("reach" if value else "no")

    body = [[r.source, r.target, word(r.expected), word(r.got), r.via, "" if r.ok else "MISMATCH"] for r in shown]
    return headers, body
