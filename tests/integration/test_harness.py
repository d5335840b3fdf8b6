"""The throwaway-host harness itself: isolation from the machine, teardown, the root guard."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import harness
from harness import CommandFailed, CommandTimedOut, Host, require_cmd

TESTS_DIR = Path(harness.__file__).resolve().parent
SCRIPT_NET = "203.0.113"  # TEST-NET-3: addresses that exist only inside our hosts


# ---- helpers ----------------------------------------------------------------------------------------


def root_link_names() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True, timeout=10).stdout
    return {link["ifname"] for link in json.loads(out)}


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:8]  # <= 15 chars for link names with a short prefix


def visible_anywhere(proc_file: str, needle: str) -> list[int]:
    """PIDs on the machine whose /proc/PID/<proc_file> mentions needle (e.g. net/dev, mounts).

    A marker name rather than a namespace inode: inodes of freed namespaces are reused at once.
    """
    hits = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/{proc_file}") as f:
                    if needle in f.read():
                        hits.append(int(entry))
            except OSError:
                pass
    return hits


def start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def has_exited(pidfd: int) -> bool:
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def child_pid(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    """The command nsenter started for a popen'd process (its only child)."""
    path = f"/proc/{proc.pid}/task/{proc.pid}/children"
    found: list[str] = []

    def ready() -> bool:
        nonlocal found
        with open(path) as f:
            found = f.read().split()
        return len(found) == 1

    assert wait_for(ready, timeout), f"nsenter {proc.pid} started no child"
    return int(found[0])


def mark_host(host: Host) -> dict:
    """Leave recognisable traces in a host: a link, a mount, a process. Returns how to find them."""
    link, mount = unique("nct"), f"/run/{unique('nct')}"
    host.run("ip", "link", "add", link, "type", "bridge")
    host.run("mkdir", mount)
    host.run("mount", "-t", "tmpfs", "tmpfs", mount)
    return {"link": link, "mount": mount, "init": host.pid, "init_start": start_time(host.pid)}


def assert_traces_gone(marks: dict) -> None:
    assert wait_for(lambda: start_time(marks["init"]) != marks["init_start"]), "host init still running"
    assert wait_for(lambda: not visible_anywhere("net/dev", marks["link"])), "host netns still in use"
    assert wait_for(lambda: not visible_anywhere("mounts", marks["mount"])), "host mount ns still in use"


