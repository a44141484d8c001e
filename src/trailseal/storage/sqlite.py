"""The embedded default store: one SQLite file, WAL, one writer, many readers.

Layout (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`):

- ``entries``: one row per entry. The rowid is ``log_id << 40 | index`` so that one
  B-tree serves every log in index order without a second index; ``log_id`` is kept as a
  column too for the idempotency index and for people reading the database by hand.
- ``tiles``: hash-tile chunks ``(log_id, level, idx, start, hashes)``; a tile is its
  chunks concatenated in ``start`` order. Chunks are only ever added.
- ``checkpoints``, ``logs``, ``log_keys``: as their names say.

Triggers reject UPDATE and DELETE on every table (DESIGN §6): a bug or a careless
operator cannot rewrite history through this process's connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trailseal.core.tiles import TileChunk, TileKey
from trailseal.errors import (
    AlreadyExistsError,
    NotFoundError,
    StorageError,
)
from trailseal.storage.base import (
    IdempotencyKey,
    KeyEvent,
    LogInfo,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
    join_tile_chunks,
)

SCHEMA_VERSION = 1
INDEX_BITS = 40
_LOOKUP_CHUNK = 500
"""Idempotency keys looked up per query (under SQLite's parameter limit)."""
"""Entries per log are limited to 2^40 (about 10^12) by the rowid encoding."""

_TABLES = ("logs", "log_keys", "entries", "tiles", "checkpoints")

_SCHEMA = """
CREATE TABLE logs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE log_keys (
    id INTEGER PRIMARY KEY,
    log_id INTEGER NOT NULL,
    verifier TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('added', 'retired')),
    at TEXT NOT NULL
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    log_id INTEGER NOT NULL,
    data BLOB NOT NULL,
    source TEXT,
    event_id TEXT
);
CREATE UNIQUE INDEX entries_idempotency ON entries (log_id, source, event_id)
    WHERE event_id IS NOT NULL;
CREATE TABLE tiles (
    id INTEGER PRIMARY KEY,
    log_id INTEGER NOT NULL,
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    start INTEGER NOT NULL,
    hashes BLOB NOT NULL
);
CREATE UNIQUE INDEX tiles_key ON tiles (log_id, level, idx, start);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    log_id INTEGER NOT NULL,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note BLOB NOT NULL,
    signed_at TEXT NOT NULL
);
CREATE INDEX checkpoints_size ON checkpoints (log_id, tree_size);
""" + "".join(
    f"""
CREATE TRIGGER {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, 'trailseal: {t} is append-only'); END;
CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, 'trailseal: {t} is append-only'); END;
"""
    for t in _TABLES
)


def _rowid(log_id: int, index: int) -> int:
    return (log_id << INDEX_BITS) | index


def _blob(value: object) -> bytes:
    """Entry bytes as stored; a value rewritten as TEXT (tampering) still compares as bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _storage_error(e: sqlite3.Error) -> StorageError:
    text = str(e)
    if "full" in text:
        return StorageError(f"the database is full ({text}); free disk space, then retry")
    if "locked" in text or "busy" in text:
        return StorageError(f"the database is busy ({text}); retry shortly")
    return StorageError(f"SQLite failed: {text}")


def _read_tiles(
    conn: sqlite3.Connection, log_id: int, keys: Sequence[TileKey]
) -> dict[TileKey, bytes]:
    out: dict[TileKey, bytes] = {}
    for level, index in keys:
        rows = conn.execute(
            "SELECT start, hashes FROM tiles WHERE log_id = ? AND level = ? AND idx = ?"
            " ORDER BY start",
            (log_id, level, index),
        ).fetchall()
        if not rows:
            continue
        out[(level, index)] = join_tile_chunks(level, index, rows)
    return out


def _checkpoint(row: tuple[int, int, bytes, bytes, str]) -> StoredCheckpoint:
    return StoredCheckpoint(row[0], row[1], row[2], row[3], row[4])


_CHECKPOINT_COLUMNS = "id, tree_size, root_hash, note, signed_at"


class _SqliteWrite:
    def __init__(self, conn: sqlite3.Connection, log_id: int) -> None:
        self._conn = conn
        self._log_id = log_id

    def tree_size(self) -> int:
        row = self._conn.execute(
            "SELECT max(tree_size) FROM checkpoints WHERE log_id = ?", (self._log_id,)
        ).fetchone()
        return int(row[0] or 0)

    def read_tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return _read_tiles(self._conn, self._log_id, keys)

    def find_entries(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, StoredEntry]:
        by_source: dict[str, list[str]] = {}
        for source, event_id in keys:
            by_source.setdefault(source, []).append(event_id)
        out: dict[IdempotencyKey, StoredEntry] = {}
        mask = (1 << INDEX_BITS) - 1
        for source, ids in by_source.items():
            for start in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                # (log_id, source, event_id IN ...) walks the idempotency index per key.
                rows = self._conn.execute(
                    "SELECT id, data, event_id FROM entries"  # noqa: S608 (placeholders only)
                    f" WHERE log_id = ? AND source = ? AND event_id IN ({marks})",
                    [self._log_id, source, *chunk],
                ).fetchall()
                for rowid, data, event_id in rows:
                    out[(source, event_id)] = StoredEntry(rowid & mask, data, source, event_id)
        return out

    def append(
        self,
        first_index: int,
        entries: Sequence[NewEntry],
        chunks: Sequence[TileChunk],
        checkpoint: StoredCheckpoint,
    ) -> None:
        if first_index != self.tree_size():
            raise StorageError(
                f"append at index {first_index}, but the log's tree size is {self.tree_size()}"
            )
        if not self._conn.execute("SELECT 1 FROM logs WHERE id = ?", (self._log_id,)).fetchone():
            raise StorageError(f"no log with id {self._log_id}")
        if first_index + len(entries) >= 1 << INDEX_BITS:
            raise StorageError("log is full: SQLite stores at most 2^40 entries per log")
        log_id = self._log_id
        self._conn.executemany(
            "INSERT INTO entries (id, log_id, data, source, event_id) VALUES (?, ?, ?, ?, ?)",
            [
                (_rowid(log_id, first_index + i), log_id, e.data, e.source, e.event_id)
                for i, e in enumerate(entries)
            ],
        )
        self._conn.executemany(
            "INSERT INTO tiles (log_id, level, idx, start, hashes) VALUES (?, ?, ?, ?, ?)",
            [(log_id, c.level, c.index, c.start, c.hashes) for c in chunks],
        )
        self._conn.execute(
            "INSERT INTO checkpoints (log_id, tree_size, root_hash, note, signed_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                log_id,
                checkpoint.tree_size,
                checkpoint.root_hash,
                checkpoint.note,
                checkpoint.signed_at,
            ),
        )


class SqliteStorage:
    """:class:`~trailseal.storage.base.Storage` on one SQLite database file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock()
        fresh = not self.path.exists()
        if fresh:
            # The database holds tenant data: readable by its owner only.
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._writer = self._connect()
        try:
            self._migrate()
        except BaseException:
            self.close()  # a refused file must not keep connections open
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before we acknowledge it (DESIGN §1.4).
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA cache_size = -65536")
        except sqlite3.Error as e:
            raise StorageError(f"cannot open SQLite database {self.path}: {e}") from e
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        try:
            version = self._writer.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._writer.executescript(
                    "BEGIN IMMEDIATE;\n"
                    + _SCHEMA
                    + f"PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has schema version {version}; this trailseal knows "
                    f"{SCHEMA_VERSION}. Upgrade trailseal to open it."
                )
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    # -- logs and keys --------------------------------------------------------------

    def create_log(self, name: str, origin: str, created_at: str) -> LogInfo:
        try:
            with self._write_lock:
                cur = self._writer.execute(
                    "INSERT INTO logs (name, origin, created_at) VALUES (?, ?, ?)",
                    (name, origin, created_at),
                )
        except sqlite3.IntegrityError as e:
            raise AlreadyExistsError(
                f"a log named {name!r} or with origin {origin!r} already exists"
            ) from e
        except sqlite3.Error as e:
            raise _storage_error(e) from e
        assert cur.lastrowid is not None
        return LogInfo(cur.lastrowid, name, origin, created_at)

    def get_log(self, name: str) -> LogInfo:
        row = self._query_one("SELECT id, name, origin, created_at FROM logs WHERE name = ?", name)
        if row is None:
            raise NotFoundError(f"no log named {name!r}")
        return LogInfo(*row)

    def list_logs(self) -> list[LogInfo]:
        rows = self._query("SELECT id, name, origin, created_at FROM logs ORDER BY id")
        return [LogInfo(*r) for r in rows]

    def add_key_event(self, log_id: int, event: KeyEvent) -> None:
        try:
            with self._write_lock:
                self._writer.execute(
                    "INSERT INTO log_keys (log_id, verifier, event, at) VALUES (?, ?, ?, ?)",
                    (log_id, event.verifier, event.event, event.at),
                )
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    def key_events(self, log_id: int) -> list[KeyEvent]:
        rows = self._query(
            "SELECT verifier, event, at FROM log_keys WHERE log_id = ? ORDER BY id", log_id
        )
        return [KeyEvent(*r) for r in rows]

    # -- writes ---------------------------------------------------------------------

    @contextmanager
    def write(self, log_id: int) -> Iterator[_SqliteWrite]:
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _storage_error(e) from e
            try:
                yield _SqliteWrite(conn, log_id)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback(conn)
                raise _storage_error(e) from e
            except BaseException:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                # SQLite may already have rolled back on its own (e.g. SQLITE_FULL);
                # the transaction is gone either way.
                if conn.in_transaction:
                    raise

    # -- reads ----------------------------------------------------------------------

    def _query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        try:
            return self._reader().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    def _query_one(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        rows = self._query(sql, *args)
        return rows[0] if rows else None

    def latest_checkpoint(self, log_id: int) -> StoredCheckpoint | None:
        row = self._query_one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE log_id = ?"  # noqa: S608 (constant columns)
            " ORDER BY tree_size DESC, id DESC LIMIT 1",
            log_id,
        )
        return _checkpoint(row) if row else None

    def checkpoint_at(self, log_id: int, tree_size: int) -> StoredCheckpoint | None:
        row = self._query_one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"  # noqa: S608 (constant columns)
            " WHERE log_id = ? AND tree_size = ? ORDER BY id LIMIT 1",
            log_id,
            tree_size,
        )
        return _checkpoint(row) if row else None

    def checkpoints(self, log_id: int) -> Iterator[StoredCheckpoint]:
        conn = self._reader()
        try:
            cur = conn.execute(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"  # noqa: S608 (constant columns)
                " WHERE log_id = ? ORDER BY id",
                (log_id,),
            )
            for row in cur:
                yield _checkpoint(row)
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    def read_tiles(self, log_id: int, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        try:
            return _read_tiles(self._reader(), log_id, keys)
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    def tile_chunks(self, log_id: int) -> Iterator[TileChunk]:
        conn = self._reader()
        try:
            cur = conn.execute(
                "SELECT level, idx, start, hashes FROM tiles WHERE log_id = ?"
                " ORDER BY level, idx, start",
                (log_id,),
            )
            for level, idx, start, hashes in cur:
                yield TileChunk(level, idx, start, hashes)
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    def read_entries(self, log_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        # Clamp to this log's rowid block: a negative start or an end past 2^40 would
        # otherwise reach into (or wrap around to) other logs' entries.
        start, end = max(start, 0), min(end, 1 << INDEX_BITS)
        if start >= end:
            return
        conn = self._reader()
        mask = (1 << INDEX_BITS) - 1
        try:
            cur = conn.execute(
                "SELECT id, data, source, event_id FROM entries WHERE id >= ? AND id < ?"
                " ORDER BY id",
                # end may be 2^40, which _rowid's OR would fold into this block's start.
                (_rowid(log_id, start), _rowid(log_id, 0) + end),
            )
            for rowid, data, source, event_id in cur:
                yield StoredEntry(rowid & mask, _blob(data), source, event_id)
        except sqlite3.Error as e:
            raise _storage_error(e) from e

    def find_entry(self, log_id: int, source: str, event_id: str) -> StoredEntry | None:
        row = self._query_one(
            "SELECT id, data FROM entries WHERE log_id = ? AND source = ? AND event_id = ?",
            log_id,
            source,
            event_id,
        )
        if row is None:
            return None
        rowid, data = row
        return StoredEntry(rowid & ((1 << INDEX_BITS) - 1), data, source, event_id)

    def entry_count(self, log_id: int) -> int:
        row = self._query_one(
            "SELECT count(*) FROM entries WHERE id >= ? AND id < ?",
            _rowid(log_id, 0),
            _rowid(log_id + 1, 0),
        )
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
