"""Writes of a global-store transaction and its commit: one compare-and-swap.

Transactions are optimistic, like etcd's own STM (clientv3/concurrency, serializable-snapshot
isolation): every read of a transaction happens at one revision R; writes are buffered; commit is one
etcd Txn that succeeds only if nothing the transaction read has changed since R, and only if every
key it creates is still absent:

- a key read            -> Compare(MOD(key) == mod_revision seen, 0 when it was absent)
- a prefix listed       -> Compare(MOD(prefix range) < R + 1), with range_end: fails when any key in
                           the range was created or changed after R. (A key *deleted* from the range
                           is not caught; a delete only ever frees a name, VNI, subnet or address, so
                           no invariant here depends on it.)
- a key created         -> Compare(VERSION(key) == 0)

A failed compare raises StoreConflict; `store.atomic(fn)` re-runs `fn` on a fresh snapshot until it
commits (bounded), which is Docker's obtainVxlanID loop (get, allocate, CAS, retry) for every write
that can race. Nothing here takes a lock, so a crashed process never leaves one behind.

Kernel work must not happen inside a transaction body: `atomic` may run the body more than once.
Allocate in the store first, then program the kernel, then record the result (see the report of
issue #5 for the order the controller follows).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

from libnetwork.errors import AlreadyExists, InvalidArgument, StoreError
from libnetwork.model import READY, Endpoint, Network, PoolConfig
from libnetwork.store.etcd import allocators
from libnetwork.store.etcd.client import (
    MAX_TXN_OPS,
    StoreConflict,
    _delete_op,
    _Etcd,
    _key_b64,
    _put_op,
)
from libnetwork.store.etcd.keys import Keys, prefix_end
from libnetwork.store.etcd.reads import EtcdReadTxn, _Write
from libnetwork.store.etcd.records import PeerRecord

if TYPE_CHECKING:
    from libnetwork.store.etcd.store import EtcdStore

COMMIT_ATTEMPTS = 40  # atomic(): each failed attempt means another writer committed, so this is progress
MAX_BACKOFF_S = 0.05

T = TypeVar("T")


class EtcdTxn(EtcdReadTxn):
    """Reads plus buffered writes; `commit()` applies them all or none."""

    # -- primitives -------------------------------------------------------------------------------

    def _put(self, key: str, value: Any, *, lease: int = 0) -> None:
        if self._in_deleted_range(key):
            raise RuntimeError(f"netctl bug: {key} is written after its range was deleted in the same transaction")
        create = self._writes[key].create if key in self._writes else False
        self._writes[key] = _Write(value, lease, create)

    def _create(self, key: str, value: Any, *, lease: int = 0) -> None:
        """Write a key that must not exist at commit time (the CAS that makes allocations safe)."""
        self._put(key, value, lease=lease)
        self._writes[key].create = True

    def _delete(self, key: str) -> None:
        self._writes[key] = _Write(None)

    def _delete_prefix(self, prefix: str) -> None:
        end = prefix_end(prefix)
        if any(prefix <= k < end and w.value is not None for k, w in self._writes.items()):
            raise RuntimeError(f"netctl bug: {prefix} is deleted after keys under it were written")
        for key in [k for k in self._writes if prefix <= k < end]:
            del self._writes[key]
        self._deleted_ranges.append((prefix, end))

    def commit(self) -> int:
        """Apply the writes if nothing read has changed; returns the new revision (or the snapshot's)."""
        if not self._writes and not self._deleted_ranges:
            return self.revision
        compares = [
            {"key": _key_b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": mod}
            for k, mod in self._seen.items()
        ]
        if self.revision:
            compares += [
                {"key": _key_b64(start), "range_end": _key_b64(end), "target": "MOD", "result": "LESS",
                 "mod_revision": self.revision + 1}
                for start, end in self._ranges.items()
            ]
        compares += [
            {"key": _key_b64(k), "target": "VERSION", "result": "EQUAL", "version": 0}
            for k, w in self._writes.items()
            if w.create and self._seen.get(k) != 0  # a key read as absent is already fenced
        ]
        ops = [_delete_op(start, end) for start, end in self._deleted_ranges]
        ops += [_put_op(k, w.value, w.lease) if w.value is not None else _delete_op(k) for k, w in self._writes.items()]
        if len(compares) > MAX_TXN_OPS or len(ops) > MAX_TXN_OPS:
            raise StoreError(
                f"a transaction on etcd at {self._etcd.url} grew to {len(compares)} compares and {len(ops)} "
                f"operations (etcd allows {MAX_TXN_OPS}); report this as a netctl bug"
            )
        succeeded, revision = self._etcd.txn(compares, ops, "a transaction")
        if not succeeded:
            raise StoreConflict(
                f"etcd at {self._etcd.url}: another writer changed what this operation read; retry it"
            )
        self._writes.clear()
        self._deleted_ranges.clear()
        return revision

    # -- networks ---------------------------------------------------------------------------------

    def put_network(self, n: Network) -> None:
        if n.scope != "global":
            raise InvalidArgument(
                f"network '{n.name}' has scope {n.scope!r}; only global networks belong in etcd, "
                "local ones stay in the host's own store"
            )
        holder = self._get(Keys.network_name(n.name))
        if holder is not None and holder.value["network_id"] != n.id:
            raise AlreadyExists(
                f"network name '{n.name}' is already used by network {holder.value['network_id'][:12]}; "
                "choose another name"
            )
        old = self._get(Keys.network(n.id))
        if old is not None and old.value["name"] != n.name:
            self._delete(Keys.network_name(old.value["name"]))
        self._put(Keys.network(n.id), n.to_dict())
        self._put(Keys.network_name(n.name), {"network_id": n.id})

    def delete_network(self, id: str) -> None:
        """The network record, its name, its VNI and its IPAM state. Idempotent. Endpoints are the
        caller's to remove first (as with the SQLite store)."""
        kv = self._get(Keys.network(id))
        if kv is None:
            return
        network = Network.from_dict(kv.value)
        name = self._get(Keys.network_name(network.name))
        if name is not None and name.value["network_id"] == id:
            self._delete(Keys.network_name(network.name))
        vni = network.driver_state.get("vni", "")
        if vni.isdigit():
            self.release_vni(int(vni), id)
        self.release_pools(id)
        self._delete_prefix(Keys.peers_of(id))
        self._delete(Keys.network(id))

    # -- endpoints --------------------------------------------------------------------------------

    def put_endpoint(self, e: Endpoint) -> None:
        """Write an endpoint; a READY one also gets its peer record, on its host's lease, when the host
        is registered (otherwise its daemon publishes the peer when it registers)."""
        network = self._get(Keys.network(e.network_id))
        if network is None:
            raise InvalidArgument(f"endpoint '{e.name}' refers to network {e.network_id[:12]}, which is not in etcd")
        name_key = Keys.endpoint_name(e.network_id, e.name)
        holder = self._get(name_key)
        if holder is not None and holder.value["endpoint_id"] != e.id:
            raise AlreadyExists(
                f"endpoint name '{e.name}' is already used by endpoint {holder.value['endpoint_id'][:12]} in "
                f"network '{network.value['name']}'; choose another name"
            )
        key = Keys.endpoint(e.network_id, e.id)
        old = self._get(key)
        if old is not None and old.value["endpoint"]["name"] != e.name:
            self._delete(Keys.endpoint_name(e.network_id, old.value["endpoint"]["name"]))
        host = old.value["host"] if old is not None else self.store.require_host_name()
        self._put(key, {"host": host, "endpoint": e.to_dict()})
        self._put(name_key, {"endpoint_id": e.id})
        record = self.get_host(host)
        if e.state == READY and record is not None:
            self._put(Keys.peer(e.network_id, e.id), asdict(PeerRecord.of(e, record)), lease=record.lease)
        else:
            self._delete(Keys.peer(e.network_id, e.id))

    def delete_endpoint(self, id: str, network_id: str | None = None) -> None:
        """The endpoint, its name and its peer record. Idempotent."""
        kv = self._endpoint_kv(id, network_id)
        if kv is None:
            return
        endpoint = Endpoint.from_dict(kv.value["endpoint"])
        name = self._get(Keys.endpoint_name(endpoint.network_id, endpoint.name))
        if name is not None and name.value["endpoint_id"] == id:
            self._delete(Keys.endpoint_name(endpoint.network_id, endpoint.name))
        self._delete(Keys.peer(endpoint.network_id, id))
        self._delete(kv.key)

    def delete_peer(self, network_id: str, endpoint_id: str) -> None:
        """A peer record whose endpoint is gone (what `netctl gc` removes). Idempotent."""
        self._delete(Keys.peer(network_id, endpoint_id))

    # -- VNIs and the global IPAM (allocators.py) -------------------------------------------------

    def allocate_vni(self, network: Network, requested: int = 0) -> int:
        """A VXLAN network identifier for `network`: `requested` if free, else the lowest free one."""
        return allocators.allocate_vni(self, network, requested)

    def release_vni(self, vni: int, network_id: str) -> None:
        allocators.release_vni(self, vni, network_id)

    def allocate_pool(self, network: Network, requested: PoolConfig | None, version: int,
                      host_routes: list[tuple[str, str]]) -> PoolConfig:
        """One subnet of family `version` for `network`, overlapping no other global network nor a route
        of this host; reserves its gateway and aux addresses. Same rules and messages as ipam.allocate_pool."""
        return allocators.allocate_pool(self, network, requested, version, host_routes)

    def release_pools(self, network_id: str) -> None:
        """Free every subnet and address of a network. Idempotent."""
        allocators.release_pools(self, network_id)

    def allocate_address(self, network: Network, version: int, owner: str, address: str = "") -> str:
        """Give `owner` (an endpoint id) one address of `network`: "ip/prefixlen", unique across hosts."""
        return allocators.allocate_address(self, network, version, owner, address)

    def release_addresses(self, owner: str, network_id: str | None = None) -> list[str]:
        """Free every address `owner` holds (in `network_id`, or anywhere). Idempotent."""
        return allocators.release_addresses(self, owner, network_id)


def run_atomic(store: EtcdStore, etcd: _Etcd, body: Callable[[EtcdTxn], T], attempts: int = COMMIT_ATTEMPTS) -> T:
    """EtcdStore.atomic over the HTTP session `etcd`: run `body(tx)` and commit, again on a fresh
    snapshot whenever another writer got in first (counted in store.conflicts)."""
    for attempt in range(1, attempts + 1):
        tx = EtcdTxn(store, etcd)
        tx.attempt = attempt
        try:
            result = body(tx)
            tx.commit()
            return result
        except StoreConflict:
            store.conflicts += 1
            if attempt == attempts:
                raise StoreError(
                    f"etcd at {store.url}: gave up after {attempts} attempts, other writers kept changing the "
                    "same keys; retry"
                ) from None
            # Jittered, growing backoff: the writers that collided do not collide again in step.
            time.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.002 * 2**attempt)))
    raise AssertionError("unreachable")
