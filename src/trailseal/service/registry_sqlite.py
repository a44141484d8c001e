"""The service registry in one SQLite file, ``service.db`` of a data directory.

The :class:`~trailseal.service.registry.RegistryDatabase` of a single-node service: one
connection behind a lock; writes take ``BEGIN IMMEDIATE`` so that processes sharing the
file (the server and the CLI) take turns, and commit with ``synchronous = FULL``.

It has the report-file and secret tables too, so the registry's SQL is the same on both
engines, but a single node leaves them empty (see :mod:`trailseal.service.registry`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trailseal.errors import AlreadyExistsError, StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_logs (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    ledger_log TEXT NOT NULL UNIQUE,
    capture_content INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    operator INTEGER NOT NULL DEFAULT 0,
    secret_sha256 BLOB NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS poll_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS content (
    ref TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    log TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS report_files (
    rid TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (rid, name, sha256, seq)
);
CREATE TABLE IF NOT EXISTS link_keys (
    key_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    created_at TEXT NOT NULL
);
"""


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, query: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(query, args).rowcount

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(query, rows)


class SqliteRegistryDatabase:
    """The registry in one SQLite file (mode 0600): one connection, writes ``BEGIN
    IMMEDIATE`` so processes sharing the file take turns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open {path}: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTransaction]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteTransaction(self._conn)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as e:
                raise AlreadyExistsError(f"already exists: {e}") from e
            except sqlite3.Error as e:
                raise StorageError(f"service database failed: {e}") from e

    def rows(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(query, args).fetchall()
            except sqlite3.Error as e:
                raise StorageError(f"service database failed: {e}") from e

    def close(self) -> None:
        self._conn.close()


__all__ = ["SqliteRegistryDatabase"]
