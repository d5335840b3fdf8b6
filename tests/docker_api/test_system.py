"""System endpoints through the real docker CLI and docker-py: ping and version negotiation,
version, info, refusals."""

from __future__ import annotations

import json


def test_ping_and_version_negotiation(dhost):
    out = dhost.docker("version", "--format", "{{json .}}").stdout
    version = json.loads(out)
    assert version["Server"]["ApiVersion"] == "1.47"
    assert version["Server"]["MinAPIVersion"] == "1.24"
    assert version["Client"]["ApiVersion"] == "1.47"  # negotiated down from the CLI's 1.50
    pinned = json.loads(dhost.docker("version", "--format", "{{json .}}", api_version="1.41").stdout)
    assert pinned["Client"]["ApiVersion"] == "1.41"
