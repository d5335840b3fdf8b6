"""State stores. The local (per-host) store is SQLite; the global (multi-host) one lives beside it."""

from libnetwork.store.sqlite import SCHEMA_VERSION, ReadTxn, SQLiteStore, Txn

__all__ = ["SCHEMA_VERSION", "ReadTxn", "SQLiteStore", "Txn"]
