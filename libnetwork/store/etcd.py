"""The global state store: etcd v3 through its JSON gateway (etcd3gw), shared by every host.

What lives here (the key schema is in ETCD_SCHEMA.md beside this file): global-scope networks and
their endpoints, the global IPAM (subnets and addresses, so no two hosts ever hand out the same
address), VXLAN network identifiers, one record per host (kept alive by a lease) and the overlay's
peer records (endpoint -> MAC, addresses, VTEP), which ride on their host's lease so that a dead
host's entries vanish from every other host by themselves.

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

etcd3gw is imported lazily: it pulls in requests, which a CLI call on a local network must not pay for.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from libnetwork import ipam
from libnetwork.errors import AlreadyExists, InvalidArgument, PoolExhausted, StoreError
from libnetwork.model import READY, Endpoint, Network, PoolConfig

if TYPE_CHECKING:
    from etcd3gw.client import Etcd3Client

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_KEY = "/netctl/schema"  # the only key outside the versioned prefix: which prefix is current
PREFIX = f"/netctl/v{SCHEMA_VERSION}/"
DEFAULT_URL = "http://127.0.0.1:2379"
DEFAULT_TIMEOUT_S = 5.0  # one HTTP request to etcd
DEFAULT_LEASE_TTL_S = 10  # a host silent for this long is dead; etcd's floor is 2 s (1.5 election timeouts)
COMMIT_ATTEMPTS = 40  # atomic(): each failed attempt means another writer committed, so this is progress
MAX_BACKOFF_S = 0.05
MAX_TXN_OPS = 128  # etcd's --max-txn-ops default, for compares and operations separately
PEER_BATCH = 100  # peers re-published per transaction when a host registers
REPUBLISH_ATTEMPTS = 5  # reads of this host's endpoints while some keep changing under the re-publication
WATCH_IDLE_S = 30.0  # a quiet watch stream is re-opened after this long (cheap; catches dead connections)
VNI_FIRST, VNI_LAST = 256, (1 << 24) - 1  # Docker's overlay range (drivers/overlay/overlay.go)

# Global networks get their default subnets from ranges the local IPAM never uses (Docker swarm's
# default address pool is 10.0.0.0/8 in /24s), so a global network does not collide with the local
# bridge networks every host creates from 172.17.0.0/16 onwards.
GLOBAL_DEFAULT_POOLS = {4: [("10.0.0.0/8", 24)], 6: [("fd4e:6574:6375::/48", 64)]}

T = TypeVar("T")
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------------
# The key schema (ETCD_SCHEMA.md says the same in prose; keep both in step)
# ---------------------------------------------------------------------------------------------------


def _component(value: str, what: str) -> str:
    if not value or "/" in value:
        raise InvalidArgument(f"{what} {value!r} cannot be stored in etcd: it must be non-empty and contain no '/'")
    return value


class Keys:
    """Every key netctl writes, in one place."""

    NETWORKS = PREFIX + "networks/"
    NETWORK_NAMES = PREFIX + "names/networks/"
    ENDPOINTS = PREFIX + "endpoints/"
    ENDPOINT_NAMES = PREFIX + "names/endpoints/"
    VNIS = PREFIX + "vnis/"
    SUBNETS = PREFIX + "ipam/subnets/"
    ADDRESSES = PREFIX + "ipam/addresses/"
    CURSORS = PREFIX + "ipam/cursors/"
    HOSTS = PREFIX + "hosts/"
    PEERS = PREFIX + "peers/"

    @staticmethod
    def network(network_id: str) -> str:
        return Keys.NETWORKS + _component(network_id, "network id")

    @staticmethod
    def network_name(name: str) -> str:
        return Keys.NETWORK_NAMES + _component(name, "network name")

    @staticmethod
    def endpoints_of(network_id: str) -> str:
        return Keys.ENDPOINTS + _component(network_id, "network id") + "/"

    @staticmethod
    def endpoint(network_id: str, endpoint_id: str) -> str:
        return Keys.endpoints_of(network_id) + _component(endpoint_id, "endpoint id")

    @staticmethod
    def endpoint_name(network_id: str, name: str) -> str:
        return Keys.ENDPOINT_NAMES + _component(network_id, "network id") + "/" + _component(name, "endpoint name")

    @staticmethod
    def vni(vni: int) -> str:
        return f"{Keys.VNIS}{vni:08d}"  # zero-padded: keys sort like the numbers

    @staticmethod
    def subnets(version: int) -> str:
        return f"{Keys.SUBNETS}v{version}/"

    @staticmethod
    def subnet(version: int, first: int, prefixlen: int) -> str:
        return f"{Keys.subnets(version)}{first:032x}-{prefixlen:03d}"

    @staticmethod
    def addresses_of(network_id: str) -> str:
        return Keys.ADDRESSES + _component(network_id, "network id") + "/"

    @staticmethod
    def addresses_in(network_id: str, version: int) -> str:
        return f"{Keys.addresses_of(network_id)}v{version}/"

    @staticmethod
    def address(network_id: str, version: int, n: int) -> str:
        return f"{Keys.addresses_in(network_id, version)}{n:032x}"  # 128-bit hex: keys sort like the numbers

    @staticmethod
    def cursors_of(network_id: str) -> str:
        return Keys.CURSORS + _component(network_id, "network id") + "/"

    @staticmethod
    def cursor(network_id: str, version: int) -> str:
        return f"{Keys.cursors_of(network_id)}v{version}"

    @staticmethod
    def host(name: str) -> str:
        return Keys.HOSTS + _component(name, "host name")

    @staticmethod
    def peers_of(network_id: str) -> str:
        return Keys.PEERS + _component(network_id, "network id") + "/"

    @staticmethod
    def peer(network_id: str, endpoint_id: str) -> str:
        return Keys.peers_of(network_id) + _component(endpoint_id, "endpoint id")


def prefix_end(prefix: str) -> str:
    """The range_end that makes [prefix, end) exactly the keys starting with prefix (keys are ASCII)."""
    if not prefix or not prefix.isascii() or prefix[-1] == "\x7f":
        raise ValueError(f"netctl bug: {prefix!r} is not a prefix netctl uses")
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# ---------------------------------------------------------------------------------------------------
# Records that are not model objects
# ---------------------------------------------------------------------------------------------------


@dataclass
class HostRecord:
    """A host taking part in the overlay; lives as long as its lease."""

    name: str
    vtep: str  # underlay address other hosts send VXLAN packets to
    lease: int
    registered: float = 0.0  # unix time
    host_id: str = ""  # the state root's persistent id (rootdir.host_id); "" in records of older netctl

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HostRecord":
        # Fields this version does not know are dropped: a newer netctl may add some.
        return cls(**{k: v for k, v in d.items() if k in _HOST_FIELDS})

    def held_by_another(self, host_id: str) -> bool:
        """Whether this record belongs to a host other than the one whose id is `host_id`. A record
        without an id was written by a netctl older than host ids: it is taken over, as it always
        was (it cannot say whose it is). A registrant without an id proves nothing, so it may not
        take a record that carries one."""
        return bool(self.host_id) and self.host_id != host_id

    @property
    def short_id(self) -> str:
        return self.host_id[:12] or "none"


_HOST_FIELDS = {"name", "vtep", "lease", "registered", "host_id"}


class HostTaken(AlreadyExists):
    """Another host (another host id) holds this host's name or VTEP address on a live lease."""


