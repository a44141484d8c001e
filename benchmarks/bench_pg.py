"""PostgreSQL helpers shared by the benchmark scripts (``run.py``, ``http_ingest.py``).

The benchmarks put everything they write in schemas of their own, named after the run
(``bench_<8 hex>_<tag>``), and drop them when the run ends, so a shared database (the
test database, say) is left as it was. Proof-latency logs may be kept between runs in
schemas of a fixed name, as the SQLite ones are kept in ``benchmarks/.cache``.

Nothing here prints a connection string: it may hold a password.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from trailseal.storage.postgres import PostgresStorage
from trailseal.storage.urls import redact

DEFAULT_DSN = os.environ.get(
    "TRAILSEAL_BENCH_POSTGRES_DSN",
    os.environ.get("TRAILSEAL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
)
"""The database the benchmarks use unless told otherwise (the tests' database)."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "max_connections",
)
"""Server settings recorded with every run: they decide what a commit costs."""


def unreachable(dsn: str) -> str:
    """Why PostgreSQL at ``dsn`` cannot be used, or "" when it answers."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # any failure to connect is a reason to report, not a crash
        return f"{type(e).__name__}: {str(e).strip()[:200]}"
    return ""


def check_identifier(name: str) -> str:
    """``name`` if it is a plain lower-case PostgreSQL identifier, else SystemExit."""
    if not _IDENTIFIER.fullmatch(name):
        raise SystemExit(
            f"schema name {name!r} must be lower-case letters, digits and underscores "
            "(at most 63 characters)"
        )
    return name


def store_url(dsn: str, schema: str) -> str:
    """The storage URL (``trailseal init --storage``) of ``schema`` in the database."""
    parts = urlsplit(dsn)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


def server_settings(dsn: str) -> dict[str, Any]:
    """The settings of :data:`SETTINGS`, and the database's address without password."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        out: dict[str, Any] = {"dsn": redact(dsn)}
        for name in SETTINGS:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            out[name] = row[0] if row else None
        return out


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def drop_schemas(dsn: str, schemas: Sequence[str]) -> None:
    """``DROP SCHEMA ... CASCADE`` each of ``schemas`` that exists."""
    if not schemas:
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(check_identifier(schema))
                )
            )


def rename_schema(dsn: str, old: str, new: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(check_identifier(old)), sql.Identifier(check_identifier(new))
            )
        )


def schema_bytes(dsn: str, schema: str) -> dict[str, int]:
    """Bytes of every table of ``schema`` with its indexes and TOAST, largest first."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 2 DESC",
            (schema,),
        ).fetchall()
    return {str(name): int(size) for name, size in rows}


class Scratch:
    """The schemas of one benchmark run: ``bench_<run id>_<tag>``, all dropped by
    :meth:`drop_all` (the scripts call it in a ``finally``)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prefix = f"bench_{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    @classmethod
    def open(cls, dsn: str, why: str) -> Scratch:
        """The scratch schemas of a run on ``dsn``; SystemExit saying what to do when
        PostgreSQL does not answer (``why`` names the option that asked for it). From
        now on SIGTERM exits through ``finally`` blocks, which drop the schemas."""
        problem = unreachable(dsn)
        if problem:
            raise SystemExit(
                f"{why}: PostgreSQL at {redact(dsn)} is not reachable ({problem}); "
                "start it or pass --postgres-dsn"
            )
        # SIGTERM would end the process without running the callers' ``finally``
        # blocks, leaving the run's schemas behind: make it a SystemExit instead.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        return cls(dsn)

    def schema(self, tag: str) -> str:
        """A new schema name for ``tag`` (the schema itself is made by whoever opens it)."""
        name = check_identifier(f"{self.prefix}_{tag}".lower())
        if name in self.made:
            raise SystemExit(f"benchmark bug: schema {name} used twice in one run")
        self.made.append(name)
        return name

    def storage(self, schema: str, *, migrate: bool = True) -> PostgresStorage:
        """A small-pool store in ``schema`` (one benchmark thread needs one connection)."""
        return PostgresStorage(self.dsn, schema=schema, min_size=1, max_size=2, migrate=migrate)

    def drop(self, schema: str) -> None:
        drop_schemas(self.dsn, [schema])

    def drop_all(self) -> None:
        """Drop every schema this run made, and any other of its prefix (belt and braces)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                (self.prefix + "_",),
            ).fetchall()
        drop_schemas(self.dsn, sorted({*self.made, *(str(r[0]) for r in rows)}))


def bench_floor(dsn: str, schema: str, data: Sequence[bytes], batch: int) -> float:
    """The PostgreSQL floor: the same bytes into ``(id bigint PRIMARY KEY, data bytea)``,
    one transaction per batch, ``COPY`` (as ``PostgresStorage`` writes entries)."""
    ident = sql.Identifier(check_identifier(schema))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(
            sql.SQL("CREATE TABLE {}.entries (id bigint PRIMARY KEY, data bytea)").format(ident)
        )
        copy_in = sql.SQL("COPY {}.entries (id, data) FROM STDIN").format(ident)
        next_id = 0
        start = time.perf_counter()
        for i in range(0, len(data), batch):
            group = data[i : i + batch]
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_in) as copy:
                for j, d in enumerate(group):
                    copy.write_row((next_id + j, d))
            next_id += len(group)
        elapsed = time.perf_counter() - start
    return len(data) / elapsed


__all__ = [
    "DEFAULT_DSN",
    "Scratch",
    "bench_floor",
    "drop_schemas",
    "rename_schema",
    "schema_bytes",
    "schema_exists",
    "server_settings",
    "store_url",
    "unreachable",
]
