"""`netctl lab up|down|status|test`: a topology brought to life, inspected, tested and removed.

The public face of the lab's phases, one module each:

    up.py            validate -> switch -> hosts -> etcd -> daemons -> networks -> containers; any
                     failure runs `down`
    down.py          everything removed, also of a half-made lab; idempotent
    status.py        hosts and containers of a lab that is up
    reachability.py  `test`: the reachability matrix, then each scenario

and what they share: state.py (where a lab's things are, state.json), shell.py (netctl run as a lab
host, on every host at once), mounts.py and cgroups.py (what `down` removes beyond the directory).
"""

from __future__ import annotations

from netctl.lab.down import down
from netctl.lab.reachability import TestReport, test
from netctl.lab.shell import HostShell
from netctl.lab.state import LabError, Paths, State, read_state, write_state
from netctl.lab.status import require_up, status
from netctl.lab.up import up

__all__ = ["HostShell", "LabError", "Paths", "State", "TestReport", "down", "read_state", "require_up", "status",
           "test", "up", "write_state"]
