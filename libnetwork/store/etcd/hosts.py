"""A host in the global store: registration under its host id, the re-publication of its peers on a
new lease, and the keep-alive thread that keeps the lease (and registers again when it was lost)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from libnetwork.errors import InvalidArgument, StoreError
from libnetwork.model import READY, Endpoint
from libnetwork.store.etcd.client import _Etcd, _key_b64, _put_op
from libnetwork.store.etcd.failures import _FailureRun
from libnetwork.store.etcd.keys import Keys, prefix_end
from libnetwork.store.etcd.records import (
    HostRecord,
    HostTaken,
    PeerRecord,
    registration_clash,
)
from libnetwork.store.etcd.transactions import run_atomic

if TYPE_CHECKING:
    from libnetwork.store.etcd.store import EtcdStore
    from libnetwork.store.etcd.transactions import EtcdTxn

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_S = 10  # a host silent for this long is dead; etcd's floor is 2 s (1.5 election timeouts)
PEER_BATCH = 100  # peers re-published per transaction when a host registers
REPUBLISH_ATTEMPTS = 5  # reads of this host's endpoints while some keep changing under the re-publication


def register(store: EtcdStore, etcd: _Etcd, vtep: str, ttl: int) -> HostRecord:
    """EtcdStore.register_host over the HTTP session `etcd` (the keep-alive thread has its own)."""
    name = store.require_host_name()
    try:
        ipaddress.ip_address(vtep)
    except ValueError:
        raise InvalidArgument(f"VTEP address {vtep!r} of host '{name}' is not an IP address") from None
    lease, _ = etcd.grant(ttl)
    record = HostRecord(name, vtep, lease, time.time(), store.host_id)

    def take(tx: EtcdTxn) -> HostRecord | None:
        # Both reads are fences of the commit: the name's key by its mod revision (or absence),
        # every other record by the range's. Two daemons racing for one name (or VTEP) cannot
        # both pass the check: the loser's commit fails, and its retry sees the winner's record.
        old = tx.get_host(name)
        clash = registration_clash(name, vtep, store.host_id, tx.list_hosts())
        if clash is not None:
            raise clash
        tx._put(Keys.host(name), asdict(record), lease=lease)
        return old

    try:
        old = run_atomic(store, etcd, take)
        republish_peers(etcd, record)
    except BaseException:
        with contextlib.suppress(StoreError):
            etcd.revoke(lease)
        raise
    if old is not None and old.lease != lease:
        etcd.revoke(old.lease)
    return record


def republish_peers(etcd: _Etcd, record: HostRecord) -> None:
    """The peer records of this host's ready endpoints, on the new lease. Each batch commits only if
    none of its endpoint records changed since they were read: an endpoint removed (or changed)
    meanwhile by a `netctl rm` or a CNI DEL on this host must not get its peer back. A batch that
    lost such a race is read again, a bounded number of times."""
    done: set[str] = set()
    for _ in range(REPUBLISH_ATTEMPTS):
        kvs, _ = etcd.range(Keys.ENDPOINTS, end=prefix_end(Keys.ENDPOINTS), what="this host's endpoints")
        todo = [(kv, Endpoint.from_dict(kv.value["endpoint"])) for kv in kvs if kv.value["host"] == record.name]
        todo = [(kv, e) for kv, e in todo if e.state == READY and e.id not in done]
        if not todo:
            return
        for i in range(0, len(todo), PEER_BATCH):
            batch = todo[i : i + PEER_BATCH]
            compares = [{"key": _key_b64(kv.key), "target": "MOD", "result": "EQUAL", "mod_revision": kv.mod_revision}
                        for kv, _ in batch]  # fmt: skip
            ops = [_put_op(Keys.peer(e.network_id, e.id), asdict(PeerRecord.of(e, record)), record.lease)
                   for _, e in batch]  # fmt: skip
            succeeded, _ = etcd.txn(compares, ops, "re-publishing peers")
            if succeeded:
                done.update(e.id for _, e in batch)
    log.warning("peers of host %s: endpoint records kept changing while they were re-published; the next "
                "connect or registration publishes the rest", record.name)



class LeaseKeeper:
    """The thread behind EtcdStore.start_keepalive (its own HTTP session: sessions are per thread)."""

    def __init__(self, store: EtcdStore, vtep: str, ttl: int, on_registered: Callable[[HostRecord], None] | None,
                 on_refused: Callable[[HostTaken], None] | None = None):
        self.store = store
        self.vtep = vtep
        self.ttl = ttl
        self.on_registered = on_registered
        self.on_refused = on_refused
        self.record: HostRecord | None = None
        self.refused: HostTaken | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"netctl-lease-{store.host_name}", daemon=True)
        self._etcd = _Etcd(store.url, min(store.timeout, max(1.0, ttl / 3)))

    def start(self) -> None:
        self.record = register(self.store, self._etcd, self.vtep, self.ttl)
        if self.on_registered is not None:
            self.on_registered(self.record)
        self._thread.start()

    def _run(self) -> None:
        interval = max(0.5, self.ttl / 3)
        failures = _FailureRun(f"keep-alive of host {self.store.host_name}")
        while not self._stop.wait(interval):
            try:
                alive = self.record is not None and self._etcd.keepalive(self.record.lease) > 0
                if not alive:
                    log.warning("lease of host %s expired; registering again", self.store.host_name)
                    self.record = register(self.store, self._etcd, self.vtep, self.ttl)
                    if self.on_registered is not None:
                        self.on_registered(self.record)
            except HostTaken as err:  # another host took the name or VTEP while the lease was lost
                self._refuse(err)
                return
            except StoreError as err:
                failures.failed(err, f"retrying every {interval:g} s")
                continue
            failures.succeeded()

    def _refuse(self, err: HostTaken) -> None:
        self.refused, self.record = err, None
        if self.on_refused is not None:
            self.on_refused(err)
        else:
            log.error("%s", err.message)

    def stop(self) -> None:
        self._stop.set()
        # on_registered/on_refused run in this thread: a callback that stops the store must not join it
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._etcd.timeout + 1)
        self._etcd.close()

