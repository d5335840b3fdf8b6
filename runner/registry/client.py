"""One registry's HTTP API (OCI distribution spec / Docker registry v2) over requests.

Transport: HTTPS with the system's CAs plus Docker's certs.d (and netctl's) for the registry; plain HTTP
only where Settings allow it (--insecure-registry, registries.json, loopback), after HTTPS failed, as
Docker does. Authentication: none, Basic, or Bearer tokens from the realm a 401's WWW-Authenticate names
(service and scope passed on; a token is cached per scope). Every response that is read whole is read
with a size limit. Timeouts are bounded: connecting 10 s, each read 30 s.
"""

from __future__ import annotations

import glob
import os
import re
import ssl
import threading

import requests
from requests.adapters import HTTPAdapter

from runner.registry.config import Credentials, Settings, credentials
from runner.registry.errors import AuthError, ImageNotFound, RegistryError

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
USER_AGENT = "netctl/0.1 (+registry client; python-requests)"
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class _TLSAdapter(HTTPAdapter):
    def __init__(self, context: ssl.SSLContext, **kw):
        self._context = context
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kw):
        kw["ssl_context"] = self._context
        return super().init_poolmanager(*args, **kw)

    def proxy_manager_for(self, *args, **kw):
        kw["ssl_context"] = self._context
        return super().proxy_manager_for(*args, **kw)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def error_codes(response: requests.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [str(e.get("code", "")) for e in errors or [] if isinstance(e, dict)]


class Registry:
    """A session with one registry. Thread-safe for the parallel blob downloads (one pool, a lock
    around the token cache)."""

    def __init__(
        self,
        registry: str,
        api_host: str,
        settings: Settings,
        creds: Credentials | None = None,
        *,
        use_stored_credentials: bool = True,
    ):
        self.registry = registry
        self.api_host = api_host
        self.settings = settings
        self.creds = creds if creds is not None else (credentials(registry) if use_stored_credentials else None)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=8))
        self._tls_ready = False  # the TLS adapter is mounted on first HTTPS use (its CA loading costs ~40 ms)
        self._base: str | None = None
        self._known_base = ""
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    @property
    def anonymous(self) -> bool:
        """No credentials or tokens were used so far."""
        return not self._basic and not self._tokens

    # --- transport ------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for directory in self.settings.certs_dirs(self.registry):
            for ca in sorted(glob.glob(os.path.join(directory, "*.crt"))):
                try:
                    context.load_verify_locations(cafile=ca)
                except (ssl.SSLError, OSError) as err:
                    raise RegistryError(f"CA certificate {ca} cannot be loaded ({err}); replace it") from None
            cert, key = os.path.join(directory, "client.cert"), os.path.join(directory, "client.key")
            if os.path.exists(cert) and os.path.exists(key):
                context.load_cert_chain(cert, key)
        return context

    def use_known_base(self, base: str) -> None:
        """Skip the probe: a previous pull found the registry at `base` (plain HTTP only where still
        allowed). Should it not answer there, the first request probes again."""
        if base.startswith("https://") or (
            base.startswith("http://") and self.settings.plain_http_allowed(self.registry)
        ):
            self._known_base = base

    def _ensure_tls(self) -> None:
        if not self._tls_ready:
            self.session.mount("https://", _TLSAdapter(self._ssl_context(), pool_connections=4, pool_maxsize=8))
            self._tls_ready = True

    @property
    def base(self) -> str:
        if self._base is None:
            with self._lock:
                if self._base is None:
                    if self._known_base:
                        if self._known_base.startswith("https://"):
                            self._ensure_tls()
                        self._base = self._known_base
                    else:
                        self._base = self._probe()
        return self._base

    def _probe(self) -> str:
        """https://HOST/v2/ answers (any status) -> https; else http:// where allowed."""
        self._ensure_tls()
        https = f"https://{self.api_host}"
        try:
            self.session.get(f"{https}/v2/", timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), allow_redirects=False).close()
            return https
        except requests.exceptions.SSLError as err:
            if self.settings.named_insecure(self.registry):  # as Docker: HTTPS without verification first
                self.session.mount("https://", _TLSAdapter(_unverified_context(), pool_connections=4, pool_maxsize=8))
                try:
                    self.session.get(
                        f"{https}/v2/", timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), allow_redirects=False
                    ).close()
                    return https
                except requests.exceptions.RequestException:
                    pass
            if self.settings.plain_http_allowed(self.registry) and self._plain_http_answers():
                return f"http://{self.api_host}"
            raise RegistryError(self._tls_advice(err)) from None
        except requests.exceptions.RequestException as err:
            if self.settings.plain_http_allowed(self.registry) and self._plain_http_answers():
                return f"http://{self.api_host}"
            raise RegistryConnectionError(
                f"cannot reach registry {self.registry}: {_reason(err)}; check that it runs and the address"
            ) from None

    def _plain_http_answers(self) -> bool:
        """A registry answers plain HTTP here (not an HTTPS server telling us off with a 400)."""
        try:
            response = self.session.get(
                f"http://{self.api_host}/v2/", timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), allow_redirects=False
            )
        except requests.exceptions.RequestException:
            return False
        response.close()
        return response.status_code in (200, 401) or "Docker-Distribution-Api-Version" in response.headers

    def _tls_advice(self, err: Exception) -> str:
        docker_dir, ours = self.settings.certs_dirs(self.registry)
        return (
            f"TLS connection to registry {self.registry} failed ({_reason(err)}): put its CA certificate in "
            f"{docker_dir}/ca.crt (or {ours}/ca.crt), or allow plain HTTP with --insecure-registry {self.registry}"
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        headers: dict | None = None,
        data=None,
        url: str | None = None,
    ) -> requests.Response:
        """One request, authenticated for `scope` (repository:NAME:pull[,push]); a 401 is answered once
        with the challenge's scheme. Returns a response whose status is in `ok` (else raises)."""
        target = url or f"{self.base}{path}"
        for attempt in range(2):
            try:
                response = self._send(method, target, scope, headers, data, stream)
            except RegistryConnectionError:
                if not self._known_base or url:
                    raise
                with self._lock:  # the recorded endpoint is gone: find the registry again, once
                    self._known_base, self._base = "", None
                target = f"{self.base}{path}"
                response = self._send(method, target, scope, headers, data, stream)
            if response.status_code != 401 or attempt == 1:
                break
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            self._answer(challenge, scope)
            if hasattr(data, "seek"):
                data.seek(0)
        if response.status_code in ok:
            return response
        raise self._failure(response, method, path)

    def _send(self, method, url, scope, headers, data, stream) -> requests.Response:
        all_headers = dict(headers or {})
        with self._lock:
            token = self._tokens.get(scope)
            basic = self._basic
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        auth = (self.creds.username, self.creds.password) if basic and self.creds and not token else None
        try:
            return self.session.request(
                method,
                url,
                headers=all_headers,
                data=data,
                stream=stream,
                auth=auth,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                allow_redirects=True,
            )
        except requests.exceptions.SSLError as err:
            raise RegistryError(self._tls_advice(err)) from None
        except requests.exceptions.RequestException as err:
            raise RegistryConnectionError(
                f"registry {self.registry} did not answer {method} {_short(url)}: {_reason(err)}"
            ) from None

    def _answer(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.creds is None:
                raise AuthError(
                    f"registry {self.registry} wants a user name and password: run `netctl login {self.registry}`"
                )
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError(
                f"registry {self.registry} asks for authentication netctl does not know ({challenge[:60]!r})"
            )
        query: dict[str, str | list[str]] = {"service": params["service"]} if params.get("service") else {}
        scopes = [s for s in scope.split(" ") if s]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.append(params["scope"])
        if scopes:
            query["scope"] = scopes
        auth = (self.creds.username, self.creds.password) if self.creds else None
        if params["realm"].startswith("https://"):
            self._ensure_tls()
        try:
            response = self.session.get(
                params["realm"], params=query, auth=auth, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )
        except requests.exceptions.SSLError as err:
            raise RegistryError(
                f"TLS connection to the token service {params['realm']} failed ({_reason(err)})"
            ) from None
        except requests.exceptions.RequestException as err:
            raise RegistryError(
                f"token service {params['realm']} of {self.registry} did not answer: {_reason(err)}"
            ) from None
        with response:
            if response.status_code in (401, 403):
                raise self._denied(wrong_credentials=True)
            if response.status_code != 200:
                raise AuthError(
                    f"token service {params['realm']} of {self.registry} answered HTTP {response.status_code}"
                )
            body = _json_limited(response, 1 << 20, f"token from {params['realm']}")
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise AuthError(f"token service {params['realm']} of {self.registry} sent no token")
        with self._lock:
            self._tokens[scope] = str(token)

    def _denied(self, *, wrong_credentials: bool) -> AuthError:
        if self.creds is not None and wrong_credentials:
            return AuthError(
                f"registry {self.registry} refused the user name or password of {self.creds.username!r} "
                f"(from {self.creds.source}): run `netctl login {self.registry}` again"
            )
        if self.creds is None:
            return AuthError(f"registry {self.registry} refused anonymous access: run `netctl login {self.registry}`")
        return AuthError(
            f"registry {self.registry} denied {self.creds.username!r} (from {self.creds.source}) access; "
            f"check the repository name and your rights, or `netctl login {self.registry}` as another user"
        )

    def _failure(self, response: requests.Response, method: str, path: str) -> Exception:
        codes = error_codes(response)
        status = response.status_code
        response.close()
        repo = path.split("/v2/", 1)[-1].rsplit("/", 2)[0] if "/v2/" in path else path
        if status == 401:  # after Basic: the password is wrong; after a token: its scope was not granted
            return self._denied(wrong_credentials=self._basic)
        if status == 403 or "DENIED" in codes:
            return AuthError(
                f"registry {self.registry} denied access to {repo}; check the name and your rights (netctl login)"
            )
        if "NAME_UNKNOWN" in codes:
            return ImageNotFound(f"repository {repo} not found in registry {self.registry}; check the name")
        if "MANIFEST_UNKNOWN" in codes or (status == 404 and "/manifests/" in path):
            what = path.rsplit("/", 1)[-1]
            name = f"{self.registry}/{repo}{'@' if what.startswith('sha256:') else ':'}{what}"
            return ImageNotFound(f"{name} not found: no such tag or digest (or repository) in the registry")
        if "BLOB_UNKNOWN" in codes or (status == 404 and "/blobs/" in path):
            return ImageNotFound(
                f"blob {path.rsplit('/', 1)[-1][:19]} of {repo} is missing from registry {self.registry}"
            )
        return RegistryError(
            f"registry {self.registry} answered {method} {path} with HTTP {status} {' '.join(codes)}".rstrip()
        )

    # --- helpers --------------------------------------------------------------------------------

    def check_login(self) -> None:
        """GET /v2/ with the credentials: raises AuthError if they are refused."""
        response = self.request("GET", "/v2/", scope="", ok=(200,))
        response.close()


class RegistryConnectionError(RegistryError):
    """The connection failed or dropped: worth a retry."""


def _json_limited(response: requests.Response, limit: int, what: str):
    import json

    data = read_limited(response, limit, what)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what} is not valid JSON") from None


