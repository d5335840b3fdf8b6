"""The netctl CNI plugins by name, and one invocation of one of them in this process: what a plugin
executable runs when no agent serves it (cni_plugins/launch.py) and what the agent runs for it
(cni_plugins/service.py).

Above both the plugins and the protocol (skel.py): the plugins import skel, so skel cannot look them up.
"""

from __future__ import annotations

import os
from typing import Any

from cni_plugins.skel import Context, run


def load_plugin(name: str) -> Any:
    """The plugin module by its short name (bridge, overlay, null, ipam); imported on demand."""
    if name == "bridge":
        from cni_plugins import bridge

        return bridge
    if name == "overlay":
        from cni_plugins import overlay

        return overlay
    if name == "null":
        from cni_plugins import null

        return null
    if name == "ipam":
        from cni_plugins import ipam

        return ipam
    raise ValueError(f"no netctl CNI plugin {name!r}")


def run_in_process(name: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    context = Context()
    try:
        return run(load_plugin(name), dict(os.environ) if env is None else env, stdin, context)
    finally:
        try:
            context.close()
        except Exception:  # closing sockets cannot change the answer any more
            pass
