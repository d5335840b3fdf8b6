"""libnetwork.netns (and libnetwork.sysctl) against the real kernel.

Each test runs its snippet in a throwaway network + mount namespace (`unshare`, /run a fresh tmpfs), so
handles, mounts and namespaces it makes vanish with it.
"""

from __future__ import annotations

from typing import Any

import pytest

from integration.snippets import run_in_throwaway_ns

pytestmark = pytest.mark.kernel

_PRELUDE = """
import json, os, subprocess, threading, time
from libnetwork import netns, sysctl
from libnetwork.netlink import Netlink
from libnetwork.errors import AlreadyExists, KernelError, NotFound

def mounts_at(path, pid="self"):
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split() for line in f if line.split()[4] == path]

def error_of(fn):
    try:
        fn()
        return None
    except Exception as err:
        return [type(err).__name__, str(err)]
"""


def in_throwaway_ns(code: str) -> Any:
    return run_in_throwaway_ns(_PRELUDE, code)


def test_create_makes_a_live_namespace_with_lo_up_and_delete_is_idempotent():
    r = in_throwaway_ns("""
        from pyroute2 import NetNS
        before = netns.current_ns_id()
        netns.create("/run/t/netns/a")
        after_create = netns.current_ns_id()
        st = os.stat("/run/t/netns/a")
        ns = NetNS("/run/t/netns/a")
        lo = ns.get_links()[0]
        lo_state = (lo.get_attr("IFLA_IFNAME"), bool(lo["flags"] & 1), len(ns.get_links()))
        ns.close()
        result = {
            "thread_unchanged": before == after_create,
            "distinct": [st.st_dev, st.st_ino] != list(before),
            "is_netns": netns.is_netns("/run/t/netns/a"),
            "lo": lo_state,
            "parent_mode": oct(os.stat("/run/t/netns").st_mode & 0o777),
            "deleted": [netns.delete("/run/t/netns/a"), netns.delete("/run/t/netns/a")],
            "left": [os.path.exists("/run/t/netns/a"), mounts_at("/run/t/netns/a")],
        }
    """)
    assert r["thread_unchanged"] and r["distinct"] and r["is_netns"]
    assert r["lo"] == ["lo", True, 1]
    assert r["parent_mode"] == "0o755"
    assert r["deleted"] == [True, False]
    assert r["left"] == [False, []]


def test_create_refuses_an_existing_path_and_leaves_it_alone():
    r = in_throwaway_ns("""
        netns.create("/run/t/a")
        with open("/run/t/plain", "w") as f:
            f.write("keep me")
        result = {
            "handle": error_of(lambda: netns.create("/run/t/a")),
            "file": error_of(lambda: netns.create("/run/t/plain")),
            "handle_still_ok": netns.is_netns("/run/t/a"),
            "file_kept": open("/run/t/plain").read(),
            "handle_mounts": len(mounts_at("/run/t/a")),
        }
    """)
    assert r["handle"] == ["AlreadyExists", "network namespace handle /run/t/a already exists; delete it first"]
    assert r["file"][0] == "AlreadyExists"
    assert r["handle_still_ok"] and r["file_kept"] == "keep me"
    assert r["handle_mounts"] == 1


def test_a_failed_create_leaves_no_file_no_mount_and_the_thread_where_it_was():
    r = in_throwaway_ns("""
        before = netns.current_ns_id()
        # The failure is injected at the last step (lo up, while the thread is inside the new namespace),
        # after the handle file and its bind mount exist: everything must be undone.
        original = netns._loopback_up
        def broken():
            raise OSError(5, "injected failure")
        netns._loopback_up = broken
        late = error_of(lambda: netns.create("/run/t/late"))
        netns._loopback_up = original
        # A real kernel refusal early on: the parent is a file, not a directory.
        open("/run/t/not-a-dir", "w").close()
        early = error_of(lambda: netns.create("/run/t/not-a-dir/x"))
        result = {"late": late, "early": early, "thread_unchanged": before == netns.current_ns_id(),
                  "files": sorted(os.listdir("/run/t")), "mounts": mounts_at("/run/t/late")}
    """)
    assert r["late"] == ["KernelError", "cannot bring lo up in network namespace /run/t/late: injected failure"]
    assert r["early"][0] == "KernelError" and "/run/t/not-a-dir" in r["early"][1]
    assert r["thread_unchanged"]
    assert r["files"] == ["not-a-dir"]
    assert r["mounts"] == []


def test_handle_directory_is_a_shared_mount_so_deletion_reaches_later_mount_namespaces():
    r = in_throwaway_ns("""
        netns.create("/run/t/a")
        netns.create("/run/t/b")  # second create must not stack another bind mount on the directory
        dir_mounts = mounts_at("/run/t")
        # A mount namespace made afterwards (as a container would be) holds a copy of the handle's mount.
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "unchanged", "--", "sleep", "30"])
        try:
            deadline = time.monotonic() + 5
            while not mounts_at("/run/t/a", holder.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_in_child = len(mounts_at("/run/t/a", holder.pid))
            netns.delete("/run/t/a")
            after_delete = len(mounts_at("/run/t/a", holder.pid))
        finally:
            holder.kill()
            holder.wait(timeout=5)
        result = {"dir_mounts": len(dir_mounts), "shared": any(f.startswith("shared:") for f in dir_mounts[0][6:]),
                  "seen_in_child": seen_in_child, "after_delete": after_delete}
    """)
    assert r["dir_mounts"] == 1 and r["shared"]
    assert r["seen_in_child"] == 1
    assert r["after_delete"] == 0  # the unmount propagated: the namespace can really go away


