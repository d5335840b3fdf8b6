"""The log of a run of failures of a recurring etcd call (libnetwork/store/etcd.py _FailureRun): an
outage is a few lines, whatever its length."""

from __future__ import annotations

import logging

from libnetwork.store.etcd import _FailureRun


def test_an_outage_is_logged_at_its_1st_10th_100th_failure_and_once_at_its_end(caplog):
    caplog.set_level(logging.DEBUG, logger="libnetwork.store.etcd")
    run = _FailureRun("keep-alive of host h1")
    run.succeeded()  # no outage: nothing to say
    for _ in range(120):
        run.failed(RuntimeError("etcd is unreachable"), "retrying every 3.3 s")
    run.succeeded()
    run.succeeded()  # said once only
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "keep-alive of host h1: etcd is unreachable; retrying every 3.3 s (failure 1 in a row)",
        "keep-alive of host h1: etcd is unreachable; retrying every 3.3 s (failure 10 in a row)",
        "keep-alive of host h1: etcd is unreachable; retrying every 3.3 s (failure 100 in a row)",
        "keep-alive of host h1 works again after 120 failure(s) over 0 s",
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 117


def test_a_new_outage_counts_from_one_again(caplog):
    caplog.set_level(logging.WARNING, logger="libnetwork.store.etcd")
    run = _FailureRun("watch on /netctl/v1/")
    for _ in range(3):
        run.failed(RuntimeError("no answer"), "retrying in 0.1 s")
    run.succeeded()
    run.failed(RuntimeError("no answer"), "retrying in 0.1 s")
    assert [r.getMessage() for r in caplog.records][-1].endswith("(failure 1 in a row)")
