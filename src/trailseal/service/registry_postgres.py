"""The service registry in PostgreSQL, shared by every node of a service.

Install with ``pip install 'trailseal[postgres]'`` (psycopg 3 and psycopg-pool).

The registry's tables live in the ledger store's schema (:mod:`trailseal.storage.postgres`),
under names the store does not use: ``tenants``, ``tenant_logs``, ``api_keys``,
``content``, ``poll_state``, ``report_files`` and ``link_keys``. They have their own
migration track, recorded in ``registry_migrations`` and applied under the schema's migration lock
(:mod:`trailseal.storage.postgres_schema`), so nodes starting together are safe.

Text columns that the registry sorts by are ``COLLATE "C"``: lists come out in the same
byte order as from SQLite, whatever the database's default collation.

Unlike the ledger's, these tables are mutable, but only where the registry needs it:
:func:`grant_registry_role` lets a service role SELECT and INSERT, and UPDATE only
``api_keys.revoked_at`` (revocation) and ``poll_state``'s state; it never deletes.
``report_files`` and ``link_keys`` are INSERT-only through the grants alone: unlike
the ledger's history tables they carry no triggers, so the owner can still prune old
reports and revoke a download-link key by deleting its row; a report file altered here
is caught by the SHA-256 the log recorded.

Across nodes: a tenant name is claimed by one ``INSERT ... ON CONFLICT DO NOTHING``, so
exactly one of two concurrent creators wins; a revocation on one node reaches the
others' authentication caches within :data:`~trailseal.service.registry.AUTH_CACHE_S`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from trailseal.errors import AlreadyExistsError, StorageError
from trailseal.storage.postgres import storage_error
from trailseal.storage.postgres_schema import (
    applied_migrations,
    apply_grants,
    check_identifiers,
    open_pool,
    refuse_newer,
    run_migrations,
)
from trailseal.storage.urls import DEFAULT_SCHEMA

MIGRATIONS_TABLE = "registry_migrations"
"""Where the registry's track records its applied migrations."""

REGISTRY_TABLES = (
    "tenants",
    "tenant_logs",
    "api_keys",
    "content",
    "poll_state",
    "report_files",
    "link_keys",
)
"""The registry's tables (besides :data:`MIGRATIONS_TABLE`)."""

# Each migration is a list of statements; ``{schema}`` is replaced by the quoted schema.
REGISTRY_MIGRATIONS: list[list[str]] = [
    # 1: the layout of SQLite's service.db, with PostgreSQL types and foreign keys.
    [
        """CREATE TABLE {schema}.tenants (
            name text COLLATE "C" PRIMARY KEY,
            created_at text NOT NULL
        )""",
        """CREATE TABLE {schema}.tenant_logs (
            tenant text COLLATE "C" NOT NULL REFERENCES {schema}.tenants (name),
            name text COLLATE "C" NOT NULL,
            ledger_log text NOT NULL UNIQUE,
            capture_content boolean NOT NULL DEFAULT false,
            created_at text NOT NULL,
            PRIMARY KEY (tenant, name)
        )""",
        """CREATE TABLE {schema}.api_keys (
            key_id text PRIMARY KEY,
            tenant text COLLATE "C" NOT NULL REFERENCES {schema}.tenants (name),
            role text NOT NULL,
            operator boolean NOT NULL DEFAULT false,
            secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
            description text NOT NULL DEFAULT '',
            created_at text COLLATE "C" NOT NULL,
            revoked_at text
        )""",
        "CREATE INDEX api_keys_tenant ON {schema}.api_keys (tenant, created_at)",
        """CREATE TABLE {schema}.poll_state (
            name text PRIMARY KEY,
            state text NOT NULL,
            updated_at text NOT NULL
        )""",
        """CREATE TABLE {schema}.content (
            ref text PRIMARY KEY,
            tenant text NOT NULL,
            log text NOT NULL,
            nonce bytea NOT NULL,
            ciphertext bytea NOT NULL,
            created_at text NOT NULL
        )""",
    ],
    # 2: what nodes behind one load balancer share for the /audit app: the report files
    # (so any node serves a download link) and the nodes' public link keys (so any node
    # checks a link another signed). INSERT-only by grant: a file is never rewritten, a
    # rebuilt one is stored beside it; a key is revoked by the owner deleting its row.
    [
        """CREATE TABLE {schema}.report_files (
            rid text NOT NULL,
            name text NOT NULL,
            sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
            seq integer NOT NULL CHECK (seq >= 0),
            data bytea NOT NULL,
            created_at text NOT NULL,
            PRIMARY KEY (rid, name, sha256, seq)
        )""",
        """CREATE TABLE {schema}.link_keys (
            key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{{16}}$'),
            public_key bytea NOT NULL CHECK (length(public_key) = 32),
            created_at text NOT NULL
        )""",
    ],
]
REGISTRY_SCHEMA_VERSION = len(REGISTRY_MIGRATIONS)


def _placeholders(query: str) -> str:
    """The registry's ``?`` placeholders as psycopg's ``%s``.

    Its statements are constants of :mod:`trailseal.service.registry` holding neither a
    literal ``?`` nor a ``%``, so this substitution is exact.
    """
    return query.replace("?", "%s")


class _PostgresTransaction:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, query: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(_placeholders(query), args).rowcount

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_placeholders(query), rows)


