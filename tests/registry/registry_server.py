"""A real registry for tests: Debian's docker-registry (distribution 2.8) inside a throwaway host.

Kinds (one class, chosen by arguments):
  * plain HTTP on the host's loopback (127.0.0.1:PORT), anonymous;
  * TLS with a test CA and htpasswd (bcrypt) Basic auth;
  * token auth: the registry verifies RS256 tokens signed by a test certificate, issued by the minimal
    token service in token_server.py (also inside the host).
Storage, configuration, certificates and the log live in a private temporary directory, removed by
close(). The registry runs as `nsenter ... docker-registry serve CONFIG` in its own process group
(host.popen), stopped and killed by that PID only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import requests

REGISTRY = "/usr/bin/docker-registry"
START_TIMEOUT_S = 15.0
HERE = os.path.dirname(os.path.abspath(__file__))


def make_ca(directory: str, common_name: str, san_ip: str = "127.0.0.1") -> tuple[str, str, str]:
    """A CA and a server certificate for `san_ip`/localhost, made with the openssl CLI.
    Returns (ca.crt, server.crt, server.key)."""
    ca_key, ca_crt = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
    key, csr, crt = (os.path.join(directory, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(directory, "san.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=IP:{san_ip},DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=30)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
        "-subj", f"/CN={common_name} CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
        "-days", "2", "-extfile", ext)
    return ca_crt, crt, key


class Registry:
    def __init__(self, host, *, port: int = 5000, tls: bool = False, users: dict[str, str] | None = None,
                 token: "object | None" = None):  # token: a token_server.TokenService
        self.host = host
        self.port = port
        self.tls = tls
        self.users = users or {}
        self.token = token
        self.dir = tempfile.mkdtemp(prefix="netctl-registry-")
        self.storage = os.path.join(self.dir, "storage")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.config_path = os.path.join(self.dir, "config.yml")
        self.ca = ""
        self.ca_dir = os.path.join(self.dir, "ca")  # just ca.crt: what certs.d / skopeo --cert-dir take
        self.proc: subprocess.Popen | None = None
        self._write_config()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}" if not self.tls else f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        lines = [
            "version: 0.1",
            "log:", "  level: info", "  formatter: text", "  accesslog:", "    disabled: false",
            "storage:", f"  filesystem:", f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
            "  cache:", "    blobdescriptor: inmemory",
            "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: netctl-test-secret",
        ]  # fmt: skip
        if self.tls:
            self.ca, crt, key = make_ca(self.dir, "netctl-test-registry")
            os.makedirs(self.ca_dir)
            shutil.copy(self.ca, os.path.join(self.ca_dir, "ca.crt"))
            lines += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        if self.users:
            import bcrypt

            htpasswd = os.path.join(self.dir, "htpasswd")
            with open(htpasswd, "w") as f:
                for user, password in self.users.items():
                    f.write(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
            lines += ["auth:", "  htpasswd:", "    realm: netctl-test", f"    path: {htpasswd}"]
        elif self.token is not None:
            lines += ["auth:", "  token:", f"    realm: {self.token.realm}", f"    service: {self.token.service}",
                      f"    issuer: {self.token.issuer}", f"    rootcertbundle: {self.token.cert}"]  # fmt: skip
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # --- life cycle ---

    def start(self) -> "Registry":
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = open(self.log_path, "ab")
        try:
            self.proc = self.host.popen(REGISTRY, "serve", self.config_path, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited; its log:\n{self.log()[-3000:]}")
            if "listening on" in self.log():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"docker-registry did not listen on {self.port}; its log:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            from harness import stop_group

            stop_group(self.proc, 15)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            from harness import stop_group

            stop_group(self.proc, 9)
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- looking at it ---

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def blob_gets(self, repository: str | None = None) -> list[str]:
        """Digests of successful blob GETs in the access log (HEADs and errors left out)."""
        pattern = re.compile(r'"GET /v2/(\S+)/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" (\d{3})')
        found = []
        for repo, digest, status in pattern.findall(self.log()):
            if status.startswith("2") and (repository is None or repo == repository):
                found.append(digest)
        return found

    def blob_path(self, digest: str) -> str:
        hexpart = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexpart[:2], hexpart, "data")

    def skopeo(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """skopeo inside the host, trusting this registry (plain HTTP or its CA)."""
        return self.host.run("skopeo", *args, check=check, timeout=timeout)

    def tls_flags(self, prefix: str) -> list[str]:
        """skopeo's flags for this registry: --PREFIX-tls-verify=false or --PREFIX-cert-dir."""
        if not self.tls:
            return [f"--{prefix}-tls-verify=false"]
        return [f"--{prefix}-cert-dir={self.ca_dir}"]


def python() -> str:
    return sys.executable