def run_inner_pytest(
    tmp_path: Path, test_source: str, *, runner: Host | None = None, timeout: float = 120, popen: bool = False
):
    """Run a separate pytest session on test_source with our conftest loaded as a plugin."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(test_source))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest", "-q", str(test_file)]
    env = {"PYTHONPATH": str(TESTS_DIR), "MARKS": str(tmp_path / "marks.json"), harness.NESTED_SESSION_ENV: "1"}
    if runner is not None:
        return runner.run(*argv, check=False, timeout=timeout, env=env)
    if popen:
        return subprocess.Popen(
            argv, cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
    return subprocess.run(
        argv, cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


# ---- isolation from the machine ---------------------------------------------------------------------


def test_host_objects_are_invisible_in_root(host: Host):
    # Other xdist workers make and remove their own cgroup parents meanwhile: the suite's guard
    # checks those at the end.
    before = harness.root_snapshot(test_cgroups=False)
    link = unique("nct")
    host.run("ip", "link", "add", link, "type", "bridge")
    host.run("ip", "addr", "add", f"{SCRIPT_NET}.7/24", "dev", link)
    host.run("ip", "link", "set", link, "up")
    host.run("nft", "add", "table", "inet", "nctest_harness")
    host.run("mkdir", "-p", "/run/netctl")
    host.run("mount", "-t", "tmpfs", "tmpfs", "/run/netctl")

    assert link in host.ip_link_names()
    assert "nctest_harness" in host.run("nft", "list", "tables").stdout
    # /sys is the host's own: its links, not the machine's.
    assert set(host.run("ls", "/sys/class/net").stdout.split()) == {"lo", link}
    assert "/run/netctl" in host.run("cat", "/proc/self/mounts").stdout

    assert link not in root_link_names()
    assert not os.path.exists(f"/sys/class/net/{link}")
    with open("/proc/self/mounts") as f:
        assert " /run/netctl " not in f.read()
    assert harness.diff_snapshots(before, harness.root_snapshot(test_cgroups=False)) == ""


def test_commands_run_with_the_expected_environment(host: Host):
    code = "import os, socket, sys; print(os.environ['NETCTL_ROOT'], os.getcwd(), sys.executable, socket.gethostname())"
    assert host.py(code).stdout.split() == ["/run/netctl", os.getcwd(), sys.executable, "host"]
    assert host.run("cat", input="piped\n").stdout == "piped\n"
    assert host.run("sh", "-c", "echo $EXTRA", env={"EXTRA": "yes"}).stdout == "yes\n"
    # A fresh /run (libmount keeps its utab in /run/mount).
    assert set(host.run("ls", "-A", "/run").stdout.split()) <= {"mount"}
    assert host.run("sh", "-c", "echo $$").stdout.strip() != str(os.getpid())  # own pid namespace


def test_kernel_marker_is_added_for_host_fixtures(host: Host, request: pytest.FixtureRequest):
    assert request.node.get_closest_marker("kernel") is not None


# ---- run(), popen(), in_netns(), snapshot() ---------------------------------------------------------


def test_run_reports_failures_with_everything_needed(host: Host):
    with pytest.raises(CommandFailed) as caught:
        host.run("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
    message = str(caught.value)
    assert "exit status 3" in message and "to-stdout" in message and "to-stderr" in message
    assert "'sh', '-c'" in message
    assert isinstance(caught.value, AssertionError)
    assert host.run("sh", "-c", "exit 3", check=False).returncode == 3


def test_run_timeout_kills_the_command(host: Host):
    started = time.monotonic()
    with pytest.raises(CommandTimedOut, match="timed out after 1s"):
        host.run("sh", "-c", "echo $$ > /run/victim; exec sleep 30", timeout=1)
    assert time.monotonic() - started < 10
    # Killed at once; reaped by the host's init a moment later (till then kill -0 sees a zombie).
    assert wait_for(lambda: host.run("sh", "-c", "kill -0 $(cat /run/victim)", check=False).returncode != 0)


def test_init_reaps_orphans(host: Host):
    host.run("sh", "-c", "sleep 0.1 >/dev/null 2>&1 &")
    # The orphaned sleep is reparented to the host's init, which must reap it: no zombie remains.
    assert wait_for(lambda: host.run("ps", "-e", "-o", "stat=").stdout.count("Z") == 0, timeout=5)


def test_in_netns_runs_inside_a_netns_handle(host: Host):
    handle = "/run/netctl/netns/sb1"
    host.run("mkdir", "-p", "/run/netctl/netns")
    host.run("touch", handle)
    host.run("unshare", f"--net={handle}", "true")
    host.in_netns(handle, "ip", "link", "add", "eth0", "type", "bridge")

    assert host.in_netns(handle, "cat", "/proc/net/dev").stdout.count("eth0") == 1
    assert "eth0" not in host.ip_link_names()  # the handle is another netns than the host's
    assert host.snapshot()["netns"] == ["sb1"]


def test_snapshot_sees_each_kind_of_change(host: Host):
    before = host.snapshot()
    assert before["links"] == ["lo kind=- mtu=65536 master=- flags=LOOPBACK,UP"]
    assert before["store"] == {} and before["netns"] == [] and before["nft"] == []

    host.run("ip", "link", "add", "nc-test", "type", "bridge")
    host.run("ip", "addr", "add", f"{SCRIPT_NET}.1/24", "dev", "nc-test")
    host.run("ip", "link", "set", "nc-test", "up")
    host.run("nft", "add table inet netctl; add chain inet netctl c { type filter hook input priority 0; }; "
             "add rule inet netctl c counter accept")  # fmt: skip
    host.run("mkdir", "-p", "/run/netctl/netns")
    host.run("touch", "/run/netctl/netns/abc")
    host.py(
        "import sqlite3; c = sqlite3.connect('/run/netctl/netctl.db'); c.execute('PRAGMA journal_mode=WAL');"
        "c.execute('PRAGMA user_version=1'); c.execute('CREATE TABLE networks (id TEXT, name TEXT)');"
        "c.execute(\"INSERT INTO networks VALUES ('n1', 'front')\"); c.commit()"
    )
    after = host.snapshot()

    diff = harness.diff_snapshots(before, after)
    for expected in ("+nc-test kind=bridge", f"+nc-test inet {SCRIPT_NET}.1/24", f"+{SCRIPT_NET}.0/24 dev nc-test",
                     "+table inet netctl {", "+abc", "+networks: ('n1', 'front')", "+user_version: (1,)"):  # fmt: skip
        assert expected in diff, f"{expected!r} missing from:\n{diff}"
    # Traffic moves counters, which must not count as a change.
    host.run("ping", "-c", "2", "-i", "0.2", "-W", "1", f"{SCRIPT_NET}.1")
    assert harness.diff_snapshots(after, host.snapshot()) == ""


def test_require_cmd():
    assert require_cmd("sh").endswith("/sh")
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_cmd("no-such-command-netctl")


def test_diff_snapshots_shows_only_what_changed():
    state = {"links": ["lo"], "store": {"t": [(1, "a")]}}
    assert harness.diff_snapshots(state, {"links": ["lo"], "store": {"t": [(1, "a")]}}) == ""
    diff = harness.diff_snapshots(state, {"links": ["lo", "x"], "store": {"t": [(1, "a"), (2, "b")]}})
    assert "+x" in diff and "+t: (2, 'b')" in diff and "-lo" not in diff


# ---- teardown ---------------------------------------------------------------------------------------


@pytest.mark.kernel
def test_teardown_removes_everything_even_when_the_body_raises():
    with pytest.raises(RuntimeError, match="body failed"):
        with Host.start("doomed") as doomed:
            marks = mark_host(doomed)
            raise RuntimeError("body failed")
    assert not doomed.alive
    assert_traces_gone(marks)


@pytest.mark.kernel
def test_popen_processes_are_gone_after_teardown():
    host = Host.start("bg")
    try:
        foreground = host.popen("sleep", "1000")
        sleeper = child_pid(foreground)
        # A daemon that left its session and parent: only the pid namespace still holds it.
        host.run("sh", "-c", "setsid sleep 1001 </dev/null >/dev/null 2>&1 &")
        assert wait_for(lambda: "1001" in host.run("ps", "-e", "-o", "args=").stdout)
        inside = host.processes()
        assert host.pid in inside and sleeper in inside and len(inside) >= 3
        pidfds = [os.pidfd_open(pid) for pid in inside]
    finally:
        host.close()
    try:
        assert foreground.poll() is not None
        assert all(has_exited(fd) for fd in pidfds)
    finally:
        for fd in pidfds:
            os.close(fd)
    host.close()  # idempotent


def test_two_hosts_are_isolated(hosts):
    h1, h2 = hosts(2)
    for h in (h1, h2):  # the same names and addresses in both: no clash
        h.run("ip", "link", "add", "same0", "type", "bridge")
        h.run("ip", "addr", "add", f"{SCRIPT_NET}.1/24", "dev", "same0")
    h1.run("ip", "link", "add", "only1", "type", "bridge")
    h1.run("nft", "add", "table", "inet", "only1")
    h1.run("mkdir", "-p", "/run/netctl")
    h1.run("touch", "/run/netctl/only1")
    h1.popen("sleep", "1000")

    assert "only1" in h1.ip_link_names() and "only1" not in h2.ip_link_names()
    assert "only1" not in h2.run("nft", "list", "ruleset").stdout
    assert h2.run("test", "-e", "/run/netctl/only1", check=False).returncode != 0
    assert "sleep" not in h2.run("ps", "-e", "-o", "comm=").stdout
    assert (h1.run("hostname").stdout, h2.run("hostname").stdout) == ("h1\n", "h2\n")
    assert not set(h1.processes()) & set(h2.processes())
    assert [h.name for h in hosts(1)] == ["h3"]


def test_upstream_is_reachable_both_ways(host: Host, upstream):
    host.run("ping", "-c", "1", "-W", "2", upstream.address)
    upstream.run("ping", "-c", "1", "-W", "2", upstream.host_address)
    assert f"via {upstream.address}" in host.run("ip", "route", "get", f"{SCRIPT_NET}.9").stdout
    assert "upstream" not in root_link_names() and not os.path.exists("/run/netns/upstream")

    server = upstream.popen(
        sys.executable, "-c",
        "import socket; s = socket.create_server(('198.51.100.2', 8080)); print('up', flush=True);"
        "c, _ = s.accept(); c.sendall(b'hello from upstream'); c.close()",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout.readline() == "up\n"
    reply = host.py("import socket; print(socket.create_connection(('198.51.100.2', 8080), timeout=5).recv(100))")
    assert reply.stdout.strip() == "b'hello from upstream'"


# ---- teardown through the fixtures, in separate pytest sessions ---------------------------------------

INNER_RECORD = """
    import json, os, sys, time
    sys.path.insert(0, {tests_dir!r})
    from integration.test_harness import mark_host

    def record(host):
        with open(os.environ["MARKS"], "w") as f:
            json.dump(mark_host(host), f)
