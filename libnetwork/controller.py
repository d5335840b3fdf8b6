"""The CNM controller: networks, endpoints and sandboxes, with ordering and rollback.

Controller puts together the operations, each in a module of its own:

    controller_base.py   state root, stores, host netlink, drivers by name, lookups, firewall sync, events
    global_networks.py   global (overlay) networks: create, delete, connect, leave, reconcile
    endpoints.py         connect and disconnect (addresses, published ports)
    networks.py          local networks: create, delete, list, ensure, prune, pool usage
    sandboxes.py         sandboxes: create, delete, list, release
    cni_attachments.py   CNI ADD/CHECK/DEL/GC of a runtime's containers
    doctor.py            doctor, gc (and repair, libnetwork/repair.py)

libnetwork/__init__.py is the public face (Host); the front ends (netctl/, cni_plugins/, runner/) use
Controller directly. Its views for humans (Docker-shaped JSON) are the front ends' (netctl/views.py).

Every operation runs inside ONE write transaction of the store and does its kernel work while holding
it. That gives the crash-safety rule the rest of netctl relies on:

  * a failure raises, the driver undoes its own partial work, and the transaction rolls back, so a
    failed command leaves neither a record nor a kernel object;
  * a process killed half-way (kill -9) leaves no record — SQLite rolls the open transaction back —
    but possibly kernel objects carrying netctl's mark, or a committed record whose kernel object was
    already removed. `doctor` (which takes the same lock, so it never sees an operation in flight)
    reports exactly those, and `gc` removes them.

Concurrent processes serialise on the store's write lock; nothing depends on timing.
"""

from __future__ import annotations


from libnetwork.cni_attachments import CniAttachments
from libnetwork.controller_base import (  # noqa: F401 - the names front ends and tests import from here
    DEFAULT_ROOT,
    GLOBAL_CONFIG,
    firewall_networks,
    is_global_copy,
    overlay_stand_in,
)
from libnetwork.doctor import Doctor, Problem  # noqa: F401
from libnetwork.model import Endpoint, NetworkSpec  # noqa: F401
from libnetwork.networks import NetworkMembers  # noqa: F401
from libnetwork.records import MAX_NAME, check_mac, container_sandbox_name, new_id, now, validate_name  # noqa: F401
from libnetwork.sandboxes import SandboxMembers  # noqa: F401


class Controller(Doctor, CniAttachments):
    """Every operation on one host's state root: networks, sandboxes, endpoints, CNI attachments,
    doctor/gc/repair, events. See ControllerBase (libnetwork/controller_base.py) for the arguments."""
