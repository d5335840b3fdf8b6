"""Pure logic of the runner: flag parsing, cgroup v1/v2 selection and files, hosts files, secure_join,
the monitor's framing. No kernel objects (the cgroup code runs against a plain directory tree)."""

from __future__ import annotations

import os

import pytest

from libnetwork.errors import InvalidArgument
from libnetwork.model import Endpoint, Sandbox
from runner import cgroups, hosts, protocol, spec
from runner.rootfs import secure_join

HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
COMBINED = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n"


def test_cgroup_version_is_picked_by_what_is_mounted():
    def everything(path):
        return True

    v1 = cgroups.parse_mounts(HYBRID, exists=everything)
    assert v1.version == 1
    assert v1.mounts == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                         "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}  # fmt: skip
    v2 = cgroups.parse_mounts(UNIFIED, exists=everything)
    assert v2.version == 2 and v2.unified == "/sys/fs/cgroup"
    # cgroup2 mounted over a hybrid tree hides the v1 hierarchies: still listed, but gone from sight.
    covered = cgroups.parse_mounts(HYBRID + UNIFIED, exists=lambda path: path == "/sys/fs/cgroup/cgroup.controllers")
    assert covered.version == 2
    combined = cgroups.parse_mounts(HYBRID.replace("/sys/fs/cgroup/cpu cgroup rw,relatime,cpu", "/sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct"), exists=everything)
    assert combined.mounts["cpu"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert cgroups.parse_mounts("proc /proc proc rw 0 0\n", exists=everything) is None


def test_limit_files_v1_and_v2():
    limits = cgroups.Limits(memory=16 << 20, cpus=0.5, pids=10)
    assert cgroups.limit_files(1, limits) == [
        ("memory.limit_in_bytes", "16777216"), ("memory.memsw.limit_in_bytes", "16777216"),
        ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000"), ("pids.max", "10"),
    ]  # fmt: skip
    assert cgroups.limit_files(2, limits) == [
        ("memory.max", "16777216"), ("memory.swap.max", "0"), ("cpu.max", "50000 100000"), ("pids.max", "10"),
    ]  # fmt: skip
    assert cgroups.limit_files(2, cgroups.Limits()) == []


def test_v2_cgroup_against_a_directory_tree(tmp_path):
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    cgroup = cgroups.Cgroup(cgroups.Hierarchy(2, unified=str(root)), "netctl/abc")
    cgroup.create(cgroups.Limits(memory=32 << 20, cpus=1.5, pids=100))
    assert (root / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (root / "netctl" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (root / "netctl" / "abc" / "memory.max").read_text() == str(32 << 20)
    assert (root / "netctl" / "abc" / "cpu.max").read_text() == "150000 100000"
    assert (root / "netctl" / "abc" / "pids.max").read_text() == "100"
    assert cgroup.directories() == {"unified": str(root / "netctl" / "abc")}
    (root / "netctl" / "abc" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroup.oom_killed()
    cgroup.join(4242)
    assert (root / "netctl" / "abc" / "cgroup.procs").read_text() == "4242"


def test_v2_refuses_a_limit_whose_controller_is_missing(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")
    cgroup = cgroups.Cgroup(cgroups.Hierarchy(2, unified=str(tmp_path)), "netctl/abc")
    with pytest.raises(InvalidArgument, match="memory cgroup controller is not available"):
        cgroup.create(cgroups.Limits(memory=16 << 20))
    assert not (tmp_path / "netctl").exists()


def test_v1_cgroup_against_a_directory_tree(tmp_path):
    mounts = {}
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        (tmp_path / controller).mkdir()
        mounts[controller] = str(tmp_path / controller)
    cgroup = cgroups.Cgroup(cgroups.Hierarchy(1, mounts=mounts), "netctl/t1/abc")
    cgroup.create(cgroups.Limits(memory=16 << 20, cpus=0.25, pids=10))
    assert (tmp_path / "memory/netctl/t1/abc/memory.limit_in_bytes").read_text() == str(16 << 20)
    assert not (tmp_path / "memory/netctl/t1/abc/memory.memsw.limit_in_bytes").exists()  # no swap accounting here
    assert (tmp_path / "cpu/netctl/t1/abc/cpu.cfs_quota_us").read_text() == "25000"
    assert (tmp_path / "pids/netctl/t1/abc/pids.max").read_text() == "10"
    (tmp_path / "memory/netctl/t1/abc/memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert not cgroup.oom_killed()
    # A new process joins through `tasks` ("0": this thread) on v1, which needs no RCU grace period.
    assert sorted(cgroup.self_join_files()) == sorted(f"{m}/netctl/t1/abc/tasks" for m in mounts.values())
    v2 = cgroups.Cgroup(cgroups.Hierarchy(2, unified=str(tmp_path)), "netctl/abc")
    assert v2.self_join_files() == [f"{tmp_path}/netctl/abc/cgroup.procs"]


@pytest.mark.parametrize(
    "text, size",
    [("16m", 16 << 20), ("16M", 16 << 20), ("1g", 1 << 30), ("7340032", 7340032), ("512mb", 512 << 20), ("6MiB", 6 << 20), ("1.5g", 3 << 29)],
)
def test_parse_memory(text, size):
    assert cgroups.parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5m", "0", "1k", "m", "nan"])
def test_parse_memory_rejects(text):
    with pytest.raises(InvalidArgument):
        cgroups.parse_memory(text)


def test_parse_cpus_and_pids():
    assert cgroups.parse_cpus("0.5") == 0.5
    for bad in ("0", "-1", "x", str((os.cpu_count() or 1) + 1)):
        with pytest.raises(InvalidArgument):
            cgroups.parse_cpus(bad)
    assert cgroups.parse_pids("10") == 10
    for bad in ("0", "-3", "ten"):
        with pytest.raises(InvalidArgument):
            cgroups.parse_pids(bad)


def test_cgroup_parent_validation(monkeypatch):
    monkeypatch.delenv(cgroups.PARENT_ENV, raising=False)
    assert cgroups.parent_name() == "netctl"
    assert cgroups.parent_name("netctl/t1") == "netctl/t1"
    monkeypatch.setenv(cgroups.PARENT_ENV, "netctl-x")
    assert cgroups.parent_name() == "netctl-x"
    for bad in ("../x", "a/../b", "a//b"):
        with pytest.raises(InvalidArgument):
            cgroups.parent_name(bad)


def test_env_parsing(tmp_path):
    assert spec.parse_env(["A=1", "B=", "HOME"], {"HOME": "/h"}) == ["A=1", "B=", "HOME=/h"]
    assert spec.parse_env(["UNSET"], {}) == []
    with pytest.raises(InvalidArgument):
        spec.parse_env(["1A=x"])
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nA=1\nB=two words\nC\n  D=x=y\n")
    assert spec.read_env_file(str(env_file), {"C": "from-env"}) == ["A=1", "B=two words", "C=from-env", "D=x=y"]
    assert spec.merge_env(["PATH=/bin", "A=1"], ["A=2", "B=3"]) == ["PATH=/bin", "A=2", "B=3"]


def test_volume_user_hostname_workdir_parsing(tmp_path):
    volume = spec.parse_volume(f"{tmp_path}:/data:ro")
    assert (volume.host, volume.container, volume.read_only) == (str(tmp_path), "/data", True)
    named = spec.parse_volume("data:/srv")  # a name, not a path: a named volume (runner/volumes.py)
    assert (named.name, named.host, named.container) == ("data", "", "/srv")
    for bad in ("./rel:/x", "no/pe:/x", "x:/y", f"{tmp_path}:rel", f"{tmp_path}:/x:rx", f"{tmp_path}:/", f"{tmp_path}", f"{tmp_path}:/a/../b"):
        with pytest.raises(InvalidArgument):
            spec.parse_volume(bad)
    assert spec.parse_user("1000:1000") == "1000:1000"
    assert spec.parse_user("nobody") == "nobody"
    for bad in (":1", "a b", "1000:x y"):
        with pytest.raises(InvalidArgument):
            spec.parse_user(bad)
    assert spec.check_hostname("web-1.example") == "web-1.example"
    for bad in ("-x", "a_b", "x" * 70):
        with pytest.raises(InvalidArgument):
            spec.check_hostname(bad)
    assert spec.check_workdir("/a/b/../c") == "/a/c"
    with pytest.raises(InvalidArgument):
        spec.check_workdir("rel")


def test_capability_set():
    default = spec.capability_set([], [])
    assert set(default) == set(spec.DEFAULT_CAPS)
    assert "NET_RAW" not in spec.capability_set([], ["net_raw"])
    assert "NET_ADMIN" in spec.capability_set(["CAP_NET_ADMIN"], [])
    assert spec.capability_set([], ["ALL"]) == []
    assert spec.capability_set(["NET_ADMIN"], ["ALL"]) == ["NET_ADMIN"]
    assert len(spec.capability_set(["ALL"], [])) == len(spec.CAPABILITIES)
    with pytest.raises(InvalidArgument):
        spec.capability_set(["FLY"], [])


def test_argv_resolution():
    request = spec.RunRequest(image="img")
    assert spec.resolve_argv(["/entry"], ["default"], request) == ["/entry", "default"]
    request.command = ["x", "y"]
    assert spec.resolve_argv(["/entry"], ["default"], request) == ["/entry", "x", "y"]
    request.entrypoint = "/other"
    assert spec.resolve_argv(["/entry"], ["default"], request) == ["/other", "x", "y"]
    with pytest.raises(InvalidArgument, match="no command given"):
        spec.resolve_argv(None, None, spec.RunRequest(image="img"))


def test_nofile_never_above_the_hard_limit():
    assert spec.nofile_limit(20000) == 20000
    assert spec.nofile_limit(2_000_000) == spec.DEFAULT_NOFILE


def _sandbox(name, sid, hostname=""):
    return Sandbox(id=sid, name=name, netns_path=f"/x/{sid}", hostname=hostname or name, container_id="c" + sid)


def _endpoint(eid, network, sandbox, address, aliases=()):
    return Endpoint(id=eid, name=sandbox, network_id=network, sandbox_id=sandbox, addresses=[address], aliases=list(aliases))


def test_hosts_files_list_the_containers_own_names_only():
    """Peers' names come from the agent's name server (netctl/dns/), as in Docker."""
    sandboxes = [_sandbox("a", "sa", "host-a"), _sandbox("b", "sb"), _sandbox("c", "sc")]
    endpoints = [
        _endpoint("e1", "n1", "sa", "10.0.0.2/24"),
        _endpoint("e2", "n1", "sb", "10.0.0.3/24", ["bee"]),
        _endpoint("e3", "n2", "sc", "10.1.0.2/24"),
        _endpoint("e4", "n2", "sb", "10.1.0.3/24"),
    ]
    plan = hosts.plan(sandboxes, endpoints, {"sa", "sb", "sc"})
    assert plan["sa"] == hosts.HOSTS_HEADER + "10.0.0.2\thost-a a\n"
    assert plan["sb"] == hosts.HOSTS_HEADER + "10.0.0.3\tb\n10.1.0.3\tb\n"
    assert "10.0." not in plan["sc"] and "10.1.0.2\tc\n" in plan["sc"]


def test_container_resolv_conf_names_the_embedded_server(tmp_path):
    source = tmp_path / "resolv.conf"
    source.write_text("nameserver 127.0.0.53\nsearch corp.example lab.example\noptions edns0 trust-ad\n")
    assert hosts.container_resolv_conf(host_file=str(source)) == (
        "nameserver 127.0.0.11\nsearch netctl.internal corp.example lab.example\noptions edns0 trust-ad\n")
    assert hosts.container_resolv_conf(["example.net"], ["ndots:2"], host_file=str(source)) == (
        "nameserver 127.0.0.11\nsearch netctl.internal example.net\noptions ndots:2\n")
    assert hosts.container_resolv_conf(["."], host_file=str(source)).splitlines()[1] == "search netctl.internal"
    assert hosts.container_resolv_conf(host_file=str(tmp_path / "none")) == (
        "nameserver 127.0.0.11\nsearch netctl.internal\n")


def test_write_in_place_keeps_the_inode(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("old content that is longer\n")
    inode = path.stat().st_ino
    assert hosts.write_in_place(str(path), "new\n")
    assert path.read_text() == "new\n" and path.stat().st_ino == inode
    assert not hosts.write_in_place(str(path), "new\n")
    assert not hosts.write_in_place(str(tmp_path / "gone"), "x")


def test_resolv_conf_drops_loopback_servers(tmp_path):
    source = tmp_path / "resolv.conf"
    source.write_text("nameserver 127.0.0.53\nnameserver 9.9.9.9\nnameserver ::1\nsearch example\n")
    assert hosts.resolv_conf(str(source)) == "nameserver 9.9.9.9\nsearch example\n"


def test_secure_join_stays_inside(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "abs").symlink_to("/etc/real")
    (root / "etc" / "up").symlink_to("../../../../outside")
    (root / "loop").symlink_to("loop")
    assert secure_join(str(root), "/etc/abs") == str(root / "etc" / "real")
    assert secure_join(str(root), "/etc/up/x") == str(root / "outside" / "x")
    assert secure_join(str(root), "/../../etc/hosts") == str(root / "etc" / "hosts")
    with pytest.raises(OSError):
        secure_join(str(root), "/loop/x")


def test_frames_round_trip():
    reader = protocol.FrameReader()
    data = protocol.message({"op": "x"}) + protocol.frame(protocol.STDOUT, b"out") + protocol.frame(protocol.STDERR, b"")
    reader.feed(data[:3])
    assert list(reader.frames()) == []
    reader.feed(data[3:])
    assert list(reader.frames()) == [(0, b'{"op":"x"}'), (1, b"out"), (2, b"")]


def test_frame_json_matches_the_json_package():
    import json

    value = {"op": "run", "request": {"env": ["A=é\n\"x\""], "n": -3, "f": 0.5, "t": True, "z": None, "l": []}}
    text = protocol.dumps(value)
    assert json.loads(text) == value and protocol.loads(text) == value and protocol.loads(text.encode()) == value
    assert text == json.dumps(value, separators=(",", ":"))
    for bad in ("", "{", '{"a":1} x', "NaN", '{"a":1}\n'):
        with pytest.raises(ValueError):
            protocol.loads(bad)
    with pytest.raises(TypeError):
        protocol.dumps({"a": object()})


def test_env_names():
    from runner.runopts import is_env_name

    assert all(is_env_name(n) for n in ("A", "_", "a_1", "PATH"))
    assert not any(is_env_name(n) for n in ("", "1A", "A-B", "A B", "É", "A\n", "A="))


def test_error_events_keep_their_class_and_exit_code():
    from libnetwork.errors import NotFound

    with pytest.raises(NotFound) as caught:
        protocol.raise_error(protocol.error_event(NotFound("gone")))
    assert caught.value.exit_code == 3
    with pytest.raises(Exception) as caught:
        protocol.raise_error({"event": "error", "kind": "StartFailed", "message": "no", "exit_code": 127})
    assert caught.value.exit_code == 127 and str(caught.value) == "no"


@pytest.mark.parametrize(
    "argv",
    [
        ["busybox"],
        ["--rm", "-it", "busybox", "sh"],
        ["-dit", "--name=web", "-e", "A=1", "-eB=2", "--network", "n1", "--net", "n2", "busybox", "sh", "-c", "x -e y"],
        ["-m16m", "--cpus", "0.5", "--pids-limit=10", "-v", "/a:/b:ro", "--cap-drop", "ALL", "img", "--rm"],
        ["--entrypoint", "", "-u", "1000:1000", "-w", "/w", "--read-only", "--", "img", "-x"],
        ["-p", "8080:80", "--ip", "10.0.0.5", "--network-alias", "a", "--hostname", "h", "img"],
    ],
)
def test_fast_parser_agrees_with_click(argv):
    """runner/runopts.py parses `run` exactly as the click command generated from the same table."""
    from netctl.containers_cli import run
    from runner import runopts

    ctx = run.make_context("run", list(argv))
    expected = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ctx.params.items()}
    values, image, command = runopts.parse_run(list(argv))
    assert image == expected.pop("image_ref")
    assert command == expected.pop("command")
    assert values == expected


@pytest.mark.parametrize("argv", [["--help"], ["-h", "img"], ["--frobnicate", "img"], ["-q", "img"], ["--name"], []])
def test_fast_parser_leaves_the_rest_to_click(argv):
    from runner import runopts

    with pytest.raises(runopts.NotForUs):
        runopts.parse_run(argv)


@pytest.mark.parametrize("argv", [["c1", "true"], ["-it", "c1", "sh"], ["-e", "A=1", "-u1000", "--workdir=/w", "c1", "ls", "-l"]])
def test_fast_exec_parser_agrees_with_click(argv):
    from netctl.containers_cli import exec_
    from runner import runopts

    ctx = exec_.make_context("exec", list(argv))
    expected = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ctx.params.items()}
    values, ref, command = runopts.parse_run(list(argv), runopts.EXEC_OPTIONS)
    assert ref == expected.pop("ref") and command == expected.pop("command")
    assert values == expected
