"""`netctl lab`: multi-host overlay labs described in YAML (topology_examples/README.md).

    topology.py  YAML -> validated plain objects (one clear error line for anything wrong)
    fabric.py    the lab's kernel side: a switch namespace with one bridge per underlay, one namespace
                 per host with eth0 on its underlay, all bound under ROOT/labs/<name>/netns/
    etcd.py      an etcd server inside the switch namespace, on the underlays' switch addresses
    processes.py processes started by the lab, recorded by PID and start time, stopped by them
    matrix.py    the reachability matrix: rows from the expectations, pings from inside containers
    lab.py       up / down / status / test, the state file ROOT/labs/<name>/state.json
"""
