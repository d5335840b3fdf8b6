"""`netctl run --restart` (Docker's restart policies, carried out by the monitor: runner/restart.py)."""

from __future__ import annotations

import pytest

from containers.conftest import wait_for

pytestmark = pytest.mark.kernel


def test_on_failure_runs_its_retries_then_stays_exited(rhost):
    rhost.netctl("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "--network", "none", "busybox",
                 "sh", "-c", "echo try; exit 3")

    def settled():
        view = rhost.inspect("flaky")
        return view if view["State"]["Status"] == "exited" and view["RestartCount"] == 2 else None

    view = wait_for(settled, timeout=20, what="flaky to run three times and stay exited")
    assert view["State"]["ExitCode"] == 3
    assert view["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert rhost.netctl("logs", "flaky").stdout == "try\ntry\ntry\n"


def test_always_comes_back_until_stopped_by_hand(rhost):
    rhost.netctl("run", "-d", "--name", "svc", "--restart", "always", "--network", "net", "busybox", "sleep", "600")
    pid = rhost.inspect("svc")["State"]["Pid"]
    rhost.run("kill", "-9", str(pid))

    def restarted():
        view = rhost.inspect("svc")
        state = view["State"]
        return state["Status"] == "running" and view["RestartCount"] == 1 and state["Pid"] not in (0, pid)

    wait_for(restarted, timeout=20, what="svc to be started again")
    assert "10.88.0." in rhost.inspect("svc")["NetworkSettings"]["Networks"]["net"]["IPAddress"]
    rhost.netctl("exec", "svc", "ping", "-c", "1", "-W", "5", "10.88.0.1")  # its network came back with it
    rhost.netctl("stop", "-t", "1", "svc")
    assert rhost.inspect("svc")["State"]["Status"] == "exited"  # stopped by hand: not started again
    assert "Exited" in rhost.netctl("ps", "-a").stdout


@pytest.mark.parametrize("args, message", [
    (("--restart", "always", "--rm"), "--restart always and --rm conflict"),
    (("--restart", "sometimes"), "restart policy 'sometimes' is unknown"),
    (("--restart", "always:3"), "only on-failure takes a retry count"),
])
def test_bad_policies_are_refused_with_one_line_and_nothing_made(rhost, args, message):
    refused = rhost.netctl("run", "-d", "--name", "bad", *args, "--network", "net", "busybox", "true", check=False)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr, refused.stderr
    assert rhost.netctl("ps", "-a", "-q").stdout.strip() == ""
    assert rhost.netctl("network", "inspect", "net").stdout.count('"EndpointID"') == 0
