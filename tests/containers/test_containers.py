"""The container process and its life cycle, on the real kernel inside throwaway hosts (issue #3)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from e2e.conftest import command_pid
from containers.conftest import wait_for

PTY_SESSION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "pty_session.py")

pytestmark = pytest.mark.kernel


def test_pid1_hostname_and_isolation(rhost):
    out = rhost.container("--rm", "--network", "net", "--hostname", "box1", "busybox",
                          "sh", "-c", "echo pid=$$; hostname; cat /etc/hostname; ps -o pid,comm").stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "pid=1"
    assert lines[1] == "box1" and lines[2] == "box1"
    other = rhost.start("other")
    # Inside one container only its own processes are visible: its init and ps.
    ps = rhost.exec("other", "ps", "-o", "pid,comm").stdout.split("\n")[1:]
    commands = [line.split()[1] for line in ps if line.strip()]
    assert commands == ["sleep", "ps"], ps
    assert rhost.inspect(other)["State"]["Pid"] > 1


def test_writes_are_private(rhost):
    rhost.start("a")
    rhost.start("b")
    rhost.exec("a", "sh", "-c", "echo secret > /etc/written; rm /bin/cat")
    assert rhost.exec("a", "ls", "/etc/written").returncode == 0
    assert rhost.exec("b", "ls", "/etc/written", check=False).returncode != 0
    assert rhost.exec("b", "cat", "/etc/hostname").returncode == 0  # b still has the cat a deleted
    fresh = rhost.container("--rm", "busybox", "sh", "-c", "ls /etc/written; ls /bin/cat", check=False)
    assert "written" not in fresh.stdout and "/bin/cat" in fresh.stdout
    # The image's layer directory is untouched.
    layers = rhost.run("sh", "-c", "ls /run/netctl/images/layers/*/diff/etc").stdout.split()
    assert "written" not in layers


def test_memory_limit_oom_kill(rhost):
    result = rhost.container("--name", "hog", "--memory", "16m", "--network", "none", "busybox",
                             "sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done", check=False, timeout=60)  # fmt: skip
    assert result.returncode == 137, result.stderr
    view = rhost.inspect("hog")
    assert view["State"]["OOMKilled"] is True
    assert view["State"]["ExitCode"] == 137
    assert view["HostConfig"]["Memory"] == 16 << 20
    rhost.netctl("rm", "hog")


def test_pids_limit_contains_a_fork_bomb(rhost):
    cid = rhost.start("bomb", "--pids-limit", "10", network="none",
                      command=("sh", "-c", "bomb() { bomb | bomb & }; bomb & exec sleep 600"))  # fmt: skip
    # The container's shell forks once, before the bomb has started, then becomes sleep (exec): it must
    # never fork after the bomb has the pids (sh ends at a failed fork). `bomb; exec sleep` forked twice
    # for the pipeline, and under load the first child filled the limit before the second fork.
    time.sleep(1.0)
    current = int(rhost.cgroup_file("pids", cid, "pids.current"))
    assert current <= 10
    assert int(rhost.cgroup_file("pids", cid, "pids.max")) == 10
    events = rhost.cgroup_file("pids", cid, "pids.events")
    assert int(events.split()[1]) > 0, events  # forks were refused
    assert rhost.netctl("ps").returncode == 0  # the host is fine
    rhost.netctl("rm", "-f", "bomb", timeout=30)
    assert rhost.cgroup_dirs(cid) == []


def test_cpus_limit_is_measured(rhost):
    """--cpus 0.5: a busy loop gets 50 % of a CPU (cgroup usage over a wall-clock window), +-20 %.

    The limit must hold in every window; reaching it needs a free half CPU, which a loaded CI machine
    (2 CPUs, four test workers) does not always leave in one window: up to three windows are measured."""
    cid = rhost.start("spin", "--cpus", "0.5", network="none", command=("sh", "-c", "while :; do :; done"))
    quota, period = (int(rhost.cgroup_file("cpu", cid, name)) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    assert quota / period == 0.5
    time.sleep(0.5)  # past start-up

    def usage_ns() -> int:
        return int(rhost.cgroup_file("cpuacct", cid, "cpuacct.usage"))

    shares = []
    for _ in range(3):
        start_usage, start = usage_ns(), time.monotonic()
        time.sleep(2.0)
        shares.append((usage_ns() - start_usage) / 1e9 / (time.monotonic() - start))
        assert shares[-1] <= 0.6, f"measured {shares[-1]:.2f} CPUs: over the limit"
        if shares[-1] >= 0.4:
            break
    rhost.netctl("rm", "-f", "spin")
    assert shares[-1] >= 0.4, f"measured {[round(s, 2) for s in shares]} CPUs: never reached the limit"


def test_exec_joins_every_namespace_and_the_cgroup(rhost):
    cid = rhost.start("target")
    pid = rhost.inspect("target")["State"]["Pid"]
    init_ns = rhost.run("sh", "-c", f"for n in mnt uts ipc net pid cgroup; do readlink /proc/{pid}/ns/$n; done").stdout.split()
    seen = rhost.exec("target", "sh", "-c", "for n in mnt uts ipc net pid cgroup; do readlink /proc/self/ns/$n; done").stdout.split()
    assert seen == init_ns
    assert rhost.exec("target", "hostname").stdout.strip() == cid[:12]
    # The exec'd process sits in the container's cgroup (seen from the machine).
    procs = rhost.cgroup_file("memory", cid, "cgroup.procs").split()
    assert len(procs) == 1  # just init now
    exec_proc = rhost.netctl("exec", "target", "sh", "-c", "cat /proc/self/cgroup")
    assert "memory:/\n" in exec_proc.stdout  # its cgroup namespace is rooted at the container's cgroup


def test_stop_escalates_to_sigkill_within_timeout(rhost):
    rhost.start("stubborn", network="none", command=("sh", "-c", "trap '' TERM; while :; do sleep 1; done"))
    start = time.monotonic()
    rhost.netctl("stop", "-t", "2", "stubborn")
    elapsed = time.monotonic() - start
    # It waited the 2 s it was given, then killed (the loop ignores TERM: without the KILL it never ends);
    # 2 s of slack for a loaded machine.
    assert 2.0 <= elapsed < 4.0, f"stop took {elapsed:.2f}s"
    state = rhost.inspect("stubborn")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137


def test_stop_with_sigterm_handler_is_quick(rhost):
    rhost.start("polite", network="none", command=("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"))
    start = time.monotonic()
    rhost.netctl("stop", "-t", "10", "polite")
    assert time.monotonic() - start < 2.0
    assert rhost.inspect("polite")["State"]["ExitCode"] == 0


def test_monitor_survives_kill9_of_the_cli(rhost):
    proc = rhost.popen_netctl("run", "--name", "orphan", "--network", "net", "busybox", "sh", "-c", "sleep 600")
    cli = command_pid(proc)
    wait_for(lambda: "orphan" in rhost.netctl("ps").stdout, what="the container to run")
    os.kill(cli, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.2)
    view = rhost.inspect("orphan")
    assert view["State"]["Running"] is True
    assert rhost.exec("orphan", "true").returncode == 0
    rhost.netctl("kill", "-s", "TERM", "orphan")  # sh as PID 1 ignores TERM: still running
    rhost.netctl("kill", "orphan")
    assert rhost.netctl("wait", "orphan").stdout.strip() == "137"


def test_rm_force_removes_everything(rhost):
    before = rhost.host.snapshot()
    cid = rhost.start("doomed", "--network-alias", "dd")
    assert rhost.cgroup_dirs(cid)
    netns = rhost.host.snapshot()["netns"]
    assert len(netns) == 1
    rhost.netctl("rm", "-f", "doomed")
    after = rhost.host.snapshot()
    assert after["netns"] == []
    # The namespace goes first and takes its veth pair with it in the kernel's own time (a few ms, see
    # Runtime._delete_sandbox), so the host end may still be listed for a moment.
    wait_for(lambda: rhost.host.snapshot()["links"] == before["links"], timeout=5, what="the veth pair to go")
    for table in ("endpoints", "sandboxes", "ipam_addresses"):  # (the IPAM's round-robin cursor moved)
        assert after["store"][table] == before["store"][table], table
    assert rhost.cgroup_dirs(cid) == []
    assert not os.path.exists(rhost.path(f"/run/netctl/containers/{cid}"))
    mounts = rhost.run("cat", "/proc/self/mountinfo").stdout
    assert cid not in mounts
    assert rhost.netctl("network", "inspect", "net").stdout.count("EndpointID") == 0
    assert rhost.netctl("ps", "-a", "-q").stdout.strip() == ""


def test_twenty_in_parallel_get_distinct_addresses_and_resolve_each_other(rhost):
    from concurrent.futures import ThreadPoolExecutor

    names = [f"c{i}" for i in range(20)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda n: rhost.start(n, timeout=120), names))
    addresses = {}
    for name in names:
        networks = rhost.inspect(name)["NetworkSettings"]["Networks"]
        addresses[name] = networks["net"]["IPAddress"]
    assert len(set(addresses.values())) == 20
    # Everyone reaches the next one by name, and c0 resolves all 19 peers (the agent's name server).
    for i, name in enumerate(names):
        peer = names[(i + 1) % len(names)]
        out = rhost.exec(name, "ping", "-c", "1", "-W", "2", peer, timeout=20).stdout
        assert addresses[peer] in out
    lookups = rhost.exec("c0", "sh", "-c", f"for n in {' '.join(names[1:])}; do nslookup $n; done", timeout=60).stdout
    assert all(addresses[n] in lookups for n in names[1:]), lookups
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda n: rhost.netctl("rm", "-f", n, timeout=60), names))
    assert rhost.netctl("network", "inspect", "net").stdout.count("EndpointID") == 0


def test_logs_wait_and_exit_codes(rhost):
    rhost.start("talker", network="none", command=("sh", "-c", "echo to-out; echo to-err >&2; exit 7"))
    assert rhost.netctl("wait", "talker").stdout.strip() == "7"
    logs = rhost.netctl("logs", "talker")
    assert logs.stdout == "to-out\n" and logs.stderr == "to-err\n"
    # (PID 1 ignores signals it has no handler for, even its own: death by signal is tested with kill -9)
    result = rhost.container("--rm", "--network", "none", "busybox", "sh", "-c", "echo out; echo err >&2; exit 42", check=False)
    assert result.returncode == 42
    assert result.stdout == "out\n" and result.stderr == "err\n"
    follow = rhost.popen_netctl("logs", "-f", rhost.start("ticker", network="none", command=("sh", "-c", "for i in 1 2 3; do echo t$i; sleep 0.2; done")),
                                stdout=-1)  # fmt: skip
    out, _ = follow.communicate(timeout=20)
    assert out.split() == ["t1", "t2", "t3"]


def test_process_settings(rhost):
    rhost.run("sh", "-c", "mkdir -p /run/vol && echo from-host > /run/vol/file && printf 'A=1\\n# c\\nB=two words\\n' > /run/envfile")
    script = (
        "echo env=$A,$B,$C; pwd; id -u; id -g; cat /data/file; "
        "echo x > /data/new 2>/dev/null && echo wrote || echo ro-volume; "
        "grep NoNewPrivs /proc/self/status; ulimit -n; grep CapBnd /proc/self/status"
    )
    out = rhost.container("--rm", "--network", "none", "--env-file", "/run/envfile", "-e", "C=3", "-w", "/work",
                          "-u", "1000:1000", "-v", "/run/vol:/data:ro", "busybox", "sh", "-c", script).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "env=1,two words,3"
    assert lines[1:4] == ["/work", "1000", "1000"]
    assert lines[4] == "from-host" and lines[5] == "ro-volume"
    assert lines[6].split() == ["NoNewPrivs:", "1"]
    import resource

    assert int(lines[7]) <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert int(lines[8].split()[1], 16) == 0xA80425FB  # Docker's default capability set
    # --read-only, --cap-drop
    ro = rhost.container("--rm", "--network", "none", "--read-only", "busybox", "sh", "-c",
                         "touch /x 2>/dev/null && echo rw || echo ro; echo ok > /dev/shm/y && echo shm-ok", check=False).stdout  # fmt: skip
    assert ro.split() == ["ro", "shm-ok"]
    dropped = rhost.container("--rm", "--network", "net", "--cap-drop", "NET_RAW", "busybox", "ping", "-c", "1", "-W", "1", "10.88.0.1", check=False)
    assert dropped.returncode != 0
    denied = rhost.container("--rm", "--network", "none", "busybox", "ip", "link", "set", "lo", "mtu", "1400", check=False)
    assert denied.returncode != 0  # NET_ADMIN is not in the default set
    added = rhost.container("--rm", "--network", "none", "--cap-add", "NET_ADMIN", "busybox", "ip", "link", "set", "lo", "mtu", "1400", check=False)
    assert added.returncode == 0, added.stderr


def test_minimal_dev_proc_and_sys(rhost):
    out = rhost.container("--rm", "--network", "none", "busybox", "sh", "-c",
                          "ls /dev; touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro; "
                          "echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq-rw || echo sysrq-ro; "
                          "head -c 4 /dev/urandom | wc -c; cat /dev/null; mount | grep -c ' / '").stdout  # fmt: skip
    words = out.split()
    for node in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"):
        assert node in words
    assert "sys-ro" in words and "sysrq-ro" in words and "4" in words


def test_name_resolution_within_networks_only(rhost):
    """Names come from the agent's name server (netctl/dns/); /etc/hosts holds only the container's own."""
    rhost.netctl("network", "create", "--subnet", "10.89.0.0/24", "other")
    rhost.start("web", "--network-alias", "www")
    rhost.start("db", network="other")
    rhost.start("client")

    def resolves(container: str, name: str) -> bool:
        out = rhost.exec(container, "nslookup", f"{name}.netctl.internal", check=False)
        return out.returncode == 0

    assert rhost.exec("client", "ping", "-c", "1", "-W", "1", "www").returncode == 0
    # Compare whole names: a container's hex id (its hostname) may contain "db" by chance.
    assert "web" not in rhost.exec("client", "cat", "/etc/hosts").stdout.split()
    assert "client" in rhost.exec("client", "cat", "/etc/hosts").stdout.split()
    assert not resolves("client", "db")
    assert rhost.exec("client", "ping", "-c", "1", "-W", "1", "db", check=False).returncode != 0
    # network connect/disconnect on running containers updates names on both sides.
    rhost.netctl("network", "connect", "other", "client")
    assert "eth1" in rhost.exec("client", "ip", "-o", "link").stdout
    assert set(rhost.inspect("client")["NetworkSettings"]["Networks"]) == {"net", "other"}
    assert rhost.exec("client", "ping", "-c", "1", "-W", "1", "db").returncode == 0
    assert resolves("db", "client")
    rhost.netctl("network", "disconnect", "other", "client")
    assert not resolves("client", "db") and not resolves("db", "client")
    # rm removes the name from the peers.
    rhost.netctl("rm", "-f", "web")
    assert not resolves("client", "www")


def test_network_none_and_host(rhost):
    links = rhost.container("--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    host_links = rhost.container("--rm", "--network", "host", "busybox", "ip", "-o", "link").stdout
    assert "nc-" in host_links  # the host's bridge is visible: same network namespace


def test_interactive_terminal(rhost):
    """-it: the container gets a terminal; what we type reaches it, its exit code comes back."""
    result = rhost.host.run(sys.executable, PTY_SESSION, "--timeout", "20",
                            "--type", "tty; echo sum=$((40+2)); exit 5\\r",
                            "--", sys.executable, "-m", "netctl", "run", "-it", "--rm", "--network", "none", "busybox", "sh",
                            env=rhost.env, timeout=40)  # fmt: skip
    assert "sum=42" in result.stdout
    assert "/dev/" in result.stdout  # tty prints a terminal's name
    assert result.stdout.strip().endswith("exit 5")


def test_exec_terminal_and_stdin(rhost):
    rhost.start("shell", network="none")
    out = rhost.netctl("exec", "-i", "shell", "sh", "-c", "read line; echo got=$line", input="hello\n").stdout
    assert out.strip() == "got=hello"
    assert rhost.netctl("exec", "shell", "sh", "-c", "exit 4", check=False).returncode == 4
    missing = rhost.netctl("exec", "shell", "no-such-command", check=False)
    assert missing.returncode == 127 and len(missing.stderr.strip().splitlines()) == 1


def test_ps_and_inspect(rhost):
    cid = rhost.start("listed", "--ip", "10.88.0.50", "--memory", "32m", "--cpus", "0.5", "--pids-limit", "50")
    table = rhost.netctl("ps").stdout
    assert "listed" in table and cid[:12] in table
    view = rhost.inspect("listed")
    assert view["Id"] == cid and view["State"]["Status"] == "running"
    assert view["NetworkSettings"]["Networks"]["net"]["IPAddress"] == "10.88.0.50"
    assert view["NetworkSettings"]["Networks"]["net"]["Gateway"] == "10.88.0.1"
    assert view["HostConfig"]["NanoCpus"] == 500_000_000 and view["HostConfig"]["PidsLimit"] == 50
    listed = json.loads(rhost.netctl("ps", "--format", "json").stdout)
    assert [c["Name"] for c in listed] == ["listed"]
    rhost.netctl("stop", "-t", "0", "listed")
    assert rhost.netctl("ps", "-q").stdout.strip() == ""
    assert cid[:12] in rhost.netctl("ps", "-a", "-q").stdout
    # A stopped container has released its address and netns; rm then removes the rest.
    assert rhost.netctl("network", "inspect", "net").stdout.count("EndpointID") == 0
    rhost.netctl("rm", "listed")
    assert rhost.netctl("ps", "-a", "-q").stdout.strip() == ""


def test_monitor_restart_keeps_recorded_exits_and_adopts_running_containers(rhost):
    rhost.start("finished", network="none", command=("sh", "-c", "exit 9"))
    assert rhost.netctl("wait", "finished").stdout.strip() == "9"
    rhost.start("survivor")
    monitor = int(rhost.run("cat", "/run/netctl/monitor.lock").stdout.split()[0])
    rhost.run("kill", "-9", str(monitor))
    wait_for(lambda: rhost.run("kill", "-0", str(monitor), check=False).returncode != 0, what="the monitor to die")
    # The container runs on (its init was re-parented); recorded exit codes are on disk.
    assert rhost.exec("survivor", "true").returncode == 0
    assert rhost.inspect("finished")["State"]["ExitCode"] == 9
    # The next command starts a new monitor, which adopts the survivor: stop works, and the exit
    # code it could not collect is reported as lost (255), the teardown done all the same.
    rhost.netctl("stop", "-t", "1", "survivor")
    state = rhost.inspect("survivor")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 255 and "lost" in state["Error"]
    assert rhost.netctl("network", "inspect", "net").stdout.count("EndpointID") == 0
    rhost.netctl("rm", "finished", "survivor")


def test_several_networks_published_port_and_exec_terminal(rhost):
    rhost.netctl("network", "create", "--subnet", "10.89.0.0/24", "other")
    rhost.run("sh", "-c", "mkdir -p /run/www && echo served > /run/www/index.html")
    rhost.start("web", "--network", "other", "-p", "8081:80", "-v", "/run/www:/www:ro",
                command=("httpd", "-f", "-p", "80", "-h", "/www"))  # fmt: skip
    links = rhost.exec("web", "ip", "-o", "-4", "addr").stdout
    assert "eth0" in links and "10.88.0." in links and "eth1" in links and "10.89.0." in links
    view = rhost.inspect("web")
    assert view["NetworkSettings"]["Networks"]["net"]["Ports"] == ["8081->80/tcp"]
    # Published on the host: reachable through the host's own address of the bridge.
    fetch = "import urllib.request as u; print(u.urlopen('http://10.88.0.1:8081/', timeout=3).read().decode(), end='')"
    assert rhost.host.py(fetch, timeout=15).stdout == "served\n"
    # exec -t gives the process a terminal of its own.
    out = rhost.netctl("exec", "-t", "web", "sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty").stdout
    assert out.strip() == "is-a-tty"
