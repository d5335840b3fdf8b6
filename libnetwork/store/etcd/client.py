"""The wire: etcd3gw's client, with errors turned into one clear StoreError.

etcd3gw is imported lazily: it pulls in requests, which a CLI call on a local network must not pay for.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from libnetwork.errors import InvalidArgument, StoreError

if TYPE_CHECKING:
    from etcd3gw.client import Etcd3Client

DEFAULT_URL = "http://127.0.0.1:2379"
DEFAULT_TIMEOUT_S = 5.0  # one HTTP request to etcd
MAX_TXN_OPS = 128  # etcd's --max-txn-ops default, for compares and operations separately


class StoreConflict(StoreError):
    """Another writer changed what a transaction read; `atomic` retries, callers of transaction() may."""


class Compacted(StoreError):
    """A watch asked for history etcd has compacted away: the watcher must re-read everything."""

    def __init__(self, message: str, *, compact_revision: int):
        super().__init__(message)
        self.compact_revision = compact_revision



@dataclass
class _KV:
    key: str
    value: Any  # decoded JSON (None with keys_only)
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0


def parse_url(url: str) -> tuple[str, str, int]:
    """'etcd://host:port', 'http://host:port' or 'host:port' -> (canonical http URL, host, port)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("etcd", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidArgument(f"etcd address {url!r} is invalid; write it as etcd://HOST:PORT, e.g. {DEFAULT_URL}")
    try:
        port = parts.port or 2379
    except ValueError:
        raise InvalidArgument(f"etcd address {url!r} has an invalid port; write it as etcd://HOST:PORT") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", host, port


def _key_b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _encode_value(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":"), sort_keys=True).encode()).decode()


