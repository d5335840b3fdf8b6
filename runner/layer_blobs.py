"""A layer's blob, kept beside its unpacked directory (ROOT/images/layers/<diff id>/blob): the stream as
it was imported or pulled, copied while it is unpacked (TeeReader), and its description in layer.json
(layer_record), so push and save can send the very bytes that came in."""

from __future__ import annotations

import os
import secrets
from typing import Any


def layer_record(diff_id: str, size: int, blob_digest: str, blob_size: int, compression: str) -> dict[str, Any]:
    return {"diff_id": diff_id, "size": size, "blob": {"digest": f"sha256:{blob_digest}", "size": blob_size,
                                                       "compression": compression}}  # fmt: skip


class TeeReader:
    """Reads `inner`, writing (and hashing) every byte read to `out`: the layer's blob is kept as it came."""

    def __init__(self, inner, out):
        import hashlib

        self.inner = inner
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0
        self.compression = ""

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        if data:
            if self.size == 0:
                from runner.layers import compression_of

                self.compression = compression_of(data[:6])
            self.out.write(data)
            self.hash.update(data)
            self.size += len(data)
        return data

    def drain(self) -> None:
        for _ in iter(lambda: self.read(1 << 20), b""):
            pass


def write_bytes_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with open(temp, "wb") as f:
        f.write(data)
    os.rename(temp, path)
