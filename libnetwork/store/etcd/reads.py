"""Reads of a global-store transaction, all at one etcd revision and remembered for its commit's
compares (see transactions.py for the model)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from libnetwork.errors import InvalidArgument
from libnetwork.model import Endpoint, Network
from libnetwork.store.etcd import allocators
from libnetwork.store.etcd.client import _KV, _Etcd
from libnetwork.store.etcd.keys import Keys, _component, prefix_end
from libnetwork.store.etcd.records import HostRecord, PeerRecord

if TYPE_CHECKING:
    from libnetwork import ipam
    from libnetwork.store.etcd.store import EtcdStore

_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class _Write:
    value: Any  # None: delete
    lease: int = 0
    create: bool = False  # commit only if the key is still absent


class EtcdReadTxn:
    """Reads at one etcd revision (the first read fixes it), remembered for the commit's compares."""

    def __init__(self, store: EtcdStore, etcd: _Etcd):
        self.store = store
        self._etcd = etcd
        self.revision = 0  # snapshot revision; 0 until the first read
        self._seen: dict[str, int] = {}  # key -> mod_revision read (0: absent)
        self._ranges: dict[str, str] = {}  # start -> end of every fenced listing
        self._writes: dict[str, _Write] = {}
        self._deleted_ranges: list[tuple[str, str]] = []
        # Keys already read: every read is at the one snapshot revision, so a second read of a key
        # would return the same; answering it from here saves a round trip (put_endpoint re-reads
        # the network and the host a connect has just read).
        self._read_cache: dict[str, _KV | None] = {}
        # Which try of `atomic` this is. Allocators pick the natural candidate on the first try; on a
        # retry (someone took it concurrently) they jump a random few further, so that N racing
        # writers spread out instead of colliding on the same next one again.
        self.attempt = 1

    def _spread(self) -> int:
        return random.randrange(self.attempt) if self.attempt > 1 else 0

    # -- primitives -------------------------------------------------------------------------------

    def _range(self, key: str, end: str = "", keys_only: bool = False, limit: int = 0) -> list[_KV]:
        kvs, header = self._etcd.range(key, end=end, revision=self.revision, keys_only=keys_only, limit=limit)
        if not self.revision:
            self.revision = header
        return kvs

    def _in_deleted_range(self, key: str) -> bool:
        return any(start <= key < end for start, end in self._deleted_ranges)

    def _get(self, key: str, *, fence: bool = True) -> _KV | None:
        """One key as this transaction sees it (its own writes included)."""
        if key in self._writes:
            w = self._writes[key]
            return None if w.value is None else _KV(key, w.value, 0)
        if self._in_deleted_range(key):
            return None
        if key in self._read_cache:
            found = self._read_cache[key]
        else:
            kvs = self._range(key)
            found = kvs[0] if kvs else None
            self._read_cache[key] = found
        if fence and key not in self._seen:
            self._seen[key] = found.mod_revision if found else 0
        return found

    def _list(self, prefix: str, *, fence: bool = True, keys_only: bool = False) -> list[_KV]:
        """Every key under prefix, sorted, as this transaction sees it."""
        end = prefix_end(prefix)
        found = {kv.key: kv for kv in self._range(prefix, end, keys_only=keys_only)}
        if fence:
            self._ranges[prefix] = end
        for key in [k for k in found if self._in_deleted_range(k)]:
            del found[key]
        for key, w in self._writes.items():
            if prefix <= key < end:
                if w.value is None:
                    found.pop(key, None)
                else:
                    found[key] = _KV(key, None if keys_only else w.value, 0)
        return [found[k] for k in sorted(found)]

    # -- networks ---------------------------------------------------------------------------------

    def get_network(self, ref: str) -> Network | None:
        """By full id, then by name, then by unique id prefix (>= 3 characters), as the SQLite store."""
        if not ref or "/" in ref:
            return None
        # Only a full id (64 hex digits, libnetwork.records.new_id) can be a network key: a name costs no
        # read of a key that cannot exist.
        kv = self._get(Keys.network(ref)) if _FULL_ID.match(ref) else None
        if kv is None:
            name = self._get(Keys.network_name(ref))
            if name is not None:
                kv = self._get(Keys.network(name.value["network_id"]))
        if kv is None and len(ref) >= 3:
            kv = self._network_by_prefix(ref)
        return Network.from_dict(kv.value) if kv is not None else None

    def _network_by_prefix(self, ref: str) -> _KV | None:
        matches = self._list(Keys.NETWORKS + ref)
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(f"'{kv.value['name']}' ({kv.value['id'][:12]})" for kv in matches[:5])
            more = " and more" if len(matches) > 5 else ""
            raise InvalidArgument(
                f"network reference '{ref}' is ambiguous: it matches {names}{more}; "
                "use the name or more characters of the id"
            )
        return None

    def list_networks(self) -> list[Network]:
        networks = [Network.from_dict(kv.value) for kv in self._list(Keys.NETWORKS)]
        return sorted(networks, key=lambda n: (n.created, n.id))

    def network_named(self, name: str) -> Network | None:
        """By exact name only (never an id or id prefix): what a name-uniqueness check needs."""
        if not name or "/" in name:
            return None
        holder = self._get(Keys.network_name(name))
        if holder is None:
            return None
        kv = self._get(Keys.network(holder.value["network_id"]))
        return Network.from_dict(kv.value) if kv is not None else None

    # -- endpoints --------------------------------------------------------------------------------

    def _endpoint_kv(self, endpoint_id: str, network_id: str | None) -> _KV | None:
        if network_id is not None:
            return self._get(Keys.endpoint(network_id, endpoint_id))
        # Without the network: find the key by its id. Unfenced (ids are random: nobody creates this
        # one concurrently), so endpoints coming and going elsewhere do not make us retry; the record
        # itself is then read, and fenced, like any key.
        suffix = "/" + _component(endpoint_id, "endpoint id")
        for kv in self._list(Keys.ENDPOINTS, fence=False, keys_only=True):
            if kv.key.endswith(suffix):
                return self._get(kv.key)
        return None

    def get_endpoint(self, id: str, network_id: str | None = None) -> Endpoint | None:
        """By id; knowing the network makes it one read instead of a scan."""
        kv = self._endpoint_kv(id, network_id)
        return Endpoint.from_dict(kv.value["endpoint"]) if kv is not None else None

    def endpoint_host(self, id: str, network_id: str | None = None) -> str:
        """Name of the host an endpoint lives on ("" if there is no such endpoint)."""
        kv = self._endpoint_kv(id, network_id)
        return kv.value["host"] if kv is not None else ""

    def list_placed_endpoints(self, *, network_id: str | None = None,
                              host: str | None = None) -> list[tuple[str, Endpoint]]:
        """(host name, endpoint) pairs: where each endpoint lives, for views and for a host's own checks."""
        prefix = Keys.endpoints_of(network_id) if network_id is not None else Keys.ENDPOINTS
        found = []
        for kv in self._list(prefix):
            if host is not None and kv.value["host"] != host:
                continue
            found.append((kv.value["host"], Endpoint.from_dict(kv.value["endpoint"])))
        return sorted(found, key=lambda pair: (pair[1].created, pair[1].id))

    def find_endpoint(self, network_id: str, sandbox_id: str) -> Endpoint | None:
        return next(iter(self.list_endpoints(network_id=network_id, sandbox_id=sandbox_id)), None)

    def list_endpoints(self, *, network_id: str | None = None, sandbox_id: str | None = None,
                       host: str | None = None) -> list[Endpoint]:
        prefix = Keys.endpoints_of(network_id) if network_id is not None else Keys.ENDPOINTS
        found = []
        for kv in self._list(prefix):
            endpoint = Endpoint.from_dict(kv.value["endpoint"])
            if sandbox_id is not None and endpoint.sandbox_id != sandbox_id:
                continue
            if host is not None and kv.value["host"] != host:
                continue
            found.append(endpoint)
        return sorted(found, key=lambda e: (e.created, e.id))

    # -- hosts and peers --------------------------------------------------------------------------

    def get_host(self, name: str) -> HostRecord | None:
        kv = self._get(Keys.host(name))
        return HostRecord.from_dict(kv.value) if kv is not None else None

    def list_hosts(self) -> list[HostRecord]:
        return [HostRecord.from_dict(kv.value) for kv in self._list(Keys.HOSTS)]

    def list_peers(self, network_id: str | None = None) -> list[PeerRecord]:
        prefix = Keys.peers_of(network_id) if network_id is not None else Keys.PEERS
        return [PeerRecord.from_dict(kv.value) for kv in self._list(prefix)]

    # -- IPAM and VNIs (reads; allocators.py answers them) ---------------------------------------

    def vni_owner(self, vni: int) -> str:
        """The id of the network holding VNI `vni` ("" if it is free)."""
        return allocators.vni_owner(self, vni)

    def allocations(self, network_id: str | None = None) -> list[tuple[str, str, str]]:
        """(network_id, "ip/prefixlen", owner) for every address held, gateways and aux included."""
        return allocators.allocations(self, network_id)

    def pool_usage(self, network: Network) -> list[ipam.PoolUsage]:
        """How full each subnet of a global network is (CNI STATUS), like ipam.pool_usage."""
        return allocators.pool_usage(self, network)

    def addresses_of(self, owner: str, network_id: str | None = None) -> list[str]:
        return [address for _, address, held_by in self.allocations(network_id) if held_by == owner]
