"""Pure logic of the overlay agent (netctl/agent.py) and the daemon's global settings (netctl/daemon.py)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field

import pytest

from libnetwork.errors import AlreadyExists, InvalidArgument, KernelError
from netctl import agent, daemon

PEERS = "/netctl/v1/peers/"
NETWORKS = "/netctl/v1/networks/"


@dataclass
class Event:
    key: str
    kind: str = "put"
    value: object = None
    revision: int = 1


# --- which networks a batch of events touches ------------------------------------------------------


def test_peer_and_network_keys_name_their_network():
    assert agent.network_of_key(PEERS + "n1/e1", PEERS) == "n1"
    assert agent.network_of_key(NETWORKS + "n2", NETWORKS) == "n2"
    assert agent.network_of_key("/netctl/v1/hosts/h1", PEERS) is None
    assert agent.network_of_key(PEERS, PEERS) is None


def test_a_batch_marks_each_network_once_and_a_full_read_marks_everything():
    events = [Event(PEERS + "n1/e1"), Event(PEERS + "n1/e2", "delete"), Event(PEERS + "n2/e3")]
    assert agent.affected_networks(PEERS, events) == {"n1", "n2"}
    assert agent.affected_networks(PEERS, []) == set()
    assert agent.affected_networks(PEERS, None) is agent.EVERYTHING


def test_everything_absorbs_in_a_merge():
    assert agent.merge({"a"}, {"b"}) == {"a", "b"}
    assert agent.merge({"a"}, agent.EVERYTHING) is agent.EVERYTHING
    assert agent.merge(agent.EVERYTHING, set()) is agent.EVERYTHING


# --- debouncing ------------------------------------------------------------------------------------


def test_take_returns_nothing_after_its_timeout_when_nothing_is_dirty():
    dirty = agent.Dirty()
    start = time.monotonic()
    assert dirty.take(0.05) == (False, set())
    assert 0.04 <= time.monotonic() - start < 1.0


def test_a_burst_is_coalesced_into_one_batch():
    dirty = agent.Dirty(debounce_s=0.05, max_delay_s=1.0)
    dirty.mark({"a"})
    dirty.mark({"b"})
    dirty.mark(set())  # an empty mark is no mark
    assert dirty.take(1.0) == (True, {"a", "b"})
    assert dirty.take(0.01) == (False, set())


def test_everything_wins_over_single_networks():
    dirty = agent.Dirty(debounce_s=0.0)
    dirty.mark({"a"})
    dirty.mark(agent.EVERYTHING)
    dirty.mark({"b"})
    assert dirty.take(1.0) == (True, agent.EVERYTHING)


def test_a_steady_stream_of_marks_cannot_delay_a_reconcile_past_max_delay():
    dirty = agent.Dirty(debounce_s=0.02, max_delay_s=0.1)
    stop = threading.Event()

    def chatter():
        for i in range(500):  # bounded: ~2.5 s at most
            if stop.is_set():
                return
            dirty.mark({f"n{i}"})
            time.sleep(0.005)

    thread = threading.Thread(target=chatter)
    start = time.monotonic()
    thread.start()
    try:
        got, batch = dirty.take(5.0)
        waited = time.monotonic() - start
    finally:
        stop.set()
        thread.join(5)
    assert got and batch
    assert waited < 0.5, f"a reconcile waited {waited:.3f} s for a quiet moment"


def test_debounce_waits_for_a_quiet_moment_with_a_fake_clock():
    now = [100.0]
    dirty = agent.Dirty(debounce_s=0.01, max_delay_s=0.05, clock=lambda: now[0])
    dirty.mark({"a"})
    now[0] += 0.02  # quiet for longer than debounce_s: settled
    assert dirty.take(1.0) == (True, {"a"})


def test_close_wakes_a_waiting_take():
    dirty = agent.Dirty()
    results = []
    thread = threading.Thread(target=lambda: results.append(dirty.take(30.0)))
    thread.start()
    time.sleep(0.02)
    dirty.close()
    thread.join(5)
    assert results == [(False, set())]


def test_backoff_grows_to_its_cap_and_resets():
    backoff = agent.Backoff(first=0.2, cap=1.0)
    assert [backoff.failed() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.succeeded()
    assert backoff.failed() == 0.2


# --- the worker's pass, with a fake controller -------------------------------------------------------


@dataclass
class Result:
    fdb_added: list = field(default_factory=list)
    fdb_removed: list = field(default_factory=list)
    neighbours_added: list = field(default_factory=list)
    neighbours_removed: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.fdb_added or self.fdb_removed or self.neighbours_added or self.neighbours_removed)


class FakeController:
    def __init__(self):
        self.calls = []

    def reconcile_overlay(self, network_id=None):
        self.calls.append(network_id)
        if network_id is None:
            return {"n1": Result(fdb_added=["m -> v"])}
        return {network_id: Result()}


def test_a_pass_reconciles_only_networks_built_on_this_host(tmp_path, caplog):
    (tmp_path / "overlay" / "n1").mkdir(parents=True)
    worker = agent.OverlayAgent(agent.AgentSettings(root=str(tmp_path), store_url="etcd://192.0.2.1:2379",
                                                    host_name="h1"))
    controller = FakeController()
    worker.reconcile(controller, {"n1", "n9"})
    assert controller.calls == ["n1"]
    with caplog.at_level("INFO", logger="netctl.agent"):
        worker.reconcile(controller, agent.EVERYTHING)
    assert controller.calls == ["n1", None]
    assert [r.getMessage() for r in caplog.records] == ["reconciled network n1: +fdb 1"]


def test_describe_counts_each_kind_of_change():
    result = Result(fdb_added=["a", "b"], neighbours_removed=["c"])
    assert agent.describe("0123456789abcdef", result) == "reconciled network 0123456789ab: +fdb 2, -neigh 1"


# --- the daemon's global settings ------------------------------------------------------------------


def test_without_a_store_the_daemon_is_local_only(tmp_path, monkeypatch):
    monkeypatch.delenv("NETCTL_STORE", raising=False)
    assert daemon.resolve_global(str(tmp_path), daemon.GlobalOptions()) is None


def test_options_win_and_are_written_atomically_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("NETCTL_STORE", raising=False)
    monkeypatch.delenv("NETCTL_HOST_NAME", raising=False)
    options = daemon.GlobalOptions(store="etcd://127.0.0.1:2379", vtep="127.0.0.1", host_name="h1")
    config = daemon.resolve_global(str(tmp_path), options)
    assert config == daemon.GlobalConfig(store="etcd://127.0.0.1:2379", host="h1", vtep="127.0.0.1")
    daemon.write_global_config(str(tmp_path), config)
    path = tmp_path / "global.json"
    assert json.loads(path.read_text()) == {"store": "etcd://127.0.0.1:2379", "host": "h1", "vtep": "127.0.0.1"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["global.json"]  # no temporary file left
    # The next start needs no options: everything comes from global.json.
    assert daemon.resolve_global(str(tmp_path), daemon.GlobalOptions()) == config


def test_environment_comes_before_the_saved_file(tmp_path, monkeypatch):
    daemon.write_global_config(str(tmp_path), daemon.GlobalConfig("etcd://127.0.0.1:2379", "old", "127.0.0.1"))
    monkeypatch.setenv("NETCTL_HOST_NAME", "new")
    monkeypatch.setenv("NETCTL_STORE", "etcd://127.0.0.2:2379")
    config = daemon.resolve_global(str(tmp_path), daemon.GlobalOptions())
    assert (config.store, config.host) == ("etcd://127.0.0.2:2379", "new")
    assert config.vtep == "127.0.0.1"  # the route's source towards 127.0.0.2 (loopback): re-derived


def test_bad_settings_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("NETCTL_STORE", raising=False)
    with pytest.raises(InvalidArgument, match="not configured on this host"):
        daemon.resolve_global(str(tmp_path), daemon.GlobalOptions(store="etcd://127.0.0.1:2379", vtep="192.0.2.77"))
    with pytest.raises(InvalidArgument, match="not an IP address"):
        daemon.resolve_global(str(tmp_path), daemon.GlobalOptions(store="etcd://127.0.0.1:2379", vtep="nope"))
    with pytest.raises(InvalidArgument, match="etcd://HOST:PORT"):
        daemon.resolve_global(str(tmp_path), daemon.GlobalOptions(store="ftp://x"))
    (tmp_path / "global.json").write_text("{broken")
    with pytest.raises(InvalidArgument, match="global.json is unreadable"):
        daemon.resolve_global(str(tmp_path), daemon.GlobalOptions())


def test_a_second_daemon_on_the_same_root_is_refused_by_the_pid_lock(tmp_path):
    fd = daemon.lock_root(str(tmp_path))
    try:
        assert (tmp_path / "daemon.pid").read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyExists, match="a netctl daemon already serves .*netctl.sock; stop it first"):
            daemon.lock_root(str(tmp_path))
    finally:
        os.close(fd)
    os.close(daemon.lock_root(str(tmp_path)))  # released with its holder


class FlakyController(FakeController):
    """Fails like an unreachable etcd `failures` times, then works."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        self.closed = False

    def reconcile_overlay(self, network_id=None):
        from libnetwork.errors import StoreError

        if self.failures:
            self.failures -= 1
            raise StoreError("etcd at http://192.0.2.1:2379 is unreachable: connection refused")
        return super().reconcile_overlay(network_id)

    def close(self):
        self.closed = True


