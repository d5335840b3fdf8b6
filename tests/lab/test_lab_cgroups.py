"""`lab down` removes the lab's cgroups and the parents that became empty, on a plain directory tree
standing in for /sys/fs/cgroup (the logic only makes and removes directories)."""

from __future__ import annotations

import os

from netctl.lab import cgroups, state


def make(root, *relative: str) -> None:
    for path in relative:
        os.makedirs(os.path.join(root, path))


def test_down_removes_the_labs_cgroups_and_every_parent_left_empty(tmp_path, monkeypatch):
    root = str(tmp_path.resolve())
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    make(root, "pids/netctl/lab-x/h1/c1", "memory/netctl/lab-x/h2", "cpu/netctl")  # cpu: the lab never got there
    make(root, "pids/netctl/other")  # someone else's container under the same parent
    cgroups.remove_cgroups(state.State("x", cgroup_parent="netctl/lab-x"))
    assert sorted(os.listdir(root)) == ["cpu", "memory", "pids"]
    assert os.listdir(os.path.join(root, "pids", "netctl")) == ["other"]  # in use: stays
    assert not os.path.exists(os.path.join(root, "memory", "netctl"))  # emptied by the lab: gone
    assert not os.path.exists(os.path.join(root, "cpu", "netctl"))  # empty, made by whoever: gone too


def test_down_of_a_lab_whose_parent_up_did_not_make_still_removes_it(tmp_path, monkeypatch):
    # Two labs on the default parent: the second `up` found "netctl" there already. Whichever
    # goes down last takes the parent along.
    root = str(tmp_path.resolve())
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    make(root, "pids/netctl/lab-a/h1", "pids/netctl/lab-b/h1")
    cgroups.remove_cgroups(state.State("a", cgroup_parent="netctl/lab-a"))
    assert os.listdir(os.path.join(root, "pids", "netctl")) == ["lab-b"]
    cgroups.remove_cgroups(state.State("b", cgroup_parent="netctl/lab-b"))
    assert os.listdir(os.path.join(root, "pids")) == []
