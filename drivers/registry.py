"""Drivers by name: the one way libnetwork reaches a driver.

Each driver is registered as "module:Class" and imported on first use (importlib), so a CLI call pays
only for the driver it uses: `netctl network create -d bridge` never imports the overlay driver. The
registry knows names, not classes: it imports nothing of a driver until asked, which also keeps the
contract (drivers/base.py) free of imports of the drivers that implement it.

A global-scope driver (overlay) is built with this host's settings: `get("overlay", vtep=..., root=...)`
(see GlobalDriver in drivers/base.py); a local one takes none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from libnetwork.errors import InvalidArgument

if TYPE_CHECKING:
    from drivers.base import Driver

# name -> "module:Class". "external" is for CNI chaining (netctl-ipam under another plugin): netctl hands
# out the addresses, another plugin makes the data plane; it is not offered to users by name.
DRIVERS = {
    "bridge": "drivers.bridge:BridgeDriver",
    "null": "drivers.null:NullDriver",
    "overlay": "drivers.overlay:OverlayDriver",
    "external": "drivers.external:ExternalDriver",
}
LISTED = ("bridge", "null", "overlay")  # what an error about an unknown driver offers


def get(name: str, **settings: Any) -> "Driver":
    """A new instance of the driver registered as `name`; InvalidArgument for an unknown name.
    `settings` go to its constructor (a global-scope driver's vtep and root)."""
    target = DRIVERS.get(name)
    if target is None:
        raise InvalidArgument(f"unknown network driver {name!r}; available drivers: {', '.join(LISTED)}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**settings)


def names() -> list[str]:
    """The drivers a user may name (`-d`)."""
    return list(LISTED)
