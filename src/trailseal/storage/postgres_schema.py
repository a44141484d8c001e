"""Managing a trailseal schema in PostgreSQL: versioned migration tracks and role grants.

Several components keep tables in one PostgreSQL schema, each with its own *track* of
numbered migrations recorded in its own table: the ledger store
(:mod:`trailseal.storage.postgres`, ``schema_migrations``) and the service registry
(:mod:`trailseal.service.registry_postgres`, ``registry_migrations``). Every track of a
schema migrates under the same advisory lock, ``(MIGRATE_LOCK, hashtext(schema))``:
processes starting together apply each migration once, and two tracks never race on
``CREATE SCHEMA IF NOT EXISTS`` (which is not safe against a concurrent twin).

These functions run on a connection the caller holds and leave psycopg errors to it,
so each caller words the failure in its own terms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from trailseal.errors import StorageError

MIGRATE_LOCK = 0x7453_0002
"""First key of the migration lock; the second is ``hashtext(schema)``."""

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
"""A PostgreSQL identifier we accept unquoted-looking: schema and role names."""


def applied_migrations(conn: psycopg.Connection[Any], schema: str, table: str) -> set[int]:
    """The versions recorded in ``schema.table`` (empty when the table does not exist)."""
    row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
    if not row or row[0] is None:
        return set()
    rows = conn.execute(
        sql.SQL("SELECT version FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    ).fetchall()
    return {int(r[0]) for r in rows}


def refuse_newer(schema: str, applied: set[int], known: int, *, what: str) -> None:
    """Refuse a schema migrated by a newer trailseal: this one cannot know its layout."""
    if applied and max(applied) > known:
        raise StorageError(
            f"schema {schema!r} has {what} version {max(applied)}; this trailseal "
            f"knows {known}. Upgrade trailseal to open it."
        )


def run_migrations(
    conn: psycopg.Connection[Any],
    schema: str,
    migrations: Sequence[Sequence[str]],
    *,
    table: str,
    what: str,
) -> list[int]:
    """Apply the pending ``migrations`` of one track in order, each recorded in ``table``.

    Call it inside a transaction: the advisory lock is held until that ends. Each
    migration is a list of statements in which ``{schema}`` stands for the quoted schema.
    Returns the versions applied now; when none is pending no DDL runs at all, so a
    service role without CREATE may call it.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", (MIGRATE_LOCK, schema))
    applied = applied_migrations(conn, schema, table)
    refuse_newer(schema, applied, len(migrations), what=what)
    if applied == set(range(1, len(migrations) + 1)):
        return []
    schema_id = sql.Identifier(schema)
    # Only when missing: even IF NOT EXISTS needs CREATE on the database, which an owner
    # role given a ready-made schema (CREATE SCHEMA x AUTHORIZATION owner) lacks.
    if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema_id))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(schema_id, sql.Identifier(table))
    )
    done: list[int] = []
    for version, steps in enumerate(migrations, start=1):
        if version in applied:
            continue
        for step in steps:
            # Statements are constants of the calling module; only the schema varies.
            conn.execute(sql.SQL(step).format(schema=schema_id))
        conn.execute(
            sql.SQL("INSERT INTO {}.{} (version) VALUES (%s)").format(
                schema_id, sql.Identifier(table)
            ),
            (version,),
        )
        done.append(version)
    return done


def open_pool(
    dsn: str, schema: str, *, name: str, min_size: int, max_size: int, timeout: float
) -> ConnectionPool[psycopg.Connection[Any]]:
    """An open pool of autocommit connections whose ``search_path`` is ``schema``.

    Waits for ``min_size`` connections; raises psycopg's error (a PoolTimeout is an
    OperationalError) for the caller to word.
    """
    schema_id = sql.Identifier(schema)

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(schema_id))

    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=configure,
        timeout=timeout,
        open=False,
        name=name,
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except psycopg.Error:
        pool.close()
        raise
    return pool


def check_identifiers(**names: str) -> None:
    """Refuse role or schema names that are not plain identifiers (``what=name``)."""
    for what, name in names.items():
        if not IDENTIFIER.fullmatch(name):
            raise StorageError(f"{what} name {name!r} must be letters, digits and underscores")


def apply_grants(
    conn_or_dsn: psycopg.Connection[Any] | str,
    role: str,
    statements: Sequence[sql.Composed],
    *,
    login: bool,
) -> None:
    """Create ``role`` when missing (LOGIN or NOLOGIN), then run ``statements``, in one
    transaction on ``conn_or_dsn`` (an autocommit connection, or a DSN to open one)."""

    def run(conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(
                        sql.Identifier(role)
                    )
                )
            for stmt in statements:
                conn.execute(stmt)

    if isinstance(conn_or_dsn, str):
        with psycopg.connect(conn_or_dsn, autocommit=True) as conn:
            run(conn)
    else:
        run(conn_or_dsn)


__all__ = [
    "IDENTIFIER",
    "MIGRATE_LOCK",
    "applied_migrations",
    "apply_grants",
    "check_identifiers",
    "open_pool",
    "refuse_newer",
    "run_migrations",
]