def registration_clash(name: str, vtep: str, host_id: str, live: list[HostRecord]) -> HostTaken | None:
    """Why host `name` (id `host_id`, VTEP `vtep`) may not register beside the `live` host records,
    or None when it may. Records exist only while their lease lives (etcd deletes a record with its
    lease), so every record read is a live one. The name is checked first: it is what the user
    changes (--host-name) when two cloned machines share a hostname."""
    others = [r for r in live if r.held_by_another(host_id)]
    for record in others:
        if record.name == name:
            return HostTaken(
                f"host name '{name}' is held by another host (host id {record.short_id}, VTEP {record.vtep}) "
                "on a live lease in etcd; pass --host-name NAME (or stop the other host's daemon)"
            )
    for record in others:
        if _same_address(record.vtep, vtep):
            return HostTaken(
                f"VTEP address {vtep} is held by host '{record.name}' (host id {record.short_id}) on a live lease "
                "in etcd; pass --vtep ADDR (or stop the other host's daemon)"
            )
    return None


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


@dataclass
class PeerRecord:
    """What every other host needs to reach one endpoint: the overlay driver's FDB/ARP input.

    Written with the endpoint when it is ready, on its host's lease (see EtcdTxn.put_endpoint).
    """

    network_id: str
    endpoint_id: str
    name: str
    host: str
    vtep: str
    mac: str
    addresses: list[str] = field(default_factory=list)  # "ip/prefixlen"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PeerRecord":
        return cls(**d)

    @classmethod
    def of(cls, endpoint: Endpoint, host: HostRecord) -> "PeerRecord":
        return cls(endpoint.network_id, endpoint.id, endpoint.name, host.name, host.vtep, endpoint.mac,
                   list(endpoint.addresses))


@dataclass
class WatchEvent:
    kind: str  # "put" | "delete"
    key: str
    value: Any  # decoded JSON; None for a delete
    revision: int  # the etcd revision that made the change
    prev_value: Any = None


class StoreConflict(StoreError):
    """Another writer changed what a transaction read; `atomic` retries, callers of transaction() may."""


class Compacted(StoreError):
    """A watch asked for history etcd has compacted away: the watcher must re-read everything."""

    def __init__(self, message: str, *, compact_revision: int):
        super().__init__(message)
        self.compact_revision = compact_revision


# ---------------------------------------------------------------------------------------------------
# The wire: etcd3gw's client, with errors turned into one clear StoreError
# ---------------------------------------------------------------------------------------------------


@dataclass
class _KV:
    key: str
    value: Any  # decoded JSON (None with keys_only)
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0


