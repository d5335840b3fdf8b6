"""`netctl daemon --store`: registration, ROOT/global.json, one daemon per root, clean stop and restart.

Real etcd inside the lab's switch (198.18.0.254:2379), daemons inside throwaway hosts."""

from __future__ import annotations

import json
import signal

import pytest

from overlay.agent_helpers import start_daemon, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

HOSTS = "/netctl/v1/hosts/"


def host_record(lab, name: str) -> dict | None:
    value = lab.etcd_dump().get(HOSTS + name)
    return json.loads(value) if value else None


def test_daemon_registers_writes_global_json_and_refuses_a_second_daemon(overlay_lab, tmp_path):
    lab = overlay_lab(1, register=False)
    (h1,) = lab.hosts
    daemon = start_daemon(lab, h1, str(tmp_path))
    record = host_record(lab, "h1")
    assert record is not None and record["vtep"] == lab.vteps["h1"] and record["lease"]

    with open(h1.path(f"{h1.root}/global.json")) as f:
        assert json.load(f) == {"store": lab.etcd_url, "host": "h1", "vtep": lab.vteps["h1"]}
    assert oct(__import__("os").stat(h1.path(f"{h1.root}/global.json")).st_mode & 0o777) == "0o600"

    second = h1.netctl("daemon", check=False, timeout=30)
    assert second.returncode != 0
    assert second.stderr.strip() == "netctl: a netctl daemon already serves /run/netctl/netctl.sock; stop it first"

    # A clean stop revokes nothing: the record stays until its lease runs out (or a restart takes it over).
    assert daemon.stop() == 0
    assert host_record(lab, "h1") == record

    # The restart needs no options: store, name and VTEP come from ROOT/global.json. It takes the
    # record over on a new lease.
    again = start_daemon_plain(lab, h1, tmp_path)
    renewed = wait_for(lambda: (r := host_record(lab, "h1")) and r["lease"] != record["lease"] and r, 10,
                       "the restarted daemon's new lease")
    assert renewed["vtep"] == lab.vteps["h1"]
    assert again.stop() == 0


def start_daemon_plain(lab, host, tmp_path):
    """`netctl daemon` with no option at all (everything from ROOT/global.json)."""
    import os
    import subprocess
    import sys
    import time

    from e2e.conftest import command_pid
    from overlay.agent_helpers import Daemon

    log_path = os.path.join(str(tmp_path), f"daemon-{host.name}-plain.log")
    with open(log_path, "w") as log:
        proc = host.popen(sys.executable, "-m", "netctl", "daemon", stdout=subprocess.DEVNULL, stderr=log)
    daemon = Daemon(host, proc, command_pid(proc), log_path)
    wait_for(lambda: daemon.lines("registered in") or not daemon.alive, 30, "the plain daemon to register")
    assert daemon.alive, daemon.log()
    return daemon


def test_daemon_started_before_etcd_registers_when_etcd_comes(overlay_lab, tmp_path):
    lab = overlay_lab(1, register=False)
    (h1,) = lab.hosts
    lab.etcd.stop()
    daemon = start_daemon(lab, h1, str(tmp_path), wait_registered=False)
    wait_for(lambda: daemon.lines("cannot register host h1 yet"), 10, "the daemon to say etcd is away")
    # It waited a few seconds for the registration, then serves anyway (local commands need no etcd).
    assert daemon.lines("serving requests before host h1 is registered")
    assert len(daemon.lines("cannot register host h1 yet")) == 1  # one line per cause, not per retry
    # The request server works meanwhile (local commands need no etcd).
    assert h1.netctl("sandbox", "ls").returncode == 0
    lab.etcd.start()
    wait_for(lambda: daemon.lines("registered in"), 15, "registration once etcd is back")
    assert host_record(lab, "h1") is not None
    assert daemon.stop(signal.SIGTERM) == 0
