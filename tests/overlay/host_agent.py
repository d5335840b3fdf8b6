"""Runs inside a throwaway host: applies overlay-driver operations sent as JSON on stdin.

The tests keep the global store on the machine's loopback (etcd never listens elsewhere), so hosts
cannot reach it; the test process reads the store and hands each host what its daemon would have
computed. Input: a JSON list of operations; output: a JSON list of their results, one per operation.

    {"op": "plan",      "vtep": ..., "network": {...}}                   -> network dict (names, MTU)
    {"op": "ensure",    "vtep": ..., "network": {...}}                   -> true if built now
    {"op": "delete",    "vtep": ..., "network": {...}}
    {"op": "sandbox",   "path": ...}                                     -> creates a netns handle
    {"op": "join",      "vtep": ..., "network": {...}, "endpoint": {...}, "sandbox": {...}}
    {"op": "leave",     "vtep": ..., "network": {...}, "endpoint": {...}, "sandbox": {...}}
    {"op": "reconcile", "vtep": ..., "network": {...}, "peers": [{"mac", "vtep", "addresses"}], "dry_run": false}
    {"op": "tables",    "vtep": ..., "network": {...}}                   -> {"fdb": ..., "neighbours": ...}
    {"op": "fastpath",  "network": {...}}                                -> {MAC: device} or null

A reconcile result carries "seconds": how long the driver took (the convergence benchmark uses it).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time


def main() -> int:
    from drivers.overlay import OverlayDriver, Peer
    from libnetwork import netns
    from libnetwork.model import Endpoint, Network, Sandbox
    from libnetwork.netlink import Netlink

    results = []
    with Netlink() as host:
        for op in json.load(sys.stdin):
            driver = OverlayDriver(op.get("vtep", ""))
            network = Network.from_dict(op["network"]) if "network" in op else None
            kind = op["op"]
            if kind == "plan":
                driver.plan_network(network, [], host)
                results.append(network.to_dict())
            elif kind == "ensure":
                results.append(driver.ensure_network(network, host))
            elif kind == "delete":
                driver.delete_network(network, host)
                results.append(None)
            elif kind == "sandbox":
                netns.create(op["path"])
                results.append(op["path"])
            elif kind in ("join", "leave"):
                endpoint, sandbox = Endpoint.from_dict(op["endpoint"]), Sandbox.from_dict(op["sandbox"])
                getattr(driver, kind)(network, endpoint, sandbox, host)
                results.append(driver.endpoint_ifname(endpoint))
            elif kind == "reconcile":
                peers = [Peer(p["mac"], p["vtep"], tuple(p["addresses"])) for p in op["peers"]]
                start = time.perf_counter()
                result = dataclasses.asdict(driver.reconcile(network, peers, host, dry_run=op.get("dry_run", False)))
                result["seconds"] = time.perf_counter() - start
                results.append(result)
            elif kind == "tables":
                results.append(dataclasses.asdict(driver.kernel_tables(network, host)))
            elif kind == "fastpath":
                results.append(driver.fast_path_entries(network))
            else:
                raise SystemExit(f"unknown op {kind!r}")
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