def test_the_worker_retries_a_failed_pass_with_the_same_networks_and_says_so_once(tmp_path, caplog):
    (tmp_path / "overlay" / "n1").mkdir(parents=True)
    worker = agent.OverlayAgent(agent.AgentSettings(root=str(tmp_path), store_url="etcd://192.0.2.1:2379",
                                                    host_name="h1", debounce_s=0.0, resync_interval_s=60))
    controller = FlakyController(failures=2)
    worker._controller = lambda: controller
    worker.dirty.mark({"n1"})
    thread = threading.Thread(target=worker._work)
    with caplog.at_level("INFO", logger="netctl.agent"):
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while controller.calls != ["n1"] and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            worker._stop.set()
            worker.dirty.close()
            thread.join(10)
    assert controller.calls == ["n1"] and worker.failures == 2 and worker.reconciles == 1
    assert controller.closed  # the worker's own connections go with it
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "reconcile failed: etcd at http://192.0.2.1:2379 is unreachable: connection refused; "
        "kernel entries kept as they are, retrying",
        "reconcile works again",
    ]


def test_a_network_the_controller_could_not_reconcile_makes_the_pass_fail(tmp_path):
    (tmp_path / "overlay" / "n1").mkdir(parents=True)
    (tmp_path / "overlay" / "n2").mkdir(parents=True)
    worker = agent.OverlayAgent(agent.AgentSettings(root=str(tmp_path), store_url="etcd://192.0.2.1:2379",
                                                    host_name="h1"))

    class SkipsN2(FakeController):
        def reconcile_overlay(self, network_id=None):  # what Controller does: log and leave it out
            self.calls.append(network_id)
            return {} if network_id == "n2" else {network_id: Result()}

    with pytest.raises(KernelError, match=r"could not reconcile network\(s\) n2"):
        worker.reconcile(SkipsN2(), {"n1", "n2"})
