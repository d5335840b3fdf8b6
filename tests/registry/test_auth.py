"""TLS and authentication against a real docker-registry: a test CA + htpasswd Basic auth, and token
auth whose RS256 tokens (signed by the tests' token service) the registry verifies itself."""

from __future__ import annotations

import base64
import json
import os

import layouts
import pytest
from conftest import CONFIG, HOME
from registry_server import Registry
from token_server import TokenService

pytestmark = pytest.mark.kernel


def one_line(result) -> str:
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def tls_registry(rhost):
    reg = Registry(rhost.host, port=5443, tls=True, users={"alice": "s3cret"})
    try:
        yield reg.start()
    finally:
        reg.close()


def test_tls_and_basic_auth(rhost, tls_registry, tmp_path):
    reg = tls_registry
    src = layouts.write_layout(str(tmp_path / "l"), layouts.busybox_layers())
    rhost.run("skopeo", "copy", *reg.tls_flags("dest"), "--dest-creds", "alice:s3cret", src, "docker://localhost:5443/sec:1")
    ref = "localhost:5443/sec:1"
    # TLS failure: one line naming the certs.d path and --insecure-registry; nothing stored
    err = one_line(rhost.netctl("image", "pull", "-q", ref, check=False))
    assert "/etc/docker/certs.d/localhost:5443/ca.crt" in err and "--insecure-registry localhost:5443" in err
    assert rhost.stored_layers() == set()
    # the CA where Docker keeps it: TLS works, and the registry asks for credentials
    rhost.run("sh", "-c", f"mkdir -p /etc/docker/certs.d/localhost:5443 && cp {reg.ca} /etc/docker/certs.d/localhost:5443/ca.crt")
    err = one_line(rhost.netctl("image", "pull", "-q", ref, check=False))
    assert "netctl login localhost:5443" in err
    # a wrong password: refused, names netctl login, nothing kept
    bad = rhost.netctl("login", "-u", "alice", "--password-stdin", "localhost:5443", input="wrong\n", check=False)
    assert "netctl login localhost:5443" in one_line(bad)
    assert not os.path.exists(rhost.path(f"{CONFIG}/auth.json"))
    # the right one: kept (0600), and pull works
    rhost.netctl("login", "-u", "alice", "--password-stdin", "localhost:5443", input="s3cret\n")
    assert os.stat(rhost.path(f"{CONFIG}/auth.json")).st_mode & 0o077 == 0
    rhost.netctl("image", "pull", ref)
    run = rhost.netctl("run", "--rm", "--network", "none", ref, "cat", "/etc/release")
    assert run.stdout == "netctl-test v1\n"
    # push with the same login
    rhost.netctl("image", "tag", ref, "localhost:5443/sec:copy")
    rhost.netctl("image", "push", "localhost:5443/sec:copy")
    # logout: the login is gone; Docker's ~/.docker/config.json is read too
    assert "Removing login credentials for localhost:5443" in rhost.netctl("logout", "localhost:5443").stdout
    rhost.netctl("image", "rm", ref, "localhost:5443/sec:copy")
    assert "netctl login" in one_line(rhost.netctl("image", "pull", "-q", ref, check=False))
    auth = base64.b64encode(b"alice:s3cret").decode()
    rhost.run("sh", "-c", f"mkdir -p {HOME}/.docker && echo '{json.dumps({'auths': {'localhost:5443': {'auth': auth}}})}' > {HOME}/.docker/config.json")
    rhost.netctl("image", "pull", "-q", ref)
    # the CA under netctl's own config dir works as well as Docker's
    rhost.run("sh", "-c", f"mkdir -p {CONFIG}/certs.d/localhost:5443 && mv /etc/docker/certs.d/localhost:5443/ca.crt {CONFIG}/certs.d/localhost:5443/")
    rhost.netctl("image", "pull", "-q", ref)


def test_insecure_registry_flag_allows_plain_http(rhost, tmp_path):
    """A registry on a non-loopback address of the host speaks plain HTTP: refused unless named."""
    rhost.run("ip", "addr", "add", "192.0.2.10/24", "dev", "lo")
    reg = Registry(rhost.host, port=5000)
    reg_path = reg.config_path
    with open(reg_path) as f:
        text = f.read().replace("addr: 127.0.0.1:5000", "addr: 192.0.2.10:5000")
    with open(reg_path, "w") as f:
        f.write(text)
    try:
        reg.start()
        src = layouts.write_layout(str(tmp_path / "l"), layouts.busybox_layers())
        rhost.run("skopeo", "copy", "--dest-tls-verify=false", src, "docker://192.0.2.10:5000/plain:1")
        err = one_line(rhost.netctl("image", "pull", "-q", "192.0.2.10:5000/plain:1", check=False))
        assert "--insecure-registry 192.0.2.10:5000" in err
        rhost.netctl("image", "pull", "-q", "--insecure-registry", "192.0.2.10:5000", "192.0.2.10:5000/plain:1")
        # or named in registries.json
        rhost.netctl("image", "rm", "192.0.2.10:5000/plain:1")
        rhost.run("sh", "-c", f"""echo '{{"insecure-registries": ["192.0.2.10:5000"]}}' > {CONFIG}/registries.json""")
        rhost.netctl("image", "pull", "-q", "192.0.2.10:5000/plain:1")
    finally:
        reg.close()


def test_bearer_token_auth(rhost, tmp_path):
    tokens = TokenService(rhost.host, {"bob": "hunter2"})
    reg = Registry(rhost.host, port=5000, token=tokens)
    try:
        tokens.start()
        reg.start()
        src = layouts.write_layout(str(tmp_path / "l"), layouts.busybox_layers())
        for name in ("private/app:1", "public/app:1"):
            rhost.run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", "bob:hunter2", src, f"docker://127.0.0.1:5000/{name}")
        # anonymous: public/ is readable, private/ is not
        rhost.netctl("image", "pull", "-q", "127.0.0.1:5000/public/app:1")
        err = one_line(rhost.netctl("image", "pull", "-q", "127.0.0.1:5000/private/app:1", check=False))
        assert "netctl login 127.0.0.1:5000" in err
        # a wrong password is refused by the token service
        err = one_line(rhost.netctl("login", "-u", "bob", "-p", "nope", "127.0.0.1:5000", check=False))
        assert "refused" in err and "netctl login 127.0.0.1:5000" in err
        rhost.netctl("login", "-u", "bob", "-p", "hunter2", "127.0.0.1:5000")
        rhost.netctl("image", "pull", "127.0.0.1:5000/private/app:1")
        asked = [r for r in tokens.requests() if r["user"] == "bob" and r["result"] == "token"]
        assert any("repository:private/app:pull" in r["scope"] for r in asked), asked
        # push asks for pull,push on the target (and pull on the mount source)
        rhost.netctl("push", "127.0.0.1:5000/private/app:1", "127.0.0.1:5000/private/copy:1")
        scopes = [s for r in tokens.requests() if r["user"] == "bob" for s in r["scope"]]
        assert "repository:private/copy:pull,push" in scopes
        assert "repository:private/app:pull" in scopes
        copied = rhost.run("skopeo", "inspect", "--tls-verify=false", "--creds", "bob:hunter2",
                           "docker://127.0.0.1:5000/private/copy:1").stdout  # fmt: skip
        assert json.loads(copied)["Layers"]
    finally:
        reg.close()
        tokens.close()
