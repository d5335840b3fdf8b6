"""nft JSON commands run in the current network namespace: through libnftables in-process (ctypes),
the ``nft`` binary as the fallback.

Knows nothing of netctl's tables (libnetwork/firewall_rules.py renders them): this is the transport,
kept apart because its care is the process's, not the ruleset's (a fresh context per call, sockets
kept from children, the context freed in the background).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import stat
import threading
from typing import Any

from libnetwork import netns
from libnetwork.errors import KernelError

_NFT_CTX_OUTPUT_JSON = 1 << 4  # enum nft_output_flags in nftables/libnftables.h
NFT_TIMEOUT_S = 30


def _libnftables() -> ctypes.CDLL | None:
    """libnftables with its prototypes set, or None when it is not installed."""
    try:
        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_run_cmd_from_buffer  # noqa: B018 (a library of that name without nft's API is no use)
    except (OSError, AttributeError):
        return None
    ctx = ctypes.c_void_p
    lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], ctx
    lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [ctx], None
    lib.nft_ctx_output_set_flags.argtypes, lib.nft_ctx_output_set_flags.restype = [ctx, ctypes.c_uint], None
    lib.nft_ctx_buffer_output.argtypes, lib.nft_ctx_buffer_output.restype = [ctx], ctypes.c_int
    lib.nft_ctx_buffer_error.argtypes, lib.nft_ctx_buffer_error.restype = [ctx], ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes, lib.nft_run_cmd_from_buffer.restype = [ctx, ctypes.c_char_p], ctypes.c_int
    lib.nft_ctx_get_output_buffer.argtypes, lib.nft_ctx_get_output_buffer.restype = [ctx], ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes, lib.nft_ctx_get_error_buffer.restype = [ctx], ctypes.c_char_p
    return lib


def _run_with_libnftables(lib: ctypes.CDLL, text: str) -> tuple[bool, str, str]:
    """Run nft input in-process: (ok, output, error).

    A new context each time, because the context's netlink socket belongs to the network namespace
    the thread is in when it is created.
    """
    fds_before = _open_fds()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise KernelError("cannot create an nftables context (out of memory?)")
    try:
        _keep_sockets_from_children(_open_fds() - fds_before)
        lib.nft_ctx_output_set_flags(ctx, _NFT_CTX_OUTPUT_JSON)  # JSON in (tried first) and JSON out
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        output = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    except BaseException:
        lib.nft_ctx_free(ctx)
        raise
    _free_in_background(lib, ctx)
    return rc == 0, output, error


def _open_fds() -> set[int]:
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return {int(fd) for fd in os.listdir(listing)} - {listing}  # not the fd that reads the list
    finally:
        os.close(listing)


def _keep_sockets_from_children(fds: set[int]) -> None:
    """Mark the context's netlink socket close-on-exec.

    libnftables opens it without SOCK_CLOEXEC, and it stays open until the context is freed (later,
    in the background): a container exec'd meanwhile by a fork that did not close its fds would
    otherwise hold a netfilter socket of the host's namespace.
    """
    for fd in fds:
        with contextlib.suppress(OSError):  # closed again meanwhile by another thread
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.set_inheritable(fd, False)


def _free_in_background(lib: ctypes.CDLL, ctx: int) -> None:
    """Free an nft context without making the caller wait for the kernel's cleanup.

    The transaction is committed once nft_run_cmd_from_buffer returns. But closing the context's
    netlink socket makes the kernel first finish freeing what the transaction replaced, which waits
    for an RCU grace period: 8-20 ms on our 2-vCPU machines, most of a `network create`. A thread
    pays that wait instead (ctypes releases the GIL); it is not a daemon, so the interpreter still
    lets it finish before exiting.
    """
    try:
        threading.Thread(target=lib.nft_ctx_free, args=(ctx,), name="nft-ctx-free").start()
    except RuntimeError:  # no thread to be had: pay the wait here
        lib.nft_ctx_free(ctx)


def _run_with_nft_cli(text: str) -> tuple[bool, str, str]:
    """Run nft input with the nft binary (fallback when libnftables cannot be loaded)."""
    import shutil  # only this fallback needs them
    import subprocess

    nft = shutil.which("nft") or "/usr/sbin/nft"
    try:
        done = subprocess.run([nft, "-j", "-f", "-"], input=text, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise KernelError("neither libnftables.so.1 nor the nft command is installed; install nftables") from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"nft did not finish within {NFT_TIMEOUT_S} s") from None
    return done.returncode == 0, done.stdout, done.stderr


def _run_nft(text: str) -> tuple[bool, str, str]:
    lib = _libnftables()
    return _run_with_libnftables(lib, text) if lib is not None else _run_with_nft_cli(text)


def _first_error_line(error: str) -> str:
    for line in error.splitlines():
        line = line.strip()
        if line:
            # JSON input has no source positions: drop the meaningless "internal:0:0-0: " prefix.
            return re.sub(r"^internal:\d+:\d+-\d+:\s*", "", line)
    return "nft failed without a message"


def run(commands: list[dict[str, Any]], *, doing: str = "change netctl's tables") -> str:
    """Run nft JSON commands in the current network namespace; returns nft's (JSON) output."""
    text = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
    ok, output, error = _run_nft(text)
    if not ok:
        raise KernelError(f"nftables could not {doing}: {_first_error_line(error)}", details=error)
    return output


def in_netns(netns_path: str | None) -> contextlib.AbstractContextManager[Any]:
    """Enter the namespace for the call (the nft context's socket, or the nft child, is made there)."""
    return contextlib.nullcontext() if netns_path is None else netns.entered(netns_path)
