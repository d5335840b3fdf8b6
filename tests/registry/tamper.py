"""Putting what no well-behaved client would push straight into a registry's filesystem storage
(distribution's layout: blobs/sha256/XX/HEX/data plus the repository's link files): manifests over
the size limit the registry enforces on upload, and a Docker schema 1 manifest (signed the way libtrust
signs them, so the registry parses it and serves it as it would a legacy image)."""

from __future__ import annotations

import base64
import hashlib
import json
import os


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def plant_manifest(storage: str, repository: str, tag: str, raw: bytes) -> str:
    hexpart = hashlib.sha256(raw).hexdigest()
    v2 = os.path.join(storage, "docker/registry/v2")
    blob = os.path.join(v2, "blobs/sha256", hexpart[:2], hexpart, "data")
    os.makedirs(os.path.dirname(blob), exist_ok=True)
    with open(blob, "wb") as f:
        f.write(raw)
    manifests = os.path.join(v2, "repositories", repository, "_manifests")
    for link in (f"revisions/sha256/{hexpart}/link", f"tags/{tag}/current/link", f"tags/{tag}/index/sha256/{hexpart}/link"):
        path = os.path.join(manifests, link)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(f"sha256:{hexpart}")
    return f"sha256:{hexpart}"


def schema1_manifest(repository: str, tag: str, layer_digest: str) -> bytes:
    """A libtrust-signed ("prettyjws") schema 1 manifest, as docker 1.x pushed them."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    body = {"schemaVersion": 1, "name": repository, "tag": tag, "architecture": "amd64",
            "fsLayers": [{"blobSum": layer_digest}],
            "history": [{"v1Compatibility": json.dumps({"id": "a" * 64, "os": "linux", "architecture": "amd64"})}]}  # fmt: skip
    payload = json.dumps(body, indent=3).encode()
    format_length = len(payload) - 2  # up to the closing "\n}"
    tail = payload[format_length:]
    protected = _b64(json.dumps({"formatLength": format_length, "formatTail": _b64(tail), "time": "2026-01-01T00:00:00Z"}).encode())
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big"))}
    r, s = utils.decode_dss_signature(key.sign(f"{protected}.{_b64(payload)}".encode(), ec.ECDSA(hashes.SHA256())))
    signature = [{"header": {"jwk": jwk, "alg": "ES256"}, "signature": _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")),
                  "protected": protected}]  # fmt: skip
    return payload[:format_length] + b',\n   "signatures": ' + json.dumps(signature, indent=3).encode() + tail