def parse_url(url: str) -> tuple[str, str, int]:
    """'etcd://host:port', 'http://host:port' or 'host:port' -> (canonical http URL, host, port)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("etcd", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidArgument(f"etcd address {url!r} is invalid; write it as etcd://HOST:PORT, e.g. {DEFAULT_URL}")
    try:
        port = parts.port or 2379
    except ValueError:
        raise InvalidArgument(f"etcd address {url!r} has an invalid port; write it as etcd://HOST:PORT") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", host, port


def _key_b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _encode_value(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":"), sort_keys=True).encode()).decode()


def _decode_kv(raw: dict[str, Any], keys_only: bool = False) -> _KV:
    value = None
    if not keys_only and "value" in raw:
        value = json.loads(_unb64(raw["value"]))
    return _KV(
        key=_unb64(raw["key"]).decode(),
        value=value,
        mod_revision=int(raw.get("mod_revision", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _reason(err: BaseException) -> str:
    """The short cause inside requests' long exception texts."""
    text = getattr(err, "detail_text", None) or str(err)
    found = _ERRNO_TEXT.search(text)
    if found:
        return found.group(1).strip().lower()
    if "timed out" in text.lower():
        return "no answer in time"
    try:
        body = json.loads(text)
        return body.get("message") or body.get("error") or text
    except (ValueError, AttributeError):
        return text.strip() or type(err).__name__


class _Etcd:
    """One etcd3gw client (one HTTP session: use one per thread)."""

    def __init__(self, url: str, timeout: float):
        try:
            from etcd3gw.client import Etcd3Client  # lazy: pulls in requests
        except ImportError as err:  # e.g. a CNI plugin installed without its site-packages path
            raise StoreError(f"the etcd client (etcd3gw) cannot be imported ({err}); install netctl with its "
                             "dependencies, or reinstall the CNI plugins") from None

        self.url, host, port = parse_url(url)
        self.timeout = timeout
        self.client: Etcd3Client = Etcd3Client(host=host, port=port, timeout=timeout)
        # After a call found etcd silent (no answer within the timeout: a partition, a dead peer's
        # address), calls fail at once for one more timeout's length instead of each waiting it out:
        # an operation of several etcd steps (a warm agent's CNI DEL) pays one timeout, not one per step.
        self._silent: tuple[float, StoreError | None] = (0.0, None)

    def close(self) -> None:
        self.client.session.close()

    def unreachable(self, err: BaseException) -> StoreError:
        reason = _reason(err)
        if reason == "no answer in time":
            reason = f"no answer within {self.timeout:g} s"
        return StoreError(f"etcd at {self.url} is unreachable: {reason}; start it or pass --store")

    def _fail_fast_while_silent(self) -> None:
        until, error = self._silent
        if error is not None and time.monotonic() < until:
            raise StoreError(error.message)

    def _timed_out(self, err: BaseException) -> StoreError:
        error = self.unreachable(err)
        self._silent = (time.monotonic() + self.timeout, error)
        return error

    def url_for(self, path: str) -> str:
        """The gateway URL of an API path (the first call asks etcd its version: /v3/ or /v3beta/)."""
        from etcd3gw import exceptions

        self._fail_fast_while_silent()
        try:
            return self.client.get_url(path)
        except exceptions.ConnectionTimeoutError as err:
            raise self._timed_out(err) from None
        except exceptions.ConnectionFailedError as err:
            raise self.unreachable(err) from None
        except exceptions.Etcd3Exception as err:
            raise StoreError(f"{self.url} did not answer like etcd ({_reason(err)}); check the --store address") from None

    def post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        from etcd3gw import exceptions

        url = self.url_for(path)
        try:
            return self.client.post(url, json=body)
        except exceptions.ConnectionTimeoutError as err:
            raise self._timed_out(err) from None
        except exceptions.ConnectionFailedError as err:
            raise self.unreachable(err) from None
        except exceptions.Etcd3Exception as err:
            reason = _reason(err)
            if "compacted" in reason:
                raise StoreConflict(f"etcd at {self.url} compacted the revision {what} was reading; retry") from None
            if "too many operations" in reason:
                raise StoreError(
                    f"etcd at {self.url} refused {what}: the transaction has more than {MAX_TXN_OPS} operations; "
                    "raise etcd's --max-txn-ops or report this as a netctl bug"
                ) from None
            raise StoreError(f"etcd at {self.url} refused {what}: {reason}") from None
        except ValueError as err:  # a non-JSON answer: not etcd's gateway on that port
            raise StoreError(f"{self.url} did not answer like etcd's v3 gateway ({err}); check the --store address") from None

    # -- kv ---------------------------------------------------------------------------------------

    def range(self, key: str, *, end: str = "", revision: int = 0, keys_only: bool = False, limit: int = 0,
              what: str = "a read") -> tuple[list[_KV], int]:
        body: dict[str, Any] = {"key": _key_b64(key)}
        if end:
            body["range_end"] = _key_b64(end)
        if revision:
            body["revision"] = revision
        if keys_only:
            body["keys_only"] = True
        if limit:
            body["limit"] = limit
        reply = self.post("/kv/range", body, what)
        kvs = [_decode_kv(raw, keys_only) for raw in reply.get("kvs", [])]
        return kvs, int(reply["header"]["revision"])

    def txn(self, compares: list[dict], success: list[dict], what: str) -> tuple[bool, int]:
        reply = self.post("/kv/txn", {"compare": compares, "success": success}, what)
        return bool(reply.get("succeeded", False)), int(reply["header"]["revision"])

    def compact(self, revision: int) -> None:
        self.post("/kv/compaction", {"revision": revision, "physical": True}, f"compaction to revision {revision}")

    # -- leases -----------------------------------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, int]:
        reply = self.post("/lease/grant", {"TTL": ttl}, f"a lease of {ttl} s")
        return int(reply["ID"]), int(reply["TTL"])

    def keepalive(self, lease: int) -> int:
        """Remaining TTL after the refresh; <= 0 when the lease has expired."""
        reply = self.post("/lease/keepalive", {"ID": lease}, f"keep-alive of lease {lease:x}")
        return int(reply.get("result", {}).get("TTL", -1))

    def revoke(self, lease: int) -> bool:
        try:
            self.post("/kv/lease/revoke", {"ID": lease}, f"revoking lease {lease:x}")
        except StoreError as err:
            if "lease not found" in str(err):
                return False
            raise
        return True


