"""libnetwork/ipc.listen: the socket's mode is set before it appears at its path, without os.umask
(the process's, shared by the agent's other threads: a file one of them created meanwhile got 0600)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from libnetwork import ipc


@pytest.mark.parametrize("group, mode", [("", 0o600), ("0", 0o660)])
def test_listen_sets_the_mode_without_the_process_umask(tmp_path, monkeypatch, group, mode):
    def no_umask(_: int) -> int:
        raise AssertionError(f"os.umask called from thread {threading.current_thread().name}")

    monkeypatch.setattr(os, "umask", no_umask)
    path = str(tmp_path / "docker.sock")
    sock = ipc.listen(path, group=group)
    try:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == mode
        assert sorted(os.listdir(tmp_path)) == ["docker.sock"]  # the private directory is gone
        probe = ipc.try_connect(path)
        assert probe is not None
        probe.close()
    finally:
        sock.close()


def test_a_path_near_the_limit_is_bound_in_place(tmp_path):
    directory = tmp_path / ("d" * (99 - len(str(tmp_path))))
    directory.mkdir()
    path = str(directory / "s.sock")
    assert len(path) <= 107
    sock = ipc.listen(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert sorted(os.listdir(directory)) == ["s.sock"]
    finally:
        sock.close()