"""


def inner_source(body: str) -> str:
    return textwrap.dedent(INNER_RECORD.format(tests_dir=str(TESTS_DIR))) + textwrap.dedent(body)


@pytest.mark.kernel
def test_fixture_teardown_after_a_failing_test(tmp_path: Path):
    result = run_inner_pytest(tmp_path, inner_source("""
        def test_fails(host):
            record(host)
            assert False, "the test body failed"
    """))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the test body failed" in result.stdout
    assert_traces_gone(json.loads((tmp_path / "marks.json").read_text()))


@pytest.mark.kernel
def test_per_test_timeout_fails_the_test_and_tears_down(tmp_path: Path):
    started = time.monotonic()
    result = run_inner_pytest(tmp_path, inner_source("""
        import pytest

        @pytest.mark.timeout(1)
        def test_hangs(host):
            record(host)
            host.run("sleep", "60")
    """))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "exceeded the 1s test timeout" in result.stdout
    assert time.monotonic() - started < 30
    assert_traces_gone(json.loads((tmp_path / "marks.json").read_text()))


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["interrupted", "killed"])
def test_hosts_vanish_when_the_session_is_interrupted_or_killed(tmp_path: Path, sig: signal.Signals):
    proc = run_inner_pytest(tmp_path, inner_source("""
        def test_waits(hosts):
            for h in hosts(2):
                record(h)  # the last one is recorded; both must go
                h.popen("sleep", "1000")
            time.sleep(60)
    """), popen=True)  # fmt: skip
    marks_file = tmp_path / "marks.json"
    try:
        assert wait_for(lambda: marks_file.exists() and marks_file.stat().st_size > 0, timeout=30)
        marks = json.loads(marks_file.read_text())
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        if sig == signal.SIGINT:  # pytest's own teardown ran; for SIGKILL the stdin pipes did the job
            assert proc.returncode == pytest.ExitCode.INTERRUPTED, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
    assert_traces_gone(marks)


def test_root_guard_fails_a_session_that_changes_its_root(host: Host, tmp_path: Path):
    # The inner session runs inside `host`, so the "root" it guards is the host: safe to dirty.
    leaky = run_inner_pytest(tmp_path, """
        import subprocess

        def test_leaks_a_link():
            subprocess.run(["ip", "link", "add", "leak0", "type", "bridge"], check=True)
    """, runner=host)  # fmt: skip
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    assert "1 passed" in leaky.stdout
    assert "root namespace guard: FAILED" in leaky.stdout and "+leak0 kind=bridge" in leaky.stdout

    host.run("ip", "link", "del", "leak0")
    clean = run_inner_pytest(tmp_path, """
        def test_clean():
            pass
    """, runner=host)  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "root namespace guard" not in clean.stdout


@pytest.mark.kernel
def test_harness_command_line_runs_a_command_in_a_throwaway_host():
    script = str(TESTS_DIR / "harness.py")
    out = subprocess.run([sys.executable, script, "--", "ip", "-o", "link"], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    rc = subprocess.run([sys.executable, script, "--upstream", "--", "sh", "-c", "ping -c1 -W2 198.51.100.2 >/dev/null; exit 7"],
                        timeout=60).returncode  # fmt: skip
    assert rc == 7
