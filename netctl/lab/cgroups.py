"""The lab's cgroup parent, PARENT/lab-<name> (each host's containers go under <it>/<host>): named
when the lab comes up, removed with everything below it when the lab goes down.

Kept apart from `down` because it is the one step that works on every cgroup hierarchy of the machine
rather than on the lab's own directory, and it is tested on its own (tests/lab/test_lab_cgroups.py).
"""

from __future__ import annotations

import os
import time

from netctl.lab.state import LabError, State

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_REMOVE_TIMEOUT_S = 10.0


def cgroup_parent(name: str) -> str:
    from runner.cgroups import parent_name

    return f"{parent_name()}/lab-{name}"


def _cgroup_tops() -> list[str]:
    if not os.path.isdir(CGROUP_ROOT):
        return []
    return [CGROUP_ROOT] + [os.path.join(CGROUP_ROOT, d) for d in sorted(os.listdir(CGROUP_ROOT))]


def remove_cgroups(state: State) -> None:
    """PARENT/lab-<name> in every hierarchy, then its ancestors that became empty (the default
    parent "netctl" included), as the runner does after a container's last cgroup. Derived from
    what is there, not from what `up` remembers having made: a concurrent lab or container, or an
    `up` cut short, cannot leave a parent behind."""
    from runner.cgroups import remove_empty_parents

    if not state.cgroup_parent:
        return
    left = []
    for top in _cgroup_tops():
        base = os.path.join(top, state.cgroup_parent)
        if not os.path.realpath(base).startswith(CGROUP_ROOT + "/"):
            continue
        if os.path.isdir(base):
            left += _rmdir_tree(base)
        remove_empty_parents(base, state.cgroup_parent.count("/"))
    if left:
        raise LabError(f"cgroups could not be removed: {', '.join(left[:3])}")


def _rmdir_tree(base: str) -> list[str]:
    """rmdir `base` and its sub-directories bottom-up; cgroup dirs cannot be removed while tasks
    remain, so wait a little for exiting ones. Returns what stayed."""
    dirs = [d for d, _, _ in os.walk(base)]
    left = []
    deadline = time.monotonic() + CGROUP_REMOVE_TIMEOUT_S
    for directory in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    left.append(f"{directory} ({err.strerror})")
                    break
                time.sleep(0.05)
    return left