def read_limited(response: requests.Response, limit: int, what: str) -> bytes:
    """The whole body, or RegistryError when it is larger than `limit` (checked before and while reading)."""
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        response.close()
        raise RegistryError(f"{what} is {int(length)} bytes, over netctl's limit of {limit}; refusing it")
    chunks, total = [], 0
    try:
        for chunk in response.iter_content(65536):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{what} is over netctl's limit of {limit} bytes; refusing it")
            chunks.append(chunk)
    except requests.exceptions.RequestException as err:
        raise RegistryConnectionError(f"reading {what} failed: {_reason(err)}") from None
    finally:
        response.close()
    return b"".join(chunks)


def _reason(err: BaseException) -> str:
    text = str(err)
    if "NameResolution" in text or "Failed to resolve" in text or "Name or service not known" in text:
        return "its host name does not resolve"
    for marker in (
        "[SSL: CERTIFICATE_VERIFY_FAILED]",
        "Connection refused",
        "timed out",
        "Name or service not known",
        "WRONG_VERSION_NUMBER",
        "Connection reset",
        "RemoteDisconnected",
        "IncompleteRead",
    ):
        if marker in text:
            return {"[SSL: CERTIFICATE_VERIFY_FAILED]": "certificate verify failed"}.get(marker, marker.strip("[]"))
    return (text.splitlines() or [type(err).__name__])[0][:120]


def _short(url: str) -> str:
    return url.split("://", 1)[-1][:100]