class PostgresRegistryDatabase:
    """The registry's :class:`~trailseal.service.registry.RegistryDatabase` in one schema.

    ``dsn`` is a libpq connection string or URI. With ``migrate`` the registry's
    migrations are applied on construction; without, a schema that is behind is refused
    (a service role that may not run DDL opens a migrated schema either way).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        migrate: bool = True,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 30.0,
    ) -> None:
        check_identifiers(schema=schema)
        self.schema = schema
        self.applied_now: list[int] = []
        """Migrations this constructor applied (``trailseal migrate-db`` reports them)."""
        try:
            self._pool = open_pool(
                dsn,
                schema,
                name=f"trailseal-registry-{schema}",
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
            )
        except psycopg.Error as e:
            raise storage_error(e, "connecting to the service registry") from e
        try:
            if migrate:
                self.applied_now = self.migrate()
            else:
                self._check_version()
        except BaseException:
            self.close()
            raise

    def migrate(self) -> list[int]:
        """Apply the registry's pending migrations (see
        :func:`~trailseal.storage.postgres_schema.run_migrations`); returns those applied."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                return run_migrations(
                    conn,
                    self.schema,
                    REGISTRY_MIGRATIONS,
                    table=MIGRATIONS_TABLE,
                    what="registry schema",
                )
        except psycopg.Error as e:
            raise storage_error(e, "migrating the service registry") from e

    def _check_version(self) -> None:
        try:
            with self._pool.connection() as conn:
                applied = applied_migrations(conn, self.schema, MIGRATIONS_TABLE)
        except psycopg.Error as e:
            raise storage_error(e, "reading the service registry's version") from e
        refuse_newer(self.schema, applied, REGISTRY_SCHEMA_VERSION, what="registry schema")
        if applied != set(range(1, REGISTRY_SCHEMA_VERSION + 1)):
            raise StorageError(
                f"the service registry in schema {self.schema!r} is at version"
                f" {max(applied, default=0)}, this trailseal needs"
                f" {REGISTRY_SCHEMA_VERSION}; run `trailseal migrate-db` as the schema owner"
            )

    @contextmanager
    def transaction(self) -> Iterator[_PostgresTransaction]:
        """A transaction on one pooled connection (READ COMMITTED)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _PostgresTransaction(conn)
        except psycopg.errors.UniqueViolation as e:
            primary = e.diag.message_primary or "a unique constraint"
            raise AlreadyExistsError(f"already exists: {primary}") from e
        except psycopg.Error as e:
            raise storage_error(e, "writing to the service registry") from e

    def rows(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement, on a pooled connection."""
        try:
            with self._pool.connection() as conn:
                return conn.execute(_placeholders(query), args).fetchall()
        except psycopg.Error as e:
            raise storage_error(e, "reading the service registry") from e

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


def grant_registry_role(
    conn_or_dsn: psycopg.Connection[Any] | str,
    role: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    login: bool = False,
) -> None:
    """Create ``role`` if missing and let it use the registry in ``schema``, and no more.

    The role may SELECT and INSERT on the registry's tables, read its migration table,
    and UPDATE only ``api_keys (revoked_at)`` and ``poll_state (state, updated_at)``
    (the only updates the registry makes): it can neither delete a tenant nor alter
    stored content, a report file, a shared secret or a key's role. Privileges it held
    on these tables before are revoked first, so run this after
    :func:`~trailseal.storage.postgres.grant_service_role` (which grants INSERT on
    every table of the schema, migration tables included). Run it as the schema owner,
    after the registry's migrations.
    """
    check_identifiers(role=role, schema=schema)
    r = sql.Identifier(role)
    tables = sql.SQL(", ").join(sql.Identifier(schema, t) for t in REGISTRY_TABLES)
    migrations = sql.Identifier(schema, MIGRATIONS_TABLE)
    statements = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), r),
        sql.SQL("REVOKE ALL ON {}, {} FROM {}").format(tables, migrations, r),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(tables, r),
        sql.SQL("GRANT SELECT ON {} TO {}").format(migrations, r),
        sql.SQL("GRANT UPDATE (revoked_at) ON {} TO {}").format(
            sql.Identifier(schema, "api_keys"), r
        ),
        sql.SQL("GRANT UPDATE (state, updated_at) ON {} TO {}").format(
            sql.Identifier(schema, "poll_state"), r
        ),
    ]

    def grant(conn: psycopg.Connection[Any]) -> None:
        if applied_migrations(conn, schema, MIGRATIONS_TABLE) != set(
            range(1, REGISTRY_SCHEMA_VERSION + 1)
        ):
            raise StorageError(
                f"the service registry in schema {schema!r} is not migrated to version"
                f" {REGISTRY_SCHEMA_VERSION}; run `trailseal migrate-db` before granting access"
            )
        apply_grants(conn, role, statements, login=login)

    try:
        if isinstance(conn_or_dsn, str):
            with psycopg.connect(conn_or_dsn, autocommit=True) as conn:
                grant(conn)
        else:
            grant(conn_or_dsn)
    except psycopg.Error as e:
        raise storage_error(e, f"granting {role!r} access to the service registry") from e


__all__ = [
    "MIGRATIONS_TABLE",
    "REGISTRY_MIGRATIONS",
    "REGISTRY_SCHEMA_VERSION",
    "REGISTRY_TABLES",
    "PostgresRegistryDatabase",
    "grant_registry_role",
]
