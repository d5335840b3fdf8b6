"""The local state store: one SQLite database per root, safe under many concurrent processes.

Every CLI and CNI call opens the store, so opening costs one `PRAGMA user_version` read when the
schema is current. Every write runs in one `BEGIN IMMEDIATE` transaction: the write lock is taken
up front, so two processes never interleave a read-modify-write (the IPAM depends on that), and a
waiting writer waits up to BUSY_TIMEOUT_S instead of failing.

Writers take their turn on an flock of `netctl.db.lock` before BEGIN IMMEDIATE. SQLite's own busy
handler is not fair: a writer that has waited a while polls only every 100 ms, and writers that
have just arrived poll every millisecond or two, so with 20 CNI ADDs at once on a loaded machine one
of them could lose every race for 30 s. Waiting on the flock polls at a few milliseconds for every
writer alike (readers never take it).

Objects are stored as the JSON of `to_dict()` in a `data` column, with the fields we look up by
copied into indexed columns. The IPAM tables live in the same schema (one `user_version`) but are
read and written only by the IPAM (libnetwork/ipam/local.py) through `tx.conn`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import ExitStack, contextmanager

from libnetwork.errors import AlreadyExists, InvalidArgument, NetctlError, StoreError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the CLI's hot path
if TYPE_CHECKING:
    from typing import Any, Iterator

    from libnetwork.model import Endpoint, Network, Sandbox

DB_FILENAME = "netctl.db"
WRITER_LOCK_SUFFIX = ".lock"  # netctl.db.lock: whose turn it is to write
BUSY_TIMEOUT_S = 30.0
MIN_PREFIX_LEN = 3  # shortest id prefix accepted as a reference, like `docker network inspect 1a2`

# MIGRATIONS[i] brings a database from user_version i to i + 1. Append, never edit: a database in
# the field at version i has run exactly MIGRATIONS[:i].
#
# IPAM tables (used only by libnetwork/ipam/local.py): addresses are 16-byte big-endian BLOBs, which sort
# like the integers they encode, for IPv4 and IPv6 alike. range_first..range_last is where dynamic
# allocation may hand out addresses. range_used counts every address row inside it (exhaustion is
# answered from it), reserved_in_range the gateway/aux rows among them, allocated the endpoint rows
# anywhere in the subnet. cursor is the last dynamically handed-out address (round robin).
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE networks (
            id      TEXT PRIMARY KEY,
            name    TEXT NOT NULL UNIQUE,
            created TEXT NOT NULL,
            data    TEXT NOT NULL)""",
        """CREATE TABLE endpoints (
            id         TEXT PRIMARY KEY,
            network_id TEXT NOT NULL,
            name       TEXT NOT NULL,
            sandbox_id TEXT NOT NULL,
            created    TEXT NOT NULL,
            data       TEXT NOT NULL,
            UNIQUE (network_id, name))""",
        "CREATE INDEX endpoints_by_sandbox ON endpoints (sandbox_id, network_id)",
        """CREATE TABLE sandboxes (
            id           TEXT PRIMARY KEY,
            name         TEXT NOT NULL UNIQUE,
            container_id TEXT NOT NULL,
            created      TEXT NOT NULL,
            data         TEXT NOT NULL)""",
        "CREATE INDEX sandboxes_by_container ON sandboxes (container_id)",
        """CREATE TABLE ipam_pools (
            id                INTEGER PRIMARY KEY,
            network_id        TEXT NOT NULL,
            network_name      TEXT NOT NULL,
            seq               INTEGER NOT NULL,
            version           INTEGER NOT NULL,
            subnet            TEXT NOT NULL,
            prefixlen         INTEGER NOT NULL,
            net_first         BLOB NOT NULL,
            net_last          BLOB NOT NULL,
            range_first       BLOB NOT NULL,
            range_last        BLOB NOT NULL,
            cursor            BLOB,
            allocated         INTEGER NOT NULL DEFAULT 0,
            range_used        INTEGER NOT NULL DEFAULT 0,
            reserved_in_range INTEGER NOT NULL DEFAULT 0,
            config            TEXT NOT NULL,
            UNIQUE (network_id, seq))""",
        "CREATE INDEX ipam_pools_by_version ON ipam_pools (version, net_first)",
        """CREATE TABLE ipam_addresses (
            pool_id INTEGER NOT NULL,
            addr    BLOB NOT NULL,
            owner   TEXT NOT NULL,
            PRIMARY KEY (pool_id, addr)) WITHOUT ROWID""",
        "CREATE INDEX ipam_addresses_by_owner ON ipam_addresses (owner)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def _encode(obj: "Any") -> str:
    return json.dumps(obj.to_dict(), separators=(",", ":"), sort_keys=True)