def _put_op(key: str, value: Any, lease: int = 0) -> dict:
    op: dict[str, Any] = {"key": _key_b64(key), "value": _encode_value(value)}
    if lease:
        op["lease"] = lease
    return {"request_put": op}


def _delete_op(key: str, end: str = "") -> dict:
    op = {"key": _key_b64(key)}
    if end:
        op["range_end"] = _key_b64(end)
    return {"request_delete_range": op}


# ---------------------------------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Write:
    value: Any  # None: delete
    lease: int = 0
    create: bool = False  # commit only if the key is still absent


class EtcdReadTxn:
    """Reads at one etcd revision (the first read fixes it), remembered for the commit's compares."""

    def __init__(self, store: "EtcdStore", etcd: _Etcd):
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
        # Only a full id (64 hex digits, controller.new_id) can be a network key: a name costs no
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

    def list_placed_endpoints(self, *, network_id: str | None = None, host: str | None = None) -> list[tuple[str, Endpoint]]:
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

    # -- IPAM and VNIs (reads) --------------------------------------------------------------------

    def vni_owner(self, vni: int) -> str:
        kv = self._get(Keys.vni(vni))
        return kv.value["network_id"] if kv is not None else ""

    def allocations(self, network_id: str | None = None) -> list[tuple[str, str, str]]:
        """(network_id, "ip/prefixlen", owner) for every address held, gateways and aux included."""
        prefix = Keys.addresses_of(network_id) if network_id is not None else Keys.ADDRESSES
        found = []
        for kv in self._list(prefix):
            nid = kv.key[len(Keys.ADDRESSES):].split("/", 1)[0]
            found.append((nid, kv.value["address"], kv.value["owner"]))
        return found

    def pool_usage(self, network: Network) -> "list[ipam.PoolUsage]":
        """How full each subnet of a global network is (CNI STATUS), like ipam.pool_usage."""
        usage = []
        for version in (4, 6):
            if not network.pools_of(version):
                continue
            held = {int(kv.key.rsplit("/", 1)[1], 16): kv.value
                    for kv in self._list(Keys.addresses_in(network.id, version), fence=False)}
            for pool in _pools(network, version):
                mine = {n: v for n, v in held.items() if pool.contains(n)}
                allocated = sum(1 for v in mine.values() if not ipam.is_reserved_owner(v["owner"]))
                reserved_in_range = sum(1 for n, v in mine.items()
                                        if pool.first <= n <= pool.last and ipam.is_reserved_owner(v["owner"]))
                capacity = pool.last - pool.first + 1 - reserved_in_range
                usage.append(ipam.PoolUsage(network.id, pool.subnet, allocated, pool.used(mine), capacity))
        return usage

    def addresses_of(self, owner: str, network_id: str | None = None) -> list[str]:
        return [address for _, address, held_by in self.allocations(network_id) if held_by == owner]


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

    # -- VNIs -------------------------------------------------------------------------------------

    def allocate_vni(self, network: Network, requested: int = 0) -> int:
        """A VXLAN network identifier for `network`: `requested` if free, else the lowest free one."""
        if requested:
            if not VNI_FIRST <= requested <= VNI_LAST:
                raise InvalidArgument(
                    f"VNI {requested} of network '{network.name}' is out of range ({VNI_FIRST}-{VNI_LAST})"
                )
            self._claim_vni(network, requested)
            return requested
        taken = {int(kv.key[len(Keys.VNIS):]) for kv in self._list(Keys.VNIS, fence=False, keys_only=True)}
        vni, skip = VNI_FIRST, self._spread()
        while vni in taken or skip:
            if vni not in taken:
                skip -= 1
            vni += 1
        if vni > VNI_LAST:
            raise PoolExhausted(f"no free VNI left for network '{network.name}' ({VNI_FIRST}-{VNI_LAST} all taken)")
        self._claim_vni(network, vni)
        return vni

    def _claim_vni(self, network: Network, vni: int) -> None:
        holder = self._get(Keys.vni(vni))
        if holder is not None:
            if holder.value["network_id"] == network.id:
                return
            raise AlreadyExists(
                f"VNI {vni} is already used by network '{holder.value['network_name']}'; "
                "choose another VNI or leave it out"
            )
        self._create(Keys.vni(vni), {"network_id": network.id, "network_name": network.name})

    def release_vni(self, vni: int, network_id: str) -> None:
        holder = self._get(Keys.vni(vni))
        if holder is not None and holder.value["network_id"] == network_id:
            self._delete(Keys.vni(vni))

    # -- global IPAM: subnets ---------------------------------------------------------------------

    def allocate_pool(self, network: Network, requested: PoolConfig | None, version: int,
                      host_routes: list[tuple[str, str]]) -> PoolConfig:
        """One subnet of family `version` for `network`, overlapping no other global network nor a route
        of this host; reserves its gateway and aux addresses. Same rules and messages as ipam.allocate_pool."""
        ipam._check_version(version)
        clashes = self._subnet_clashes(version) + ipam._route_clashes(host_routes, version)
        if requested is None or not requested.subnet:
            ipam._refuse_options_without_subnet(network, requested)
            subnet = _pick_global_subnet(version, clashes)
            config = PoolConfig(subnet=str(subnet), gateway=str(subnet.network_address + 1))
        else:
            subnet = ipam._parse_cidr(network, "subnet", requested.subnet, version)
            ipam._refuse_unusable_subnet(network, subnet)
            ipam._refuse_overlap(network, subnet, clashes)
            config = ipam._complete_config(network, subnet, requested)
        first = int(subnet.network_address)
        self._create(Keys.subnet(version, first, subnet.prefixlen),
                     {"network_id": network.id, "network_name": network.name, "subnet": str(subnet)})
        reserved = [(config.gateway, ipam.gateway_owner(network.id))]
        reserved += [(a, ipam.aux_owner(name, network.id)) for name, a in config.aux_addresses.items()]
        for address, owner in reserved:
            n = int(ipaddress.ip_address(address))
            self._create(Keys.address(network.id, version, n),
                         {"owner": owner, "address": f"{address}/{subnet.prefixlen}"})
        return config

    def _subnet_clashes(self, version: int) -> "list[ipam._Clash]":
        clashes = []
        for kv in self._list(Keys.subnets(version)):  # fenced: a concurrent new subnet fails our commit
            net = ipaddress.ip_network(kv.value["subnet"])
            clashes.append(ipam._Clash(int(net.network_address), int(net.broadcast_address),
                                       f"{net} of network '{kv.value['network_name']}'"))
        return clashes

    def release_pools(self, network_id: str) -> None:
        """Free every subnet and address of a network. Idempotent."""
        for version in (4, 6):
            for kv in self._list(Keys.subnets(version), fence=False):
                if kv.value["network_id"] == network_id:
                    self._delete(kv.key)
        self._delete_prefix(Keys.addresses_of(network_id))
        self._delete_prefix(Keys.cursors_of(network_id))

    # -- global IPAM: addresses -------------------------------------------------------------------

    def allocate_address(self, network: Network, version: int, owner: str, address: str = "") -> str:
        """Give `owner` (an endpoint id) one address of `network`: "ip/prefixlen", unique across hosts.

        Round robin from a per-network cursor, like the local IPAM, so an address released on one host
        is not handed out again at once (remote FDB/ARP entries for it may still be in flight)."""
        ipam._check_version(version)
        if not owner:
            raise InvalidArgument(f"an address of network '{network.name}' needs an owner (the endpoint id)")
        pools = _pools(network, version)
        # Unfenced: a concurrent allocation of the same address fails our commit through its create
        # compare; one of a different address should not make us retry.
        held = {int(kv.key.rsplit("/", 1)[1], 16): kv.value
                for kv in self._list(Keys.addresses_in(network.id, version), fence=False)}
        for value in held.values():
            if value["owner"] == owner:
                raise AlreadyExists(
                    f"endpoint {owner[:12]} already holds address {value['address']} in network '{network.name}'; "
                    "release it before asking for another"
                )
        if address:
            return self._allocate_static(network, pools, version, owner, address, held)
        cursor_kv = self._get(Keys.cursor(network.id, version), fence=False)
        cursor = int(cursor_kv.value, 16) if cursor_kv is not None else None
        for pool in pools:
            n = pool.next_free(held, cursor, skip=self._spread())
            if n is None:
                continue
            self._take_address(network.id, pool, n, owner)
            self._put(Keys.cursor(network.id, version), f"{n:x}")  # a hint: the address's CAS is what counts
            return pool.format(n)
        in_use = sum(pool.used(held) for pool in pools)
        capacity = sum(pool.free(held) + pool.used(held) for pool in pools)
        raise PoolExhausted(
            f"address pool of network '{network.name}' ({', '.join(p.subnet for p in pools)}) is exhausted: "
            f"{in_use} of {capacity} addresses in use; remove endpoints or use a larger subnet"
        )

    def _allocate_static(self, network: Network, pools: "list[_GlobalPool]", version: int, owner: str, text: str,
                         held: dict[int, Any]) -> str:
        try:
            ip = ipaddress.ip_interface(text).ip
        except ValueError:
            raise InvalidArgument(f"address '{text}' for network '{network.name}' is not an IP address") from None
        if ip.version != version:
            raise InvalidArgument(
                f"address {ip} is IPv{ip.version} where an IPv{version} address of network '{network.name}' was asked for"
            )
        n = int(ip)
        pool = next((p for p in pools if p.contains(n)), None)
        if pool is None:
            raise InvalidArgument(
                f"address {ip} is outside the subnets of network '{network.name}' ({', '.join(p.subnet for p in pools)})"
            )
        special = ipam._special_address_kind(n, pool.network)
        if special:
            raise InvalidArgument(
                f"address {ip} is the {special} address of subnet {pool.subnet} of network '{network.name}'; "
                "pick a host address"
            )
        if n in held:
            raise AlreadyExists(
                f"address {ip} of network '{network.name}' is already in use by "
                f"{ipam._describe_owner(held[n]['owner'])}; pick another address or remove that endpoint"
            )
        self._take_address(network.id, pool, n, owner)
        return pool.format(n)

    def _take_address(self, network_id: str, pool: "_GlobalPool", n: int, owner: str) -> None:
        self._create(Keys.address(network_id, pool.network.version, n), {"owner": owner, "address": pool.format(n)})

    def release_addresses(self, owner: str, network_id: str | None = None) -> list[str]:
        """Free every address `owner` holds (in `network_id`, or anywhere). Idempotent."""
        prefix = Keys.addresses_of(network_id) if network_id is not None else Keys.ADDRESSES
        freed = []
        for kv in self._list(prefix, fence=False):
            if kv.value["owner"] == owner:
                self._delete(kv.key)
                freed.append(kv.value["address"])
        return freed