def test_entered_switches_the_thread_and_restores_it_even_on_error():
    r = in_throwaway_ns("""
        netns.create("/run/t/a")
        home = netns.current_ns_id()
        target = os.stat("/run/t/a")
        # A thread already running is unaffected: setns acts on the calling thread only. (A thread
        # started from inside would inherit the namespace, as clone() copies the caller's.)
        go, seen = threading.Event(), []
        def watch():
            go.wait(5)
            seen.append(netns.current_ns_id())
        other = threading.Thread(target=watch)
        other.start()
        with netns.entered("/run/t/a"):
            inside = netns.current_ns_id()
            go.set()
            other.join(5)
        back = netns.current_ns_id()
        def boom():
            with netns.entered("/run/t/a"):
                raise ValueError("boom inside")
        boom_error = error_of(boom)
        result = {"inside_is_target": list(inside) == [target.st_dev, target.st_ino], "home_restored": back == home,
                  "other_thread_home": seen == [home], "boom": boom_error,
                  "after_boom": netns.current_ns_id() == home,
                  "missing": error_of(lambda: netns.entered("/run/t/none").__enter__()),
                  "after_missing": netns.current_ns_id() == home}
    """)
    assert r["inside_is_target"] and r["home_restored"] and r["other_thread_home"]
    assert r["boom"] == ["ValueError", "boom inside"] and r["after_boom"]
    assert r["missing"][0] == "NotFound" and "/run/t/none" in r["missing"][1]
    assert r["after_missing"]


def test_open_fd_and_is_netns_tell_handles_from_other_files():
    r = in_throwaway_ns("""
        netns.create("/run/t/a")
        os.makedirs("/run/t/dir")
        open("/run/t/plain", "w").close()
        fd = netns.open_fd("/run/t/a")
        fd_ok = os.fstat(fd).st_ino == os.stat("/run/t/a").st_ino != os.stat("/proc/self/ns/net").st_ino
        cloexec = not os.get_inheritable(fd)
        os.close(fd)
        result = {"fd_ok": fd_ok, "cloexec": cloexec,
                  "is_netns": [netns.is_netns(p) for p in ("/run/t/a", "/run/t/plain", "/run/t/dir", "/run/t/none",
                                                           "/proc/self/ns/net", "/proc/self/ns/mnt")],
                  "missing": error_of(lambda: netns.open_fd("/run/t/none")),
                  "plain": error_of(lambda: netns.open_fd("/run/t/plain"))}
    """)
    assert r["fd_ok"] and r["cloexec"]
    assert r["is_netns"] == [True, False, False, False, True, False]
    assert r["missing"] == ["NotFound", "network namespace /run/t/none does not exist; was its sandbox deleted?"]
    assert r["plain"][0] == "NotFound" and "not a network namespace handle" in r["plain"][1]


def test_delete_undoes_stacked_mounts_and_plain_leftover_files():
    r = in_throwaway_ns("""
        netns.create("/run/t/a")
        subprocess.run(["mount", "--bind", "/proc/self/ns/net", "/run/t/a"], check=True)  # bound twice
        stacked = len(mounts_at("/run/t/a"))
        deleted = netns.delete("/run/t/a")
        open("/run/t/stale", "w").close()  # a handle whose mount is already gone
        result = {"stacked": stacked, "deleted": deleted, "stale": netns.delete("/run/t/stale"),
                  "left": sorted(os.listdir("/run/t")), "mounts": mounts_at("/run/t/a")}
    """)
    assert r["stacked"] == 2 and r["deleted"] and r["stale"]
    assert r["left"] == [] and r["mounts"] == []


def test_sysctl_reads_and_writes_inside_a_netns_only():
    r = in_throwaway_ns("""
        netns.create("/run/t/a")
        with Netlink("/run/t/a") as inside:
            inside.add_bridge("br.100", up=False)  # a dotted interface name
        sysctl.write("net.ipv4.ip_forward", "1", netns_path="/run/t/a")
        sysctl.write("net.ipv4.conf.br.100.route_localnet", "1", netns_path="/run/t/a")
        sysctl.write("net/ipv6/conf/all/forwarding", "1", netns_path="/run/t/a")
        result = {
            "inside": [sysctl.read("net.ipv4.ip_forward", netns_path="/run/t/a"),
                       sysctl.read("net/ipv4/conf/br.100/route_localnet", netns_path="/run/t/a"),
                       sysctl.read("net.ipv6.conf.all.forwarding", netns_path="/run/t/a")],
            "here": sysctl.read("net.ipv4.ip_forward"),  # the snippet's own (throwaway) namespace
            "path": sysctl.key_path("net.ipv4.conf.eth0.100.rp_filter"),
            "missing": error_of(lambda: sysctl.read("net.ipv4.conf.ghost.rp_filter", netns_path="/run/t/a")),
            "bad": error_of(lambda: sysctl.read("net/../../etc/passwd")),
            "no_ns": error_of(lambda: sysctl.read("net.ipv4.ip_forward", netns_path="/run/t/none")),
        }
    """)
    assert r["inside"] == ["1", "1", "1"]
    assert r["here"] == "0"
    assert r["path"] == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    assert r["missing"][0] == "NotFound" and "in network namespace /run/t/a" in r["missing"][1]
    assert r["bad"][0] == "InvalidArgument"
    assert r["no_ns"][0] == "NotFound"