def _prefix_upper_bound(prefix: str) -> str:
    # Every string starting with `prefix` sorts (BINARY collation, UTF-8) below prefix + U+10FFFF.
    return prefix + "\U0010ffff"


class ReadTxn:
    """Read methods, valid inside `store.snapshot()` and `store.transaction()`."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    # -- networks ------------------------------------------------------------------------------

    def get_network(self, ref: str) -> "Network | None":
        """By full id, then by name, then by unique id prefix (>= 3 characters)."""
        from libnetwork.model import Network

        data = self._resolve("networks", "network", ref)
        return Network.from_dict(json.loads(data)) if data is not None else None

    def list_networks(self) -> "list[Network]":
        from libnetwork.model import Network

        rows = self.conn.execute("SELECT data FROM networks ORDER BY created, rowid")
        return [Network.from_dict(json.loads(d)) for (d,) in rows]

    # -- endpoints -----------------------------------------------------------------------------

    def get_endpoint(self, id: str) -> "Endpoint | None":
        row = self.conn.execute("SELECT data FROM endpoints WHERE id = ?", (id,)).fetchone()
        return self._endpoint(row[0]) if row else None

    def find_endpoint(self, network_id: str, sandbox_id: str) -> "Endpoint | None":
        row = self.conn.execute(
            "SELECT data FROM endpoints WHERE sandbox_id = ? AND network_id = ? ORDER BY created, rowid",
            (sandbox_id, network_id),
        ).fetchone()
        return self._endpoint(row[0]) if row else None

    def list_endpoints(self, *, network_id: str | None = None, sandbox_id: str | None = None) -> "list[Endpoint]":
        where, args = [], []
        if network_id is not None:
            where.append("network_id = ?")
            args.append(network_id)
        if sandbox_id is not None:
            where.append("sandbox_id = ?")
            args.append(sandbox_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.conn.execute(f"SELECT data FROM endpoints {clause} ORDER BY created, rowid", args)
        return [self._endpoint(d) for (d,) in rows]

    def count_endpoints(self, network_id: str) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM endpoints WHERE network_id = ?", (network_id,)).fetchone()[0]

    # -- sandboxes -----------------------------------------------------------------------------

    def get_sandbox(self, ref: str) -> "Sandbox | None":
        """Same resolution rules as get_network."""
        data = self._resolve("sandboxes", "sandbox", ref)
        return self._sandbox(data) if data is not None else None

    def find_sandbox_by_container(self, container_id: str) -> "Sandbox | None":
        """The sandbox a runner or CNI runtime created for `container_id` (CNI DEL looks it up so)."""
        if not container_id:
            return None
        row = self.conn.execute(
            "SELECT data FROM sandboxes WHERE container_id = ? ORDER BY created, rowid", (container_id,)
        ).fetchone()
        return self._sandbox(row[0]) if row else None

    def list_sandboxes(self) -> "list[Sandbox]":
        rows = self.conn.execute("SELECT data FROM sandboxes ORDER BY created, rowid")
        return [self._sandbox(d) for (d,) in rows]

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _endpoint(data: str) -> "Endpoint":
        from libnetwork.model import Endpoint

        return Endpoint.from_dict(json.loads(data))

    @staticmethod
    def _sandbox(data: str) -> "Sandbox":
        from libnetwork.model import Sandbox

        return Sandbox.from_dict(json.loads(data))

    def _resolve(self, table: str, kind: str, ref: str) -> str | None:
        """Docker's lookup order: an exact id wins over a name, a name over an id prefix."""
        if not ref:
            return None
        for column in ("id", "name"):
            row = self.conn.execute(f"SELECT data FROM {table} WHERE {column} = ?", (ref,)).fetchone()
            if row:
                return row[0]
        if len(ref) < MIN_PREFIX_LEN:
            return None
        rows = self.conn.execute(
            f"SELECT id, name, data FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT 6",
            (ref, _prefix_upper_bound(ref)),
        ).fetchall()
        if len(rows) == 1:
            return rows[0][2]
        if rows:
            candidates = ", ".join(f"'{name}' ({id_[:12]})" for id_, name, _ in rows[:5])
            more = " and more" if len(rows) > 5 else ""
            raise InvalidArgument(
                f"{kind} reference '{ref}' is ambiguous: it matches {candidates}{more}; "
                f"use the name or more characters of the id"
            )
        return None


