"""`netctl lab`: multi-host overlay labs described in YAML (topology_examples/README.md).

    topology.py  YAML -> validated objects of model.py (one clear error line for anything wrong)
    fabric.py    the lab's kernel side: a switch namespace with one bridge per underlay, one namespace
                 per host with eth0 on its underlay, all bound under ROOT/labs/<name>/netns/
    etcd.py      an etcd server inside the switch namespace, on the underlays' switch addresses
    processes.py processes started by the lab, recorded by PID and start time, stopped by them
    matrix.py    the reachability matrix: rows from the expectations, pings from inside containers
    model.py     the lab's plain objects (Topology and its parts)
    lab.py       up / down / status / test (up.py, down.py, status.py, reachability.py), over
                 state.py (ROOT/labs/<name>/ and its state.json), shell.py (netctl as a lab host),
                 mounts.py and cgroups.py (what down removes beyond the lab's directory)
"""
