"""Pure logic of the registry client: references, challenges, platform choice, presence checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from libnetwork.errors import InvalidArgument
from runner.registry import manifest, present
from runner.registry.client import parse_challenge
from runner.registry.errors import Unsupported
from runner.registry.reference import parse, registry_host

HEX = "a" * 64


@pytest.mark.parametrize("text, registry, repository, tag, digest, familiar", [
    ("busybox", "docker.io", "library/busybox", "latest", "", "busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", "", "busybox:1.36"),
    ("docker.io/library/busybox", "docker.io", "library/busybox", "latest", "", "busybox:latest"),
    ("index.docker.io/user/app:2", "docker.io", "user/app", "2", "", "user/app:2"),
    ("user/app", "docker.io", "user/app", "latest", "", "user/app:latest"),
    ("localhost/app", "localhost", "app", "latest", "", "localhost/app:latest"),
    ("localhost:5000/team/app:v1", "localhost:5000", "team/app", "v1", "", "localhost:5000/team/app:v1"),
    ("registry.example/app@sha256:" + HEX, "registry.example", "app", "", "sha256:" + HEX, "registry.example/app@sha256:" + HEX),
    ("reg.example:443/a/b:t@sha256:" + HEX, "reg.example:443", "a/b", "t", "sha256:" + HEX, "reg.example:443/a/b:t"),
])  # fmt: skip
def test_references_normalised_as_docker(text, registry, repository, tag, digest, familiar):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.familiar) == (registry, repository, tag, digest, familiar)
    assert ref.api_host == ("registry-1.docker.io" if registry == "docker.io" else registry)


@pytest.mark.parametrize("text", ["", "UPPER", "a//b", "app:", "app@sha256:abc", "-app", "app:bad tag", "x" * 600, " app"])
def test_bad_references(text):
    with pytest.raises(InvalidArgument):
        parse(text)


def test_registry_host_for_login():
    assert registry_host("") == "docker.io"
    assert registry_host("https://index.docker.io/v1/") == "docker.io"
    assert registry_host("localhost:5000") == "localhost:5000"
    with pytest.raises(InvalidArgument):
        registry_host("bad host")


def test_challenges():
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"')
    assert scheme == "bearer" and params == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def _index(*platforms):
    body = {"manifests": [{"digest": f"sha256:{i:064x}", "size": 1, "platform": p} for i, p in enumerate(platforms)]}
    return manifest.Fetched(b"", manifest.OCI_INDEX, "sha256:" + HEX, body)


def test_platform_choice():
    index = _index({"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm", "variant": "v6"},
                   {"os": "linux", "architecture": "arm", "variant": "v7"}, {"os": "unknown", "architecture": "unknown"})  # fmt: skip
    assert manifest.choose(index, manifest.Platform("linux", "amd64"), "x")["platform"]["architecture"] == "amd64"
    assert manifest.choose(index, manifest.Platform("linux", "arm", "v7"), "x")["platform"]["variant"] == "v7"
    with pytest.raises(Unsupported, match="it has linux/amd64, linux/arm/v6, linux/arm/v7: pick one"):
        manifest.choose(index, manifest.Platform("linux", "riscv64"), "x")
    assert manifest.parse_platform("linux/arm64") == manifest.Platform("linux", "arm64")
    with pytest.raises(Unsupported):
        manifest.parse_platform("linux")


def test_presence_check(tmp_path):
    (tmp_path / "repositories.json").write_text(json.dumps({"busybox:latest": "1", "localhost:5000/bb:1": "2"}, indent=1) + "\n")
    (tmp_path / "digests.json").write_text(json.dumps({"localhost:5000/bb@sha256:" + HEX: "2"}))
    for ref in ("busybox", "docker.io/library/busybox:latest", "localhost:5000/bb:1", "localhost:5000/bb@sha256:" + HEX, "0123456789ab"):
        assert present.is_present(str(tmp_path), ref), ref
    for ref in ("localhost:5000/bb", "nginx", "localhost:5000/bb@sha256:" + "b" * 64):
        assert not present.is_present(str(tmp_path), ref), ref


def test_run_of_a_present_image_does_not_load_the_registry_code():
    """The hot path: fastcli's run imports runner.registry.present (os + protocol) and nothing else of it."""
    code = ("import sys; from runner.registry import present; import runner.fastcli, runner.runopts, runner.client; "
            "print(sorted(m for m in sys.modules if m.startswith(('requests', 'urllib3', 'runner.registry.', 'tqdm', 'zstandard'))))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # fmt: skip
    assert out.stdout.strip() == "['runner.registry.present']"