class Txn(ReadTxn):
    """Read and write methods, valid only inside `store.transaction()`."""

    def put_network(self, n: "Network") -> None:
        self._refuse_taken_name("networks", "network", n.name, n.id)
        self.conn.execute(
            "INSERT INTO networks (id, name, created, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, created = excluded.created, data = excluded.data",
            (n.id, n.name, n.created, _encode(n)),
        )

    def delete_network(self, id: str) -> None:
        self.conn.execute("DELETE FROM networks WHERE id = ?", (id,))

    def put_endpoint(self, e: "Endpoint") -> None:
        row = self.conn.execute(
            "SELECT id FROM endpoints WHERE network_id = ? AND name = ? AND id != ?", (e.network_id, e.name, e.id)
        ).fetchone()
        if row:
            net = self.conn.execute("SELECT name FROM networks WHERE id = ?", (e.network_id,)).fetchone()
            where = f"network '{net[0]}'" if net else f"network {e.network_id[:12]}"
            raise AlreadyExists(
                f"endpoint name '{e.name}' is already used by endpoint {row[0][:12]} in {where}; choose another name"
            )
        self.conn.execute(
            "INSERT INTO endpoints (id, network_id, name, sandbox_id, created, data) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET network_id = excluded.network_id, name = excluded.name, "
            "sandbox_id = excluded.sandbox_id, created = excluded.created, data = excluded.data",
            (e.id, e.network_id, e.name, e.sandbox_id, e.created, _encode(e)),
        )

    def delete_endpoint(self, id: str) -> None:
        self.conn.execute("DELETE FROM endpoints WHERE id = ?", (id,))

    def put_sandbox(self, s: "Sandbox") -> None:
        self._refuse_taken_name("sandboxes", "sandbox", s.name, s.id)
        self.conn.execute(
            "INSERT INTO sandboxes (id, name, container_id, created, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, container_id = excluded.container_id, "
            "created = excluded.created, data = excluded.data",
            (s.id, s.name, s.container_id, s.created, _encode(s)),
        )

    def delete_sandbox(self, id: str) -> None:
        self.conn.execute("DELETE FROM sandboxes WHERE id = ?", (id,))

    def _refuse_taken_name(self, table: str, kind: str, name: str, id: str) -> None:
        # Checked before writing so the error can name the holder; the UNIQUE index stays as the
        # guarantee (BEGIN IMMEDIATE means nobody can slip in between check and write anyway).
        row = self.conn.execute(f"SELECT id FROM {table} WHERE name = ? AND id != ?", (name, id)).fetchone()
        if row:
            raise AlreadyExists(
                f"{kind} name '{name}' is already used by {kind} {row[0][:12]}; choose another name"
            )