def _pick_global_subnet(version: int, clashes: "list[ipam._Clash]") -> "ipam.IPNetwork":
    for base, size in GLOBAL_DEFAULT_POOLS[version]:
        found = ipam._first_free_block(ipaddress.ip_network(base), size, clashes)
        if found is not None:
            return found
    bases = ", ".join(base for base, _ in GLOBAL_DEFAULT_POOLS[version])
    raise PoolExhausted(
        f"no free default IPv{version} subnet for a global network: all of {bases} overlap other global "
        "networks or host routes; pass --subnet"
    )


@dataclass
class _GlobalPool:
    """One subnet of a global network, as address allocation needs it (derived from its PoolConfig)."""

    subnet: str
    network: "ipam.IPNetwork"
    first: int  # dynamic range
    last: int

    @classmethod
    def of(cls, config: PoolConfig) -> "_GlobalPool":
        net = ipaddress.ip_network(config.subnet)
        first, last = ipam._dynamic_range(net, ipaddress.ip_network(config.ip_range) if config.ip_range else None)
        return cls(config.subnet, net, first, last)

    def contains(self, n: int) -> bool:
        return int(self.network.network_address) <= n <= int(self.network.broadcast_address)

    def used(self, held: dict[int, Any]) -> int:
        return sum(1 for n, v in held.items() if self.first <= n <= self.last and not ipam.is_reserved_owner(v["owner"]))

    def free(self, held: dict[int, Any]) -> int:
        """Addresses left in the dynamic range."""
        return self.last - self.first + 1 - sum(1 for n in held if self.first <= n <= self.last)

    def next_free(self, held: dict[int, Any], cursor: int | None, skip: int = 0) -> int | None:
        """First free address after the cursor (passing over `skip` free ones), wrapping around once."""
        free = self.free(held)
        if free <= 0:
            return None
        skip %= free
        start = cursor + 1 if cursor is not None and self.first <= cursor < self.last else self.first
        for lo, hi in ((start, self.last), (self.first, start - 1)):
            n = lo
            while n <= hi:
                if n not in held:
                    if not skip:
                        return n
                    skip -= 1
                n += 1
        return None

    def format(self, n: int) -> str:
        return f"{ipam._ADDRESS_CLASS[self.network.version](n)}/{self.network.prefixlen}"


