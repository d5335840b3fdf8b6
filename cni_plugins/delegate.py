"""Delegated plugins (spec §4): an IPAM plugin named by `ipam.type`, found in CNI_PATH and executed
with the same stdin bytes and the same environment, except CNI_COMMAND."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from cni_plugins.skel import CNIError, Context, Request, parse_result, shown
from libnetwork.errors import CNI_DECODING_FAILURE, CNI_INTERNAL, CNI_INVALID_CONFIG, CNI_TRY_AGAIN

if TYPE_CHECKING:
    from subprocess import CompletedProcess

TIMEOUT_S = 120.0  # host-local waits on a file lock; a plugin stuck longer is broken, not busy
DEPTH_ENV = "NETCTL_CNI_DELEGATION_DEPTH"
MAX_DEPTH = 2  # a plugin delegating to a plugin delegating to ...: a configuration loop, stop it
MAIN_PLUGINS = ("netctl-bridge", "netctl-overlay", "netctl-null")  # not IPAM plugins: delegating to them loops


def find_plugin(name: str, directories: list[str]) -> str:
    """libcni FindInPath: the first directory holding a regular file (symlinks followed) of that name."""
    if name and "/" not in name and name not in (".", ".."):
        for directory in directories:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    shown_name = name[:64].replace('"', "'")
    raise CNIError(CNI_INTERNAL, f'failed to find plugin "{shown_name}" in path [{" ".join(directories)}]')


def call(req: Request, context: Context, name: str, command: str) -> dict[str, Any] | None:
    """Run IPAM plugin `name` for `command`; the parsed result for ADD, else None. Its errors reach
    the runtime unchanged (code, msg, details), as the reference plugins pass them on."""
    if name in MAIN_PLUGINS:
        raise CNIError(CNI_INVALID_CONFIG, f"ipam.type {name!r} is not an IPAM plugin; use netctl-ipam or host-local")
    depth = _depth(req.env)
    if depth >= MAX_DEPTH:
        raise CNIError(CNI_INVALID_CONFIG,
                       f"IPAM plugin {name!r} delegates back to a netctl plugin; the configuration loops")
    import subprocess  # ~5 ms to import: only when a plugin is really delegated to

    path = find_plugin(name, req.path)
    env = dict(req.env, CNI_COMMAND=command, **{DEPTH_ENV: str(depth + 1)})
    try:
        done = subprocess.run([path], input=req.stdin, capture_output=True, env=env, cwd="/", timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise CNIError(CNI_TRY_AGAIN,
                       f"IPAM plugin {name} did not answer {command} within {TIMEOUT_S:.0f} s; retry") from None
    except OSError as err:
        raise CNIError(CNI_INTERNAL, f"cannot run IPAM plugin {path}: {err.strerror}") from None
    if done.stderr:
        context.log.append(done.stderr.decode(errors="replace"))
    if done.returncode != 0:
        raise _plugin_error(name, command, done)
    if command != "ADD":
        return None
    try:
        answer = json.loads(done.stdout.decode())
    except (UnicodeDecodeError, ValueError):
        raise CNIError(CNI_DECODING_FAILURE,
                       f"IPAM plugin {name} answered ADD with no JSON result: {shown(done.stdout[:200])}") from None
    return parse_result(answer, req.version, what=f"result of IPAM plugin {name}")


def _depth(env: dict[str, str]) -> int:
    try:
        return max(0, int(env.get(DEPTH_ENV, "0")))
    except ValueError:
        return 0


def _plugin_error(name: str, command: str, done: CompletedProcess) -> CNIError:
    try:
        error = json.loads(done.stdout.decode())
        if isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("msg"), str):
            return CNIError(error["code"], error["msg"], str(error.get("details") or ""))
    except (UnicodeDecodeError, ValueError):
        pass
    said = (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()
    return CNIError(CNI_INTERNAL, f"IPAM plugin {name} failed {command} (exit {done.returncode})"
                    + (f": {said[0][:200]}" if said else ""))
