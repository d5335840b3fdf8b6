"""EtcdStore: the global store a host opens (schema check, transactions, registration, watches)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Self, TypeVar

from libnetwork.errors import StoreError
from libnetwork.store.etcd.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    _Etcd,
    _key_b64,
    _put_op,
    parse_url,
)
from libnetwork.store.etcd.hosts import DEFAULT_LEASE_TTL_S, LeaseKeeper, register
from libnetwork.store.etcd.keys import (
    PREFIX,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    _component,
    prefix_end,
)
from libnetwork.store.etcd.reads import EtcdReadTxn
from libnetwork.store.etcd.records import HostRecord, HostTaken
from libnetwork.store.etcd.transactions import COMMIT_ATTEMPTS, EtcdTxn, run_atomic
from libnetwork.store.etcd.watch import WATCH_IDLE_S, PrefixMirror, Watch

T = TypeVar("T")


class EtcdStore:
    """The global store. `host` names this machine in the overlay (needed to write endpoints and to
    register); `host_id` is its state root's persistent id (rootdir.host_id), which registration
    compares with the holder of the name; one store object per thread (each holds one HTTP session)."""

    def __init__(self, url: str = DEFAULT_URL, *, host: str = "", host_id: str = "",
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.url, _, _ = parse_url(url)
        self.host_name = _component(host, "host name") if host else ""
        self.host_id = host_id
        self.timeout = timeout
        self.conflicts = 0  # commits refused because another writer got in first (atomic retried them)
        self._etcd = _Etcd(self.url, timeout)
        self._keeper: LeaseKeeper | None = None
        try:
            self._ensure_schema()
        except BaseException:
            self._etcd.close()
            raise

    # -- schema -----------------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        kvs, _ = self._etcd.range(SCHEMA_KEY, what="the schema version")
        if not kvs:
            ok, _ = self._etcd.txn(
                [{"key": _key_b64(SCHEMA_KEY), "target": "VERSION", "result": "EQUAL", "version": 0}],
                [_put_op(SCHEMA_KEY, {"version": SCHEMA_VERSION, "prefix": PREFIX})],
                "writing the schema version",
            )
            if ok:
                return
            kvs, _ = self._etcd.range(SCHEMA_KEY, what="the schema version")  # someone else wrote it first
        version = int(kvs[0].value.get("version", 0)) if kvs and isinstance(kvs[0].value, dict) else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"etcd at {self.url} holds netctl schema version {version}, newer than this netctl understands "
                f"({SCHEMA_VERSION}); upgrade netctl on this host"
            )
        if version < 1:
            raise StoreError(
                f"etcd at {self.url} has an unreadable {SCHEMA_KEY}; remove it with etcdctl if nothing uses it"
            )

    # -- transactions -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[EtcdTxn]:
        """One optimistic attempt: commits on normal exit; StoreConflict if a concurrent writer got in
        first (nothing is written then). Prefer `atomic`, which retries."""
        tx = EtcdTxn(self, self._etcd)
        yield tx
        tx.commit()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[EtcdReadTxn]:
        """Consistent reads: every read of the block sees the same revision."""
        yield EtcdReadTxn(self, self._etcd)

    def atomic(self, body: Callable[[EtcdTxn], T], *, attempts: int = COMMIT_ATTEMPTS) -> T:
        """Run `body(tx)` and commit, again on a fresh snapshot whenever another writer got in first.
        `body` must have no effect outside the transaction: it may run several times."""
        return run_atomic(self, self._etcd, body, attempts)

    # -- hosts and leases -------------------------------------------------------------------------

    def require_host_name(self) -> str:
        if not self.host_name:
            raise StoreError("this netctl has no host name for the global store; pass one (the daemon's --host-name)")
        return self.host_name

    def register_host(self, vtep: str, *, ttl: int = DEFAULT_LEASE_TTL_S) -> HostRecord:
        """Take (or take over) this host's record on a fresh lease, re-publish the peer records of its
        ready endpoints on that lease, then revoke the lease a previous run held. Peers are never
        missing in between, so other hosts see no flap when a daemon restarts.

        HostTaken if another host (another host id) holds the name or the VTEP address on a live
        lease (see registration_clash): two cloned machines share a hostname, and the second must
        not silently take the first one's record. Only this host's own record (same id: a restart,
        or the lease was lost) or one of an older netctl (no id) is taken over."""
        return register(self, self._etcd, vtep, ttl)

    def unregister_host(self) -> None:
        """Revoke this host's lease: its record and peers disappear everywhere at once. Idempotent;
        a record of the same name held by another host (another host id) is left alone."""
        self.stop_keepalive()
        with self.snapshot() as tx:
            record = tx.get_host(self.require_host_name())
        if record is not None and not record.held_by_another(self.host_id):
            self._etcd.revoke(record.lease)

    def keepalive(self) -> bool:
        """Refresh this host's lease once; False if it has expired (call register_host again)."""
        with self.snapshot() as tx:
            record = tx.get_host(self.require_host_name())
        if record is None or record.held_by_another(self.host_id):
            return False
        return self._etcd.keepalive(record.lease) > 0

    def start_keepalive(self, vtep: str, *, ttl: int = DEFAULT_LEASE_TTL_S,
                        on_registered: Callable[[HostRecord], None] | None = None,
                        on_refused: Callable[[HostTaken], None] | None = None) -> None:
        """Register (HostTaken raised here, as by register_host), then a background thread refreshes
        the lease every ttl/3 s; if the lease was lost (etcd unreachable for longer than the TTL), it
        registers again, which re-publishes the peers. If meanwhile another host took the name or the
        VTEP, that registration is refused like the first: the thread calls `on_refused` (or logs the
        refusal at ERROR) and stops for good: it never takes the name back."""
        if self._keeper is not None:
            return
        keeper = LeaseKeeper(self, vtep, ttl, on_registered, on_refused)
        try:
            keeper.start()
        except BaseException:
            keeper.stop()
            raise
        self._keeper = keeper

    def stop_keepalive(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()

    # -- watches and maintenance ------------------------------------------------------------------

    def read_prefix(self, prefix: str) -> tuple[dict[str, Any], int]:
        """Every key under prefix with its value, and the revision they were read at."""
        kvs, revision = self._etcd.range(prefix, end=prefix_end(prefix), what=f"a read of {prefix}")
        return {kv.key: kv.value for kv in kvs}, revision

    def watch(self, prefix: str, start_revision: int, *, idle_timeout: float = WATCH_IDLE_S) -> Watch:
        return Watch(self.url, prefix, start_revision, idle_timeout=idle_timeout, timeout=self.timeout)

    def mirror(self, prefix: str, **kw: Any) -> PrefixMirror:
        return PrefixMirror(self.url, prefix, timeout=self.timeout, **kw)

    def compact(self, revision: int) -> None:
        self._etcd.compact(revision)

    def current_revision(self) -> int:
        _, revision = self._etcd.range(SCHEMA_KEY, what="the current revision")
        return revision

    # -- life cycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the keep-alive thread (the lease then expires after its TTL, as after a crash;
        unregister_host() removes it at once) and close the HTTP session."""
        self.stop_keepalive()
        self._etcd.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

