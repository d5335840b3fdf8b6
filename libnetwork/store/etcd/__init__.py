"""The global state store: etcd v3 through its JSON gateway (etcd3gw), shared by every host.

What lives here (the key schema is in ETCD_SCHEMA.md beside this package): global-scope networks and
their endpoints, the global IPAM (subnets and addresses, so no two hosts ever hand out the same
address), VXLAN network identifiers, one record per host (kept alive by a lease) and the overlay's
peer records (endpoint -> MAC, addresses, VTEP), which ride on their host's lease so that a dead
host's entries vanish from every other host by themselves.

The package, in the order its modules build on each other:

    keys.py          the key schema: Keys, prefix_end, the schema version
    client.py        the wire: one etcd3gw session (_Etcd), its errors as StoreError, fail-fast while silent
    records.py       HostRecord, PeerRecord, and registration_clash (the host-id rule)
    allocators.py    the three allocators: VNIs, subnets, addresses (the global IPAM, on ipam's public API)
    reads.py         EtcdReadTxn: reads at one revision, remembered for the commit
    transactions.py  EtcdTxn: buffered writes, the one compare-and-swap commit, and the retry loop
    failures.py      how a recurring call's outage is logged (_FailureRun)
    watch.py         Watch and PrefixMirror
    hosts.py         registration, re-publication of peers, the lease keep-alive thread
    store.py         EtcdStore, what a host opens

Importing this package does not import etcd3gw (nor requests): the first EtcdStore does.
"""

from libnetwork.store.etcd.allocators import (
    GLOBAL_DEFAULT_POOLS,
    VNI_FIRST,
    VNI_LAST,
    _GlobalPool,
)
from libnetwork.store.etcd.client import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    Compacted,
    StoreConflict,
    _put_op,
    parse_url,
)
from libnetwork.store.etcd.failures import _FailureRun
from libnetwork.store.etcd.hosts import DEFAULT_LEASE_TTL_S
from libnetwork.store.etcd.keys import (
    PREFIX,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    Keys,
    prefix_end,
)
from libnetwork.store.etcd.reads import EtcdReadTxn
from libnetwork.store.etcd.records import (
    HostRecord,
    HostTaken,
    PeerRecord,
    registration_clash,
)
from libnetwork.store.etcd.store import EtcdStore
from libnetwork.store.etcd.transactions import EtcdTxn
from libnetwork.store.etcd.watch import PrefixMirror, Watch, WatchEvent

__all__ = [
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "GLOBAL_DEFAULT_POOLS",
    "PREFIX",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "VNI_FIRST",
    "VNI_LAST",
    "Compacted",
    "EtcdReadTxn",
    "EtcdStore",
    "EtcdTxn",
    "HostRecord",
    "HostTaken",
    "Keys",
    "PeerRecord",
    "PrefixMirror",
    "StoreConflict",
    "Watch",
    "WatchEvent",
    "_FailureRun",  # tests/unit/test_etcd_failure_run.py
    "_GlobalPool",  # tests/overlay/test_overlay_units.py
    "_put_op",  # tests/overlay/test_host_identity.py
    "parse_url",
    "prefix_end",
    "registration_clash",
]
