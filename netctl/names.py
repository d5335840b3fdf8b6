"""Containers' names follow the library's names-changed events.

Names of other containers are served by the agent's embedded DNS server (netctl/dns/); a container's
/etc/hosts keeps its own name (runner/hosts.py). When names change — a connect, a disconnect,
`network rm -f`, a remote endpoint coming or going on an overlay network — the library emits
names-changed (libnetwork/events.py) and this subscriber rewrites the concerned containers' own
hosts files and tells the name server (runner.hosts.sync_names, answered once the server has the
new state). Subscribed by the command line's controller, the agent's warm controller and the agent's
overlay reconciler; a library user does not need it (the name server also notices any commit to the
store within a second: netctl/dns/source.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from libnetwork.events import Event


def keep_hosts_files_current(controller: "Controller", *, on_changed=None) -> None:
    """After each names-changed event of `controller`: the hosts files concerned, then the name
    server; `on_changed(count)` is told how many files changed (the agent logs it)."""
    from libnetwork.events import NAMES_CHANGED

    def refresh(event: "Event") -> None:
        changed = refresh_hosts_files(controller, event)
        if on_changed is not None:
            on_changed(changed)

    controller.subscribe(NAMES_CHANGED, refresh)


def refresh_hosts_files(controller: "Controller", event: "Event") -> int:
    """The own hosts files of the sandboxes the event names (their endpoints changed), then
    sync_names. A remote peer's change (event.sandbox_ids empty) costs one datagram."""
    from runner import hosts
    from runner.paths import Layout

    return hosts.refresh(controller, Layout.of(controller.root), sandboxes=sorted(event.sandbox_ids))