def _decode_kv(raw: dict[str, Any], keys_only: bool = False) -> _KV:
    value = None
    if not keys_only and "value" in raw:
        value = json.loads(_unb64(raw["value"]))
    return _KV(
        key=_unb64(raw["key"]).decode(),
        value=value,
        mod_revision=int(raw.get("mod_revision", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _reason(err: BaseException) -> str:
    """The short cause inside requests' long exception texts."""
    text = getattr(err, "detail_text", None) or str(err)
    found = _ERRNO_TEXT.search(text)
    if found:
        return found.group(1).strip().lower()
    if "timed out" in text.lower():
        return "no answer in time"
    try:
        body = json.loads(text)
        return body.get("message") or body.get("error") or text
    except (ValueError, AttributeError):
        return text.strip() or type(err).__name__


# After a call found etcd silent, later calls on the same client fail at once for this long, then one
# is let through again: long enough for the steps of one operation (a DEL's few etcd calls follow each
# other within milliseconds), short enough that a client kept warm (the agent's) notices etcd's return
# within a second.
SILENT_HOLD_S = 1.0


class _Etcd:
    """One etcd3gw client (one HTTP session: use one per thread)."""

    def __init__(self, url: str, timeout: float):
        try:
            from etcd3gw.client import Etcd3Client  # lazy: pulls in requests
        except ImportError as err:  # e.g. a CNI plugin installed without its site-packages path
            raise StoreError(f"the etcd client (etcd3gw) cannot be imported ({err}); install netctl with its "
                             "dependencies, or reinstall the CNI plugins") from None

        self.url, host, port = parse_url(url)
        self.timeout = timeout
        self.client: Etcd3Client = Etcd3Client(host=host, port=port, timeout=timeout)
        # After a call found etcd silent (no answer within the timeout: a partition, a dead peer's
        # address), calls fail at once for SILENT_HOLD_S instead of each waiting it out: an operation
        # of several etcd steps (a warm agent's CNI DEL) pays one timeout, not one per step.
        self._silent: tuple[float, StoreError | None] = (0.0, None)

    def close(self) -> None:
        self.client.session.close()

    def unreachable(self, err: BaseException) -> StoreError:
        reason = _reason(err)
        if reason == "no answer in time":
            reason = f"no answer within {self.timeout:g} s"
        return StoreError(f"etcd at {self.url} is unreachable: {reason}; start it or pass --store")

    def _fail_fast_while_silent(self) -> None:
        until, error = self._silent
        if error is not None and time.monotonic() < until:
            raise StoreError(error.message)

    def _timed_out(self, err: BaseException) -> StoreError:
        error = self.unreachable(err)
        self._silent = (time.monotonic() + SILENT_HOLD_S, error)
        return error

    def url_for(self, path: str) -> str:
        """The gateway URL of an API path (the first call asks etcd its version: /v3/ or /v3beta/)."""
        from etcd3gw import exceptions

        self._fail_fast_while_silent()
        try:
            return self.client.get_url(path)
        except exceptions.ConnectionTimeoutError as err:
            raise self._timed_out(err) from None
        except exceptions.ConnectionFailedError as err:
            raise self.unreachable(err) from None
        except exceptions.Etcd3Exception as err:
            raise StoreError(
                f"{self.url} did not answer like etcd ({_reason(err)}); check the --store address"
            ) from None

    def post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        from etcd3gw import exceptions

        url = self.url_for(path)
        try:
            return self.client.post(url, json=body)
        except exceptions.ConnectionTimeoutError as err:
            raise self._timed_out(err) from None
        except exceptions.ConnectionFailedError as err:
            raise self.unreachable(err) from None
        except exceptions.Etcd3Exception as err:
            reason = _reason(err)
            if "compacted" in reason:
                raise StoreConflict(f"etcd at {self.url} compacted the revision {what} was reading; retry") from None
            if "too many operations" in reason:
                raise StoreError(
                    f"etcd at {self.url} refused {what}: the transaction has more than {MAX_TXN_OPS} operations; "
                    "raise etcd's --max-txn-ops or report this as a netctl bug"
                ) from None
            raise StoreError(f"etcd at {self.url} refused {what}: {reason}") from None
        except ValueError as err:  # a non-JSON answer: not etcd's gateway on that port
            raise StoreError(
                f"{self.url} did not answer like etcd's v3 gateway ({err}); check the --store address"
            ) from None

    # -- kv ---------------------------------------------------------------------------------------

    def range(self, key: str, *, end: str = "", revision: int = 0, keys_only: bool = False, limit: int = 0,
              what: str = "a read") -> tuple[list[_KV], int]:
        body: dict[str, Any] = {"key": _key_b64(key)}
        if end:
            body["range_end"] = _key_b64(end)
        if revision:
            body["revision"] = revision
        if keys_only:
            body["keys_only"] = True
        if limit:
            body["limit"] = limit
        reply = self.post("/kv/range", body, what)
        kvs = [_decode_kv(raw, keys_only) for raw in reply.get("kvs", [])]
        return kvs, int(reply["header"]["revision"])

    def txn(self, compares: list[dict], success: list[dict], what: str) -> tuple[bool, int]:
        reply = self.post("/kv/txn", {"compare": compares, "success": success}, what)
        return bool(reply.get("succeeded", False)), int(reply["header"]["revision"])

    def compact(self, revision: int) -> None:
        self.post("/kv/compaction", {"revision": revision, "physical": True}, f"compaction to revision {revision}")

    # -- leases -----------------------------------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, int]:
        reply = self.post("/lease/grant", {"TTL": ttl}, f"a lease of {ttl} s")
        return int(reply["ID"]), int(reply["TTL"])

    def keepalive(self, lease: int) -> int:
        """Remaining TTL after the refresh; <= 0 when the lease has expired."""
        reply = self.post("/lease/keepalive", {"ID": lease}, f"keep-alive of lease {lease:x}")
        return int(reply.get("result", {}).get("TTL", -1))

    def revoke(self, lease: int) -> bool:
        try:
            self.post("/kv/lease/revoke", {"ID": lease}, f"revoking lease {lease:x}")
        except StoreError as err:
            if "lease not found" in str(err):
                return False
            raise
        return True


def _put_op(key: str, value: Any, lease: int = 0) -> dict:
    op: dict[str, Any] = {"key": _key_b64(key), "value": _encode_value(value)}
    if lease:
        op["lease"] = lease
    return {"request_put": op}


def _delete_op(key: str, end: str = "") -> dict:
    op = {"key": _key_b64(key)}
    if end:
        op["range_end"] = _key_b64(end)
    return {"request_delete_range": op}

