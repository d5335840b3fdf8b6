"""Install the netctl CNI plugin executables into a directory a runtime searches.

    python -m cni_plugins.install DIR        e.g. /opt/netctl/cni/bin  (or: netctl-cni-install DIR)

Each executable is a three-line script run by Python with -I -S: no site module, no .pth
processing, no user environment, so VERSION costs one interpreter start (~10 ms) and nothing else.
pip's console-script wrappers (`netctl-bridge` in the venv's bin) work too, but pay for site and for
`import re` first (~+10 ms per call). Files are written next to their final name and renamed into
place, so a runtime never executes a half-written plugin (libcni retries on ETXTBSY, not on garbage).
"""

from __future__ import annotations

import argparse
import os
import sys

PLUGINS = {"netctl-bridge": "bridge", "netctl-overlay": "overlay", "netctl-null": "null", "netctl-ipam": "ipam"}

LAUNCHER = """#!{python} -IS
import sys; sys.path.insert(0, {package_dir!r}){extra_paths}
from cni_plugins.launch import main; main({plugin!r}, {agent_python!r})
"""
# Plugins needing packages beyond the standard library, by the module to locate: with -S the
# interpreter sees no site-packages, so the launcher appends the directory holding it (after the
# standard library, so nothing there is shadowed). netctl-overlay's etcd client pulls in requests;
# the local plugins need it too on a host with a global store (a new local network's name is checked
# against the global ones). Only a path is added: nothing is imported until a store is used.
THIRD_PARTY = {name: "etcd3gw" for name in ("netctl-overlay", "netctl-bridge", "netctl-ipam", "netctl-null")}


def package_dir() -> str:
    """The directory holding cni_plugins/, libnetwork/ and drivers/ (the repo, or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_python() -> str:
    """The interpreter the plugins start with: the distribution's /usr/bin/python3 when it is this
    Python's version and has the modules netctl needs, else this interpreter. Debian links its python3
    statically; a --enable-shared build (pyenv's, many venvs') pays ~2-3 ms more per start for
    relocating libpython, a fifth of a plugin call. netctl needs nothing outside the standard library."""
    import subprocess

    system = "/usr/bin/python3"
    if not os.access(system, os.X_OK) or os.path.realpath(system) == os.path.realpath(sys.executable):
        return sys.executable
    probe = subprocess.run([system, "-I", "-S", "-c", "import sys, sqlite3, ctypes, _json, _socket; "
                            "print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, timeout=30)
    if probe.returncode == 0 and probe.stdout.strip() == "%d.%d" % sys.version_info[:2]:
        return system
    return sys.executable


def _extra_paths(module: str) -> str:
    """`; sys.path.append(DIR)` for the site-packages directory holding `module` ("" if none needed);
    a plugin whose module is not installed still installs, and says so in its error when run."""
    if not module:
        return ""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    site = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
    return f"; sys.path.append({site!r})"


def install(directory: str, python: str = "") -> list[str]:
    python = python or default_python()
    if " " in python or len(python) > 120:
        raise SystemExit(f"cannot use {python!r} in a #! line (spaces or too long); pass --python")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = []
    for name, plugin in PLUGINS.items():
        path = os.path.join(directory, name)
        temporary = f"{path}.tmp-{os.getpid()}"
        with open(temporary, "w") as f:
            # The agent started on first use needs netctl's third-party packages: this interpreter's.
            f.write(LAUNCHER.format(python=python, package_dir=package_dir(), plugin=plugin,
                                    agent_python=sys.executable, extra_paths=_extra_paths(THIRD_PARTY.get(name, ""))))
        os.chmod(temporary, 0o755)
        os.replace(temporary, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install netctl's CNI plugins (netctl-bridge, netctl-overlay, netctl-null, netctl-ipam).")
    parser.add_argument("directory", help="where the runtime looks for plugins (first in its cni_plugin_dirs)")
    parser.add_argument("--python", default="", help="interpreter of the plugins (default: /usr/bin/python3 if it is "
                        "this Python's version, else this one)")
    args = parser.parse_args(argv)
    for path in install(args.directory, args.python):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
