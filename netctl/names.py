"""Containers' /etc/hosts follow the library's names-changed events.

A container run by netctl resolves the names of the containers on its networks through its hosts file
(runner/hosts.py writes it). When names change — a connect, a disconnect, `network rm -f`, a remote
endpoint coming or going on an overlay network — the library emits names-changed (libnetwork/events.py)
and this subscriber rewrites the hosts files concerned. Subscribed by the command line's controller,
the agent's warm controller and the agent's overlay reconciler; a library user does not need it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from libnetwork.controller import Controller
    from libnetwork.events import Event


def keep_hosts_files_current(controller: "Controller", *, on_changed=None) -> None:
    """Rewrite the hosts files concerned after each names-changed event of `controller`;
    `on_changed(count)` is told how many files changed (the agent logs it)."""
    from libnetwork.events import NAMES_CHANGED

    def refresh(event: "Event") -> None:
        changed = refresh_hosts_files(controller, event)
        if on_changed is not None:
            on_changed(changed)

    controller.subscribe(NAMES_CHANGED, refresh)


def refresh_hosts_files(controller: "Controller", event: "Event") -> int:
    """The hosts files of containers on event.network_ids (None: every container) and of the sandboxes
    it names (e.g. one just disconnected). Costs one stat when the host has no containers."""
    from runner.paths import Layout

    layout = Layout.of(controller.root)
    if not os.path.isdir(layout.containers):
        return 0
    from runner import hosts

    networks = set(event.network_ids) if event.network_ids is not None else None
    return hosts.refresh(controller, layout, networks=networks, sandboxes=sorted(event.sandbox_ids))