def _pools(network: Network, version: int) -> list[_GlobalPool]:
    configs = network.pools_of(version)
    if not configs:
        hint = "create it with --ipv6" if version == 6 else "it was created without IPv4"
        raise InvalidArgument(f"network '{network.name}' has no IPv{version} subnet; {hint}")
    return [_GlobalPool.of(c) for c in configs]


# ---------------------------------------------------------------------------------------------------
# Watches
# ---------------------------------------------------------------------------------------------------


class Watch:
    """One watch stream on a key prefix, from a revision on. Iterate for batches of events (one batch
    never splits an etcd revision); `close()` from any thread ends the iteration.

    etcd3gw's own Watcher drops `compact_revision` and `canceled`, without which a watcher cannot tell
    that it missed history, so the stream is read here (through etcd3gw's session and URL).
    The iteration also ends, quietly, after `idle_timeout` seconds without a message: the caller opens
    a new watch from its last revision, which also replaces a connection that died without a word.
    """

    def __init__(self, url: str, prefix: str, start_revision: int, *, idle_timeout: float = WATCH_IDLE_S,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.prefix = prefix
        self.start_revision = start_revision
        self.last_revision = start_revision - 1  # every change up to here has been delivered
        self._etcd = _Etcd(url, timeout)
        self._closed = threading.Event()
        self._response = None
        body = {"create_request": {"key": _key_b64(prefix), "range_end": _key_b64(prefix_end(prefix)),
                                   "start_revision": start_revision, "prev_kv": True}}
        import requests

        try:
            self._response = self._etcd.client.session.post(
                self._etcd.url_for("/watch"), json=body, stream=True, timeout=(timeout, idle_timeout)
            )
        except requests.RequestException as err:
            self._etcd.close()
            raise self._etcd.unreachable(err) from None
        except BaseException:
            self._etcd.close()
            raise
        if self._response.status_code != 200:
            text = self._response.text
            self.close()
            raise StoreError(f"etcd at {self._etcd.url} refused a watch on {prefix}: {text.strip()}")

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        import requests

        try:
            for line in self._response.iter_lines():
                if not line.strip():
                    continue
                batch = self._parse(json.loads(line))
                if batch:
                    self.last_revision = max(self.last_revision, max(e.revision for e in batch))
                    yield batch
        except requests.RequestException as err:
            if self._closed.is_set() or "timed out" in str(err).lower():
                return
            raise self._etcd.unreachable(err) from None
        except (AttributeError, ValueError, OSError) as err:  # the socket was shut under us by close()
            if self._closed.is_set():
                return
            raise StoreError(f"watch on etcd at {self._etcd.url} broke: {err}") from None
        if not self._closed.is_set():
            raise StoreError(f"etcd at {self._etcd.url} is unreachable: it closed the watch stream; start it or pass --store")

    def _parse(self, message: dict[str, Any]) -> list[WatchEvent]:
        if "error" in message:
            raise StoreError(f"etcd at {self._etcd.url} broke the watch on {self.prefix}: {message['error']}")
        result = message.get("result", {})
        compact = int(result.get("compact_revision", 0) or 0)
        if compact:
            raise Compacted(
                f"etcd at {self._etcd.url} compacted history up to revision {compact}, past revision "
                f"{self.start_revision} this watch resumed from; re-read everything",
                compact_revision=compact,
            )
        if result.get("canceled"):
            raise StoreError(f"etcd at {self._etcd.url} cancelled the watch on {self.prefix}: "
                             f"{result.get('cancel_reason', 'no reason given')}")
        events = []
        for raw in result.get("events", []):
            kv = _decode_kv(raw["kv"])
            prev = _decode_kv(raw["prev_kv"]).value if raw.get("prev_kv") else None
            kind = "delete" if raw.get("type") == "DELETE" else "put"
            events.append(WatchEvent(kind, kv.key, kv.value if kind == "put" else None, kv.mod_revision, prev))
        return events

    def close(self) -> None:
        """Idempotent; safe from another thread while one iterates."""
        if self._closed.is_set():
            return
        self._closed.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                import socket

                # Shut the socket itself: closing the response object alone does not wake a reader
                # blocked in recv() on another thread.
                sock = socket.socket(fileno=_dup_fd(response))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with contextlib.suppress(Exception):
                response.close()
        self._etcd.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dup_fd(response: Any) -> int:
    import os

    return os.dup(response.raw.fileno())


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class _FailureRun:
    """Failures in a row of one recurring etcd call (a watch, a host's keep-alive), logged so that an
    outage is a few lines, not one per retry: the 1st, 10th, 100th ... failure at WARNING (enough to
    see an outage and its length), the others at DEBUG, and the first success after them once."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0
        self._since = 0.0

    def failed(self, err: BaseException, retry: str) -> None:
        if not self.count:
            self._since = time.monotonic()
        self.count += 1
        level = logging.WARNING if _is_power_of_ten(self.count) else logging.DEBUG
        log.log(level, "%s: %s; %s (failure %d in a row)", self.what, err, retry, self.count)

    def succeeded(self) -> None:
        if self.count:
            log.warning("%s works again after %d failure(s) over %.0f s", self.what, self.count,
                        time.monotonic() - self._since)
            self.count = 0


class PrefixMirror:
    """A local copy of every key under a prefix, kept equal to etcd's: what a reconcile loop reads.

    `follow()` runs until `stop()`: it reads the whole prefix, then watches from the next revision; a
    lost connection (etcd restarted) is re-watched from the last revision seen, so nothing in between
    is missed; a compaction past that revision forces a full re-read (resync), so deletes that happened
    meanwhile are not missed either. `on_change(mirror, events)` is called after each applied batch,
    with events None after a full (re)read.
    """

    def __init__(self, url: str, prefix: str, *, idle_timeout: float = WATCH_IDLE_S,
                 retry_min_s: float = 0.1, retry_max_s: float = 2.0, timeout: float = DEFAULT_TIMEOUT_S):
        self.url = url
        self.prefix = prefix
        self.items: dict[str, Any] = {}
        self.revision = 0  # everything up to this revision is reflected in items
        self.resyncs = 0  # full reads so far (the first one included)
        self.reconnects = 0  # watches re-opened after an error
        self._idle_timeout = idle_timeout
        self._retry = (retry_min_s, retry_max_s)
        self._timeout = timeout
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._lock = threading.Lock()

    def resync(self) -> None:
        etcd = _Etcd(self.url, self._timeout)
        try:
            kvs, revision = etcd.range(self.prefix, end=prefix_end(self.prefix), what=f"a read of {self.prefix}")
        finally:
            etcd.close()
        self.items = {kv.key: kv.value for kv in kvs}
        self.revision = revision
        self.resyncs += 1

    def apply(self, events: list[WatchEvent]) -> None:
        # Copy, change, swap: a reader in another thread always sees a whole dict, old or new.
        items = dict(self.items)
        for event in events:
            if event.kind == "put":
                items[event.key] = event.value
            else:
                items.pop(event.key, None)
        self.items = items
        self.revision = max([self.revision] + [e.revision for e in events])

    def follow(self, on_change: Callable[["PrefixMirror", list[WatchEvent] | None], None]) -> None:
        """Keep the mirror in step until stop(); store errors are logged and retried with capped
        backoff (an exception raised by on_change ends the loop: the caller owns its own failures).
        A mirror that has been read already (revision > 0) continues from there."""
        need_resync = self.revision == 0
        delay = self._retry[0]
        failures = _FailureRun(f"watch on {self.prefix}")
        while not self._stop.is_set():
            try:
                if need_resync:
                    self.resync()
                    need_resync = False
                    failures.succeeded()
                    on_change(self, None)
                watch = Watch(self.url, self.prefix, self.revision + 1, idle_timeout=self._idle_timeout,
                              timeout=self._timeout)
                failures.succeeded()  # etcd answered the watch
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    watch.close()
                with watch:
                    for events in watch:
                        self.apply(events)
                        delay = self._retry[0]
                        on_change(self, events)
            except Compacted as err:
                log.info("%s", err)
                need_resync = True
            except StoreError as err:
                failures.failed(err, f"retrying in {delay:.1f} s")
                self.reconnects += 1
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry[1])
            finally:
                with self._lock:
                    self._watch = None

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._watch is not None:
                self._watch.close()


# ---------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------


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
        self._keeper: _LeaseKeeper | None = None
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
            raise StoreError(f"etcd at {self.url} has an unreadable {SCHEMA_KEY}; remove it with etcdctl if nothing uses it")

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
        return self._atomic_on(self._etcd, body, attempts)

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
        return self._register(self._etcd, vtep, ttl)

    def _register(self, etcd: _Etcd, vtep: str, ttl: int) -> HostRecord:
        name = self.require_host_name()
        try:
            ipaddress.ip_address(vtep)
        except ValueError:
            raise InvalidArgument(f"VTEP address {vtep!r} of host '{name}' is not an IP address") from None
        lease, _ = etcd.grant(ttl)
        record = HostRecord(name, vtep, lease, time.time(), self.host_id)

        def take(tx: EtcdTxn) -> HostRecord | None:
            # Both reads are fences of the commit: the name's key by its mod revision (or absence),
            # every other record by the range's. Two daemons racing for one name (or VTEP) cannot
            # both pass the check: the loser's commit fails, and its retry sees the winner's record.
            old = tx.get_host(name)
            clash = registration_clash(name, vtep, self.host_id, tx.list_hosts())
            if clash is not None:
                raise clash
            tx._put(Keys.host(name), asdict(record), lease=lease)
            return old

        try:
            old = self._atomic_on(etcd, take)
            self._republish_peers(etcd, record)
        except BaseException:
            with contextlib.suppress(StoreError):
                etcd.revoke(lease)
            raise
        if old is not None and old.lease != lease:
            etcd.revoke(old.lease)
        return record

    def _atomic_on(self, etcd: _Etcd, body: Callable[[EtcdTxn], T], attempts: int = COMMIT_ATTEMPTS) -> T:
        for attempt in range(1, attempts + 1):
            tx = EtcdTxn(self, etcd)
            tx.attempt = attempt
            try:
                result = body(tx)
                tx.commit()
                return result
            except StoreConflict:
                self.conflicts += 1
                if attempt == attempts:
                    raise StoreError(
                        f"etcd at {self.url}: gave up after {attempts} attempts, other writers kept changing the "
                        "same keys; retry"
                    ) from None
                # Jittered, growing backoff: the writers that collided do not collide again in step.
                time.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.002 * 2**attempt)))
        raise AssertionError("unreachable")

    def _republish_peers(self, etcd: _Etcd, record: HostRecord) -> None:
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
        keeper = _LeaseKeeper(self, vtep, ttl, on_registered, on_refused)
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

    def __enter__(self) -> "EtcdStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LeaseKeeper:
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
        self.record = self.store._register(self._etcd, self.vtep, self.ttl)
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
                    self.record = self.store._register(self._etcd, self.vtep, self.ttl)
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
