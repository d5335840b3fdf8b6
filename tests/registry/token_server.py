"""A minimal Docker token service (the `realm` of a registry's Bearer challenge), for tests.

Runs inside a throwaway host: `python token_server.py DIR PORT` serves GET /token on 127.0.0.1:PORT.
It checks HTTP Basic credentials against DIR/users.json ({"user": "password"}), grants an authenticated
user every action asked for in `scope` (repository:NAME:ACTIONS, repeatable), an anonymous caller
only `pull` on repositories under public/, and answers 401 to a wrong password. Tokens are RS256 JWTs
signed with DIR/token.key, carrying DIR/token.crt in the x5c header, which the registry verifies against
its rootcertbundle (the same certificate). Every request is appended to DIR/token.log as JSON.

TokenService (imported by the tests) makes the key and certificate and starts/stops the process.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

START_TIMEOUT_S = 10.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict, key_pem: bytes, cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def serve(directory: str, port: int) -> None:
    with open(os.path.join(directory, "users.json")) as f:
        users = json.load(f)
    with open(os.path.join(directory, "token.key"), "rb") as f:
        key_pem = f.read()
    with open(os.path.join(directory, "token.crt"), "rb") as f:
        cert_pem = f.read()
    with open(os.path.join(directory, "settings.json")) as f:
        settings = json.load(f)
    log_path = os.path.join(directory, "token.log")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            user = ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if users.get(name) != password:
                    self._log({"user": name, "result": "wrong password", "scope": query.get("scope", [])})
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"details":"wrong user name or password"}')
                    return
                user = name
            access = []
            for scope in query.get("scope", []):
                for one in scope.split(" "):
                    kind, _, rest = one.partition(":")
                    name, _, actions = rest.rpartition(":")
                    if kind != "repository" or not name:
                        continue
                    wanted = [a for a in actions.split(",") if a]
                    granted = wanted if user else [a for a in wanted if a == "pull" and name.startswith("public/")]
                    if granted:
                        access.append({"type": "repository", "name": name, "actions": granted})
            now = int(time.time())
            claims = {"iss": settings["issuer"], "sub": user, "aud": query.get("service", [""])[0], "exp": now + 300,
                      "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}  # fmt: skip
            token = sign(claims, key_pem, cert_pem)
            self._log({"user": user, "result": "token", "scope": query.get("scope", []), "access": access})
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _log(self, entry: dict) -> None:
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class TokenService:
    """The token service of one test: key, certificate, users; start() inside `host`, close()."""

    def __init__(self, host, users: dict[str, str], *, port: int = 5001):
        self.host = host
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="netctl-token-")
        self.service = "netctl-test-registry"
        self.issuer = "netctl-test-issuer"
        self.key = os.path.join(self.dir, "token.key")
        self.cert = os.path.join(self.dir, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert,
                        "-days", "2", "-subj", "/CN=netctl test token issuer"], check=True, capture_output=True, timeout=30)  # fmt: skip
        with open(os.path.join(self.dir, "users.json"), "w") as f:
            json.dump(users, f)
        with open(os.path.join(self.dir, "settings.json"), "w") as f:
            json.dump({"issuer": self.issuer}, f)
        self.proc = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> "TokenService":
        self.proc = self.host.popen(sys.executable, os.path.abspath(__file__), self.dir, str(self.port),
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr"), "w"))  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            probe = self.host.run(sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 1)",
                                  check=False, timeout=10)  # fmt: skip
            if probe.returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"token service did not start: {open(os.path.join(self.dir, 'stderr')).read()[-2000:]}")

    def requests(self) -> list[dict]:
        try:
            with open(os.path.join(self.dir, "token.log")) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            from harness import stop_group

            stop_group(self.proc, 9)
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
