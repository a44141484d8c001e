"""A PostgreSQL store for several service processes sharing one database.

Install with ``pip install 'trailseal[postgres]'`` (psycopg 3 and psycopg-pool).

Layout: every table lives in its own schema (``trailseal`` unless told otherwise), so one
database can hold several independent stores and tests can drop theirs with a single
``DROP SCHEMA ... CASCADE``:

- ``logs``, ``log_keys``: logs and their verifier-key history.
- ``entries``: ``(log_id, idx)`` is the primary key; ``(log_id, source, event_id)`` is
  unique where ``event_id`` is set (the idempotency key).
- ``tiles``: hash-tile chunks ``(log_id, level, idx, start, hashes)``; a tile is its
  chunks concatenated in ``start`` order.
- ``checkpoints``: signed checkpoints, in the order they were stored (``id``).
- ``schema_migrations``: which numbered migrations have been applied (their statements:
  :mod:`trailseal.storage.postgres_migrations`).

The service registry (:mod:`trailseal.service.registry_postgres`) keeps its own tables and
migration track in the same schema; see :mod:`trailseal.storage.postgres_schema`.

Append-only in the engine (DESIGN §6): a trigger rejects UPDATE and DELETE on every
table, and a statement trigger rejects TRUNCATE. The owner can still drop the triggers,
so a service should run as a role made by :func:`grant_service_role`, which may only
SELECT and INSERT: it cannot rewrite history even with the triggers gone.

Concurrency: :meth:`PostgresStorage.write` takes the log's advisory write lock first, so
writers of one log are serialized across every process and the lock is released by the
transaction's end (commit, rollback or a dropped connection). Advisory locks are
database-wide, so every key names the schema (:func:`lock_key`): stores in other schemas
of the same database, whose log ids are the same small numbers, never wait for this one.
Migrations run under a schema-specific advisory lock, so two processes starting together
are safe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from trailseal.core.tiles import TileChunk, TileKey
from trailseal.errors import AlreadyExistsError, NotFoundError, StorageError
from trailseal.storage.base import (
    IdempotencyKey,
    KeyEvent,
    LogInfo,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
    join_tile_chunks,
)
from trailseal.storage.postgres_migrations import MIGRATIONS, SCHEMA_VERSION
from trailseal.storage.postgres_schema import (
    IDENTIFIER,
    MIGRATE_LOCK,
    applied_migrations,
    apply_grants,
    check_identifiers,
    open_pool,
    refuse_newer,
    run_migrations,
)

WRITE_LOCK = 0x7453_0001
"""Kind of the per-log write lock
``pg_advisory_xact_lock(hashtext(lock_key(WRITE_LOCK, schema)), log_id)``."""

_PAGE = 1000
"""Rows fetched per query by the iterating reads (no connection is held between pages)."""
_MAX_INDEX = (1 << 63) - 1

_CHECKPOINT_COLUMNS = "id, tree_size, root_hash, note, signed_at"


def lock_key(kind: int, schema: str) -> str:
    """The text whose ``hashtext()`` is the first key of an advisory lock of ``kind`` in
    ``schema``; the second key is the log id (or the hashed name of what is locked).

    PostgreSQL's advisory locks belong to the database, not to a schema: a key of the
    kind and the log id alone would make a store wait for (or, for the integrator lock,
    never get) the lock of another store's log with the same id.
    """
    return f"trailseal:{kind:#x}:{schema}"


def storage_error(e: psycopg.Error, doing: str) -> StorageError:
    """A :class:`StorageError` for a psycopg error, never quoting bound values.

    Only the SQLSTATE and the server's primary message are used; the latter names
    constraints and tables but not values, except for data exceptions (class 22), whose
    text is left out.
    """
    diag = getattr(e, "diag", None)
    state = (diag.sqlstate if diag else None) or getattr(e, "sqlstate", None) or ""
    primary = (diag.message_primary if diag else None) or ""
    if isinstance(e, psycopg.OperationalError) and not state:
        # Connection and pool failures: the message is the client's, without parameters.
        return StorageError(f"PostgreSQL is unavailable while {doing} ({e}); retry shortly")
    if state.startswith("22"):
        return StorageError(f"PostgreSQL refused a value while {doing} (SQLSTATE {state})")
    if state in ("40001", "40P01", "55P03", "57014"):
        return StorageError(f"PostgreSQL aborted {doing} (SQLSTATE {state}: {primary}); retry")
    if state.startswith("08"):
        return StorageError(f"lost the PostgreSQL connection while {doing}; retry shortly")
    if state == "53100":
        return StorageError(f"PostgreSQL is out of disk space while {doing}; free space, retry")
    return StorageError(f"PostgreSQL failed while {doing} (SQLSTATE {state or '?'}): {primary}")


def _checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]), row[4])


def _read_tiles(
    conn: psycopg.Connection[Any], log_id: int, keys: Sequence[TileKey]
) -> dict[TileKey, bytes]:
    """The tiles of ``keys`` in one statement (a cold proof's 2-4 tiles, an append's
    edge tiles: one round trip, not one each).

    One key, the usual case for a warm proof or a tile fetch, takes the plain lookup:
    the batched form costs more to execute than the round trip it saves on a local
    socket (about 130 against 60 us, measured). For several, the LATERAL subquery is an
    index lookup on ``(log_id, level, idx, start)`` per key; its ORDER BY keeps the
    planner from flattening it into a join, which on a freshly loaded, not yet analyzed
    table it runs as a scan of every tile of the log.
    """
    wanted = list(dict.fromkeys(keys))  # a key asked twice would join its chunks twice
    if not wanted:
        return {}
    if len(wanted) == 1:
        level, index = wanted[0]
        found = conn.execute(
            "SELECT start, hashes FROM tiles WHERE log_id = %s AND level = %s AND idx = %s"
            " ORDER BY start",
            (log_id, level, index),
        ).fetchall()
        return {(level, index): join_tile_chunks(level, index, found)} if found else {}
    rows = conn.execute(
        "SELECT k.level, k.idx, t.start, t.hashes"
        " FROM unnest(%s::integer[], %s::bigint[]) AS k(level, idx),"
        " LATERAL (SELECT start, hashes FROM tiles"
        "  WHERE log_id = %s AND level = k.level AND idx = k.idx ORDER BY start) AS t",
        ([level for level, _ in wanted], [index for _, index in wanted], log_id),
    ).fetchall()
    chunks: dict[TileKey, list[tuple[int, bytes]]] = {}
    for level, index, start, hashes in rows:
        chunks.setdefault((int(level), int(index)), []).append((int(start), hashes))
    return {
        key: join_tile_chunks(key[0], key[1], sorted(found, key=lambda c: c[0]))
        for key, found in chunks.items()
    }


class _PostgresWrite:
    """The transaction holds the log's write lock, so what it learns of the tree size and
    of the log's existence stays true until it ends: both are read once, which saves
    round trips when several checkpoints are appended in one transaction (copy-log)."""

    def __init__(self, conn: psycopg.Connection[Any], log_id: int) -> None:
        self._conn = conn
        self._log_id = log_id
        self._size: int | None = None
        self._log_exists = False

    def tree_size(self) -> int:
        if self._size is None:
            row = self._conn.execute(
                "SELECT max(tree_size) FROM checkpoints WHERE log_id = %s", (self._log_id,)
            ).fetchone()
            self._size = int(row[0] or 0) if row else 0
        return self._size

    def read_tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return _read_tiles(self._conn, self._log_id, keys)

    def find_entries(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, StoredEntry]:
        # One probe of the unique index per key, all in one query. The LATERAL ... LIMIT 1
        # cannot be flattened into a join, so each key is an equality on all three
        # columns of the index whatever the statistics say. A plain ``event_id = ANY(%s)``
        # was planned, before ANALYZE (a young or fast-growing log), as a scan of the index
        # on (log_id, source) with event_id filtered in the heap: it read every entry of
        # the source, and each append cost O(log size).
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        rows = self._conn.execute(
            "SELECT k.source, k.event_id, e.idx, e.data"
            " FROM unnest(%s::text[], %s::text[]) AS k(source, event_id)"
            " CROSS JOIN LATERAL (SELECT idx, data FROM entries"
            "  WHERE log_id = %s AND source = k.source AND event_id = k.event_id LIMIT 1) e",
            ([k[0] for k in unique], [k[1] for k in unique], self._log_id),
        ).fetchall()
        return {
            (source, event_id): StoredEntry(int(idx), bytes(data), source, event_id)
            for source, event_id, idx, data in rows
        }

    def append(
        self,
        first_index: int,
        entries: Sequence[NewEntry],
        chunks: Sequence[TileChunk],
        checkpoint: StoredCheckpoint,
    ) -> None:
        size = self.tree_size()
        if first_index != size:
            raise StorageError(f"append at index {first_index}, but the log's tree size is {size}")
        log_id = self._log_id
        if not self._log_exists:
            if not self._conn.execute("SELECT 1 FROM logs WHERE id = %s", (log_id,)).fetchone():
                raise StorageError(f"no log with id {log_id}")
            self._log_exists = True
        with self._conn.cursor() as cur:
            # COPY rather than executemany: one stream instead of a statement per row
            # (about 3x faster for a batch of 1,000 entries). Constraint violations (a
            # duplicate index or idempotency key) abort it just the same. (COPY cannot
            # run in a pipeline, so the three writes are three round trips.)
            if entries:
                with cur.copy(
                    "COPY entries (log_id, idx, data, source, event_id) FROM STDIN"
                ) as copy:
                    for i, e in enumerate(entries):
                        copy.write_row((log_id, first_index + i, e.data, e.source, e.event_id))
            if chunks:
                with cur.copy("COPY tiles (log_id, level, idx, start, hashes) FROM STDIN") as copy:
                    for c in chunks:
                        copy.write_row((log_id, c.level, c.index, c.start, c.hashes))
            cur.execute(
                "INSERT INTO checkpoints (log_id, tree_size, root_hash, note, signed_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (
                    log_id,
                    checkpoint.tree_size,
                    checkpoint.root_hash,
                    checkpoint.note,
                    checkpoint.signed_at,
                ),
            )
        self._size = max(size, checkpoint.tree_size)


class PostgresStorage:
    """:class:`~trailseal.storage.base.Storage` on PostgreSQL, in one schema of a database.

    ``dsn`` is a libpq connection string or URI. Unless ``migrate`` is false, the schema
    and its tables are created or brought up to date on construction (idempotent, and
    safe when several processes start at once). A service role that may only SELECT and
    INSERT can open a store whose migrations are already applied.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "trailseal",
        min_size: int = 1,
        max_size: int = 8,
        migrate: bool = True,
        timeout: float = 30.0,
    ) -> None:
        if not IDENTIFIER.fullmatch(schema):
            raise StorageError(
                f"schema name {schema!r} must be letters, digits and underscores (at most 63)"
            )
        self.schema = schema
        self.dsn = dsn
        """The connection string (it may hold a password: never log it)."""
        self.applied_now: list[int] = []
        """Migrations this constructor applied (``trailseal migrate-db`` reports them)."""
        self._schema_id = sql.Identifier(schema)
        try:
            self._pool = open_pool(
                dsn,
                schema,
                name=f"trailseal-{schema}",
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
            )
        except psycopg.Error as e:
            raise storage_error(e, "connecting") from e
        try:
            if migrate:
                self.applied_now = self.migrate()
            else:
                self._check_version()
        except BaseException:
            self.close()
            raise

    # -- migrations -----------------------------------------------------------------

    def _check_version(self) -> None:
        try:
            with self._pool.connection() as conn:
                applied = applied_migrations(conn, self.schema, "schema_migrations")
        except psycopg.Error as e:
            raise storage_error(e, "reading the schema version") from e
        refuse_newer(self.schema, applied, SCHEMA_VERSION, what="schema")
        if applied != set(range(1, SCHEMA_VERSION + 1)):
            raise StorageError(
                f"schema {self.schema!r} is not migrated to version {SCHEMA_VERSION};"
                " run `trailseal migrate-db` as the schema owner role"
            )

    def migrate(self) -> list[int]:
        """Apply the pending migrations in order, each recorded in ``schema_migrations``.

        Runs in one transaction under an advisory lock; returns the versions applied now
        (empty when the schema was already up to date).
        """
        try:
            with self._pool.connection() as conn, conn.transaction():
                return run_migrations(
                    conn, self.schema, MIGRATIONS, table="schema_migrations", what="schema"
                )
        except psycopg.Error as e:
            raise storage_error(e, "migrating the schema") from e

    # -- logs and keys --------------------------------------------------------------

    def create_log(self, name: str, origin: str, created_at: str) -> LogInfo:
        try:
            with self._pool.connection() as conn:
                row = conn.execute(
                    "INSERT INTO logs (name, origin, created_at) VALUES (%s, %s, %s) RETURNING id",
                    (name, origin, created_at),
                ).fetchone()
        except psycopg.errors.UniqueViolation as e:
            raise AlreadyExistsError(
                f"a log named {name!r} or with origin {origin!r} already exists"
            ) from e
        except psycopg.Error as e:
            raise storage_error(e, "creating a log") from e
        assert row is not None
        return LogInfo(int(row[0]), name, origin, created_at)

    def get_log(self, name: str) -> LogInfo:
        row = self._query_one("SELECT id, name, origin, created_at FROM logs WHERE name = %s", name)
        if row is None:
            raise NotFoundError(f"no log named {name!r}")
        return LogInfo(*row)

    def list_logs(self) -> list[LogInfo]:
        rows = self._query("SELECT id, name, origin, created_at FROM logs ORDER BY id")
        return [LogInfo(*r) for r in rows]

    def add_key_event(self, log_id: int, event: KeyEvent) -> None:
        try:
            with self._pool.connection() as conn:
                conn.execute(
                    "INSERT INTO log_keys (log_id, verifier, event, at) VALUES (%s, %s, %s, %s)",
                    (log_id, event.verifier, event.event, event.at),
                )
        except psycopg.Error as e:
            raise storage_error(e, "recording a key event") from e

    def key_events(self, log_id: int) -> list[KeyEvent]:
        rows = self._query(
            "SELECT verifier, event, at FROM log_keys WHERE log_id = %s ORDER BY id", log_id
        )
        return [KeyEvent(*r) for r in rows]

    # -- writes ---------------------------------------------------------------------

    @contextmanager
    def write(self, log_id: int) -> Iterator[_PostgresWrite]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                # The per-log write lock, held until this transaction ends.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s), %s::integer)",
                    (lock_key(WRITE_LOCK, self.schema), log_id),
                )
                yield _PostgresWrite(conn, log_id)
        except psycopg.Error as e:
            raise storage_error(e, "writing to the log") from e

    @contextmanager
    def connection(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit, search_path set); psycopg errors become
        :class:`StorageError` naming ``doing``."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as e:
            raise storage_error(e, doing) from e

    # -- reads ----------------------------------------------------------------------

    def _query(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(query, args).fetchall()
        except psycopg.Error as e:
            raise storage_error(e, "reading") from e

    def _query_one(self, query: str, *args: object) -> tuple[Any, ...] | None:
        rows = self._query(query, *args)
        return rows[0] if rows else None

    def latest_checkpoint(self, log_id: int) -> StoredCheckpoint | None:
        row = self._query_one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE log_id = %s"  # noqa: S608 (constant columns)
            " ORDER BY tree_size DESC, id DESC LIMIT 1",
            log_id,
        )
        return _checkpoint(row) if row else None

    def checkpoint_at(self, log_id: int, tree_size: int) -> StoredCheckpoint | None:
        if not 0 <= tree_size <= _MAX_INDEX:
            return None
        row = self._query_one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"  # noqa: S608 (constant columns)
            " WHERE log_id = %s AND tree_size = %s ORDER BY id LIMIT 1",
            log_id,
            tree_size,
        )
        return _checkpoint(row) if row else None

    def checkpoints(self, log_id: int) -> Iterator[StoredCheckpoint]:
        after = 0
        while True:
            rows = self._query(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"  # noqa: S608 (constant columns)
                " WHERE log_id = %s AND id > %s ORDER BY id LIMIT %s",
                log_id,
                after,
                _PAGE,
            )
            for row in rows:
                yield _checkpoint(row)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def read_tiles(self, log_id: int, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        try:
            with self._pool.connection() as conn:
                return _read_tiles(conn, log_id, keys)
        except psycopg.Error as e:
            raise storage_error(e, "reading tiles") from e

    def tile_chunks(self, log_id: int) -> Iterator[TileChunk]:
        after = (-1, -1, -1)
        while True:
            rows = self._query(
                "SELECT level, idx, start, hashes FROM tiles"
                " WHERE log_id = %s AND (level, idx, start) > (%s, %s, %s)"
                " ORDER BY level, idx, start LIMIT %s",
                log_id,
                *after,
                _PAGE,
            )
            for level, idx, start, hashes in rows:
                yield TileChunk(int(level), int(idx), int(start), bytes(hashes))
            if len(rows) < _PAGE:
                return
            last = rows[-1]
            after = (int(last[0]), int(last[1]), int(last[2]))

    def read_entries(self, log_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        start, end = max(start, 0), min(end, _MAX_INDEX)
        while start < end:
            rows = self._query(
                "SELECT idx, data, source, event_id FROM entries"
                " WHERE log_id = %s AND idx >= %s AND idx < %s ORDER BY idx LIMIT %s",
                log_id,
                start,
                end,
                _PAGE,
            )
            for idx, data, source, event_id in rows:
                yield StoredEntry(int(idx), bytes(data), source, event_id)
            if len(rows) < _PAGE:
                return
            start = int(rows[-1][0]) + 1

    def find_entry(self, log_id: int, source: str, event_id: str) -> StoredEntry | None:
        row = self._query_one(
            "SELECT idx, data FROM entries WHERE log_id = %s AND source = %s AND event_id = %s",
            log_id,
            source,
            event_id,
        )
        if row is None:
            return None
        return StoredEntry(int(row[0]), bytes(row[1]), source, event_id)

    def entry_count(self, log_id: int) -> int:
        row = self._query_one("SELECT count(*) FROM entries WHERE log_id = %s", log_id)
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self._pool.close()


def grant_service_role(
    conn_or_dsn: psycopg.Connection[Any] | str,
    role: str,
    *,
    schema: str = "trailseal",
    login: bool = False,
) -> None:
    """Create ``role`` if missing and let it use the store in ``schema``, and nothing else.

    The role gets USAGE on the schema, SELECT and INSERT on its tables and USAGE on its
    sequences: it can append and read, but never UPDATE, DELETE or TRUNCATE, even if the
    append-only triggers were dropped. Run it as the schema owner, after
    :meth:`PostgresStorage.migrate`. With ``login`` false the role is a group role: grant
    it to the service's login user (``GRANT role TO app_user``).
    """
    check_identifiers(role=role, schema=schema)
    r, s = sql.Identifier(role), sql.Identifier(schema)
    statements = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
        sql.SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r),
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r),
        # The integrator's work queue is not history: it marks and purges its rows.
        sql.SQL("GRANT UPDATE, DELETE ON {}.pending TO {}").format(s, r),
    ]

    try:
        apply_grants(conn_or_dsn, role, statements, login=login)
    except psycopg.Error as e:
        raise storage_error(e, f"granting {role!r} access") from e


__all__ = [
    "MIGRATE_LOCK",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PostgresStorage",
    "grant_service_role",
    "lock_key",
    "storage_error",
]