class SQLiteStore:
    """`ROOT/netctl.db`. One connection per store object; use one store per thread."""

    def __init__(self, root: str):
        self.root = root
        self.path = os.path.join(root, DB_FILENAME)
        self.conn = self._connect()
        try:
            # Per connection, no I/O. NORMAL in WAL mode never corrupts and survives a process
            # crash; only a power cut can lose the last commits, and a power cut also wipes every
            # kernel object those commits described.
            self._run("PRAGMA synchronous = NORMAL")
            self._ensure_schema()
        except BaseException:
            self.conn.close()
            raise

    # -- public --------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        """BEGIN IMMEDIATE: commit on normal exit, roll back on any exception."""
        with self._writer_turn(), self._txn("BEGIN IMMEDIATE") as conn:
            yield Txn(conn)

    @contextmanager
    def snapshot(self) -> Iterator[ReadTxn]:
        """A read-only, consistent view (WAL readers never block writers, nor wait for them)."""
        with self._txn("BEGIN DEFERRED") as conn:
            yield ReadTxn(conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """An exclusive flock on netctl.db.lock for the duration of one write transaction."""
        from libnetwork import flock

        if self.conn.in_transaction:  # before the flock: a nested writer would wait for itself
            raise RuntimeError("netctl store transactions do not nest; finish the open one first")
        path = self.path + WRITER_LOCK_SUFFIX
        with ExitStack() as stack:
            try:
                stack.enter_context(flock.held(path, BUSY_TIMEOUT_S, self._locked_too_long))
            except OSError as e:
                raise StoreError(f"cannot open {path}: {e}; check that {self.root} is writable by you") from e
            yield

    def _connect(self) -> sqlite3.Connection:
        try:
            os.makedirs(self.root, exist_ok=True)
            # isolation_level=None: we issue BEGIN ourselves; Python's implicit transactions would
            # start a DEFERRED one and lose the IMMEDIATE lock semantics.
            # check_same_thread=False: the agent hands a warm store from request to request, and its
            # requests run on different threads - one at a time per store, never two at once.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(
                f"cannot open state store {self.path}: {e}; check that {self.root} exists and is writable by you"
            ) from e
        return conn

    def _ensure_schema(self) -> None:
        version = self._read_version()
        if version == SCHEMA_VERSION:
            return
        self._refuse_newer(version)
        # Creators and migrators take turns under the writers' flock. Without it, 20 processes opening
        # a fresh store at once failed now and then with "database is locked": SQLite's switch to WAL
        # takes its exclusive lock without calling the busy handler, so a racing creator got SQLITE_BUSY
        # at once instead of waiting (reproduced under CPU load; the flock is how writers wait anyway).
        with self._writer_turn():
            version = self._read_version()  # another process may have created or migrated meanwhile
            if version == SCHEMA_VERSION:
                return
            self._refuse_newer(version)
            if version == 0:
                # Persistent in the file, so only the creator sets it; it cannot run inside a transaction.
                self._run("PRAGMA journal_mode = WAL")
            with self._txn("BEGIN IMMEDIATE") as conn:
                for step in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _read_version(self) -> int:
        return self._run("PRAGMA user_version").fetchone()[0]

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state store {self.path} has schema version {version}, newer than this netctl understands "
                f"({SCHEMA_VERSION}); upgrade netctl or use another --root"
            )

    def _run(self, sql: str) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql)
        except sqlite3.Error as e:
            raise self._translate(e) from e

    @contextmanager
    def _txn(self, begin: str) -> Iterator[sqlite3.Connection]:
        if self.conn.in_transaction:
            raise RuntimeError("netctl store transactions do not nest; finish the open one first")
        self._run(begin)
        try:
            yield self.conn
        except BaseException as e:
            self.conn.rollback()
            if isinstance(e, sqlite3.Error):
                raise self._translate(e) from e
            raise
        try:
            self._run("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise

    def _locked_too_long(self) -> StoreError:
        return StoreError(
            f"state store {self.path} stayed locked for more than {BUSY_TIMEOUT_S:.0f} s by another netctl "
            f"process; retry, or find the stuck process with `fuser {self.path}`"
        )

    def _translate(self, e: sqlite3.Error) -> NetctlError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return self._locked_too_long()
        if isinstance(e, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
            return StoreError(
                f"state store {self.path} is corrupt ({text}); move it aside (with its -wal and -shm files) "
                f"to start from empty state, then run `netctl gc` to remove kernel leftovers"
            )
        if "readonly" in text or "unable to open" in text:
            return StoreError(f"cannot write state store {self.path} ({text}); check its permissions (run as root?)")
        return StoreError(f"state store {self.path} failed: {text}")
