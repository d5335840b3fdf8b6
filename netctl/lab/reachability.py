"""`netctl lab test`: the reachability matrix (netctl/lab/matrix.py) run on a lab that is up: the
base expectations, then each scenario with its hosts' underlay links cut, then the same pairs again
once the links are back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from libnetwork.errors import NetctlError
from netctl.lab import matrix, topology
from netctl.lab.mounts import lab_netns_paths
from netctl.lab.shell import HostShell
from netctl.lab.state import LabError, Paths
from netctl.lab.status import require_up, running_addresses
from netctl.lab.topology import Topology


@dataclass
class TestReport:
    sections: list[tuple[str, list[matrix.Row]]]  # ("base" or "scenario NAME" / "after NAME", rows)

    @property
    def ok(self) -> bool:
        return all(row.ok for _, rows in self.sections for row in rows)

    def to_dict(self) -> dict:
        sections = [{"name": n, "rows": [r.to_dict() for r in rows]} for n, rows in self.sections]
        return {"ok": self.ok, "sections": sections}


def test(root: str, file: str, *, settle_s: float = 5.0, parallel: int = matrix.SOURCE_PARALLEL,
         log: Callable[[str], None] = lambda line: None) -> TestReport:  # fmt: skip
    paths, topo, state = require_up(root, file)
    shells = {h: HostShell(paths, topo, state, h) for h in topo.hosts}
    addresses = running_addresses(shells, topo)
    missing = sorted(set(topo.containers) - set(addresses))
    if missing:
        raise LabError(f"lab {topo.name}: containers {', '.join(missing)} are not running; see `netctl lab status`")

    def probe(source: str, targets: list[str]) -> dict[str, bool]:
        shell = shells[topo.containers[source].host]
        out = shell.netctl("exec", source, "sh", "-c", matrix.ping_script(targets), timeout=120,
                           what=f"probe from {source}").stdout  # fmt: skip
        return matrix.parse_output(out, targets)

    def flush() -> None:
        _flush_neighbours(paths)

    report = TestReport([])
    rows = matrix.plan(topo, topo.expect, addresses)
    matrix.run(rows, probe, settle_s=settle_s, parallel=parallel, between_waves=flush)
    report.sections.append(("base", rows))
    log(f"base: {sum(r.ok for r in rows)}/{len(rows)} as expected")
    for scenario in topo.scenarios:
        report.sections += _scenario(paths, topo, scenario, addresses, probe, settle_s, parallel, flush, log)
    return report


def _scenario(paths: Paths, topo: Topology, scenario: topology.Scenario, addresses, probe, settle_s, parallel, flush,
              log):  # fmt: skip
    fabric = paths.fabric
    try:
        for host in scenario.cut:
            fabric.set_link(topo, host, up=False)
        rows = matrix.plan(topo, scenario.expect, addresses)
        matrix.run(rows, probe, settle_s=settle_s, parallel=parallel, between_waves=flush)
    finally:
        for host in scenario.cut:
            fabric.set_link(topo, host, up=True)
    log(f"scenario {scenario.name} (cut {', '.join(scenario.cut)}): {sum(r.ok for r in rows)}/{len(rows)} as expected")
    # Restored: what the base expectations say about the cut hosts' containers must hold again.
    cut_containers = {c.name for h in scenario.cut for c in topo.containers_on(h)}
    after = [r for r in matrix.plan(topo, topo.expect, addresses)
             if r.source in cut_containers or r.target in cut_containers]  # fmt: skip
    matrix.run(after, probe, settle_s=max(settle_s, 10.0), parallel=parallel, between_waves=flush)
    log(f"after {scenario.name} (link restored): {sum(r.ok for r in after)}/{len(after)} as expected")
    return [(f"scenario {scenario.name}", rows), (f"after {scenario.name}", after)]


def _flush_neighbours(paths: Paths) -> None:
    """Forget the IPv4 neighbours the lab's namespaces learned (permanent and no-ARP entries, e.g. the
    overlay's static ones, stay): the machine has one neighbour table for all namespaces, and a big
    matrix would fill it (see matrix.WAVE_NEIGHBOURS). Entries are learned again on the next packet."""
    import socket as socket_module

    from libnetwork.netlink import Netlink

    keep = 0x80 | 0x40  # NUD_PERMANENT | NUD_NOARP
    for handle in sorted(lab_netns_paths(paths)):
        with contextlib.suppress(NetctlError, OSError), Netlink(handle) as inside:
            for neighbour in inside.neighs(family=socket_module.AF_INET):
                if not neighbour.state & keep and neighbour.ip:
                    inside.neigh_del(neighbour.index, neighbour.ip)
