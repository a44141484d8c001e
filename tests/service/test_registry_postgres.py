"""PostgreSQL-only checks of the registry: its migration track beside the ledger store's,
a least-privilege service role, and a database that is down.

The contract (``test_registry.py``) already runs on PostgreSQL; these tests reach around
the registry with raw SQL. Skipped when PostgreSQL is not reachable (``tests/conftest.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from tests.conftest import drop_schema, postgres_dsn
from tests.service.test_registry import run_together
from trailseal.errors import AlreadyExistsError, NotFoundError, StorageError
from trailseal.policy.content import StoredBody
from trailseal.service.registry import Registry, TenantLog, open_registry
from trailseal.service.registry_postgres import (
    MIGRATIONS_TABLE,
    REGISTRY_SCHEMA_VERSION,
    REGISTRY_TABLES,
    PostgresRegistryDatabase,
    grant_registry_role,
)
from trailseal.slackapp.links import link_key_id
from trailseal.storage.postgres import SCHEMA_VERSION, PostgresStorage, grant_service_role
from trailseal.storage.urls import StorageUrl

AT = "2025-01-01T00:00:00.000000Z"

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def schema() -> Iterator[str]:
    postgres_dsn()  # skip when unreachable
    name = f"t_{uuid.uuid4().hex}"
    yield name
    drop_schema(name)


@pytest.fixture
def owner(schema: str) -> Iterator[Conn]:
    """A raw autocommit connection as the schema owner, with the schema on its path."""
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield conn


@pytest.fixture
def role() -> Iterator[str]:
    name = f"svc_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def url(schema: str, dsn: str | None = None) -> StorageUrl:
    return StorageUrl("postgresql", dsn=dsn or postgres_dsn(), schema=schema)


def versions(conn: Conn, schema: str, table: str) -> list[int]:
    rows = conn.execute(
        sql.SQL("SELECT version FROM {} ORDER BY version").format(sql.Identifier(schema, table))
    ).fetchall()
    return [int(r[0]) for r in rows]


# -- migrations ---------------------------------------------------------------------------


def test_registry_and_ledger_share_a_schema_with_separate_tracks(
    schema: str, owner: Conn, tmp_path: Path
) -> None:
    store = PostgresStorage(postgres_dsn(), schema=schema, max_size=1)
    registry = open_registry(url(schema), data_dir=tmp_path)
    try:
        store.create_log("acme.main", "ex.org/acme/main", AT)
        registry.create_tenant("acme", AT)
        registry.add_log(TenantLog("acme", "main", "acme.main", False), AT)
        tables = {
            r[0]
            for r in owner.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        assert tables == {
            *REGISTRY_TABLES,
            MIGRATIONS_TABLE,
            "logs",
            "log_keys",
            "entries",
            "tiles",
            "checkpoints",
            "pending",
            "schema_migrations",
        }
        assert versions(owner, schema, "schema_migrations") == list(range(1, SCHEMA_VERSION + 1))
        assert versions(owner, schema, MIGRATIONS_TABLE) == list(
            range(1, REGISTRY_SCHEMA_VERSION + 1)
        )
        # Reopening applies nothing, on either track.
        again = PostgresRegistryDatabase(postgres_dsn(), schema=schema, max_size=1)
        try:
            assert again.migrate() == []
        finally:
            again.close()
        assert store.migrate() == []
    finally:
        registry.close()
        store.close()


def test_nodes_starting_together_migrate_once(schema: str, owner: Conn) -> None:
    """Two ledger stores and three registries race to create one fresh schema."""

    def open_one(i: int) -> PostgresStorage | PostgresRegistryDatabase:
        if i < 2:
            return PostgresStorage(postgres_dsn(), schema=schema, max_size=1)
        return PostgresRegistryDatabase(postgres_dsn(), schema=schema, max_size=1)

    opened = run_together(5, open_one)
    try:
        assert all(isinstance(o, PostgresStorage | PostgresRegistryDatabase) for o in opened), (
            opened
        )
        assert versions(owner, schema, MIGRATIONS_TABLE) == list(
            range(1, REGISTRY_SCHEMA_VERSION + 1)
        )
        assert versions(owner, schema, "schema_migrations") == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for o in opened:
            if isinstance(o, PostgresStorage | PostgresRegistryDatabase):
                o.close()


def test_without_migrate_a_schema_behind_is_refused(schema: str) -> None:
    with pytest.raises(StorageError, match="run `trailseal migrate-db`") as info:
        PostgresRegistryDatabase(postgres_dsn(), schema=schema, migrate=False)
    assert "at version 0, this trailseal needs" in str(info.value)
    PostgresRegistryDatabase(postgres_dsn(), schema=schema).close()  # migrates
    Registry(PostgresRegistryDatabase(postgres_dsn(), schema=schema, migrate=False)).close()


def test_a_newer_registry_schema_is_refused(schema: str, owner: Conn) -> None:
    PostgresRegistryDatabase(postgres_dsn(), schema=schema).close()
    owner.execute(
        sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(sql.Identifier(MIGRATIONS_TABLE)),
        (REGISTRY_SCHEMA_VERSION + 1,),
    )
    for migrate in (True, False):
        with pytest.raises(StorageError, match=r"registry schema version .* Upgrade trailseal"):
            PostgresRegistryDatabase(postgres_dsn(), schema=schema, migrate=migrate)


def test_bad_schema_names_are_refused() -> None:
    with pytest.raises(StorageError, match="schema name 'a;b'"):
        PostgresRegistryDatabase("postgresql://127.0.0.1:1/x", schema="a;b")


# -- a least-privilege service role -------------------------------------------------------


def test_the_service_role_runs_the_registry_and_nothing_more(
    schema: str, owner: Conn, role: str, tmp_path: Path
) -> None:
    PostgresStorage(postgres_dsn(), schema=schema, max_size=1).close()
    Registry(PostgresRegistryDatabase(postgres_dsn(), schema=schema, max_size=1)).close()
    grant_service_role(owner, role, schema=schema, login=True)
    grant_registry_role(owner, role, schema=schema, login=True)
    grant_registry_role(owner, role, schema=schema, login=True)  # idempotent

    # Every registry operation works as the service role (migrate=True runs no DDL here).
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn(), user=role)
    svc = Registry(PostgresRegistryDatabase(dsn, schema=schema, max_size=2))
    try:
        svc.create_tenant("acme", AT)
        with pytest.raises(AlreadyExistsError):
            svc.create_tenant("acme", AT)
        svc.add_log(TenantLog("acme", "main", "acme.main", True), AT)
        key_id, token = svc.create_key("acme", "admin", AT, operator=True)
        assert svc.authenticate(token) is not None
        svc.revoke_key(key_id, AT)
        with pytest.raises(NotFoundError):
            svc.revoke_key(key_id, AT)
        svc.put_contents("acme", "main", [StoredBody("c_1", b"n" * 12, b"ct")], AT)
        assert svc.get_content("acme", "main", "c_1") == (b"n" * 12, b"ct")
        svc.put_state("audit", {"w": 1}, AT)
        svc.put_state("audit", {"w": 2}, AT)  # the upsert's UPDATE branch
        assert svc.get_state("audit") == {"w": 2}
        listed = svc.keys()
        assert [k.revoked_at for k in listed] == [AT]
        report = tmp_path / "r.csv"
        report.write_bytes(b"a,b\n")
        digest = svc.put_report_file("ar_0123456789ab", "r.csv", report, AT)
        svc.put_report_file("ar_0123456789ab", "r.csv", report, AT)  # idempotent
        assert b"".join(svc.report_file_chunks("ar_0123456789ab", "r.csv", digest)) == b"a,b\n"
        public_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        svc.add_link_key(link_key_id(public_key), public_key, AT)
        svc.add_link_key(link_key_id(public_key), public_key, AT)  # idempotent
        assert svc.link_key(link_key_id(public_key)) == public_key
    finally:
        svc.close()

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        refused = [
            "DELETE FROM tenants",
            "UPDATE tenants SET created_at = 'x'",
            "UPDATE content SET ciphertext = 'x'",
            "DELETE FROM content",
            "UPDATE api_keys SET role = 'admin'",
            "UPDATE api_keys SET secret_sha256 = secret_sha256",
            "DELETE FROM api_keys",
            "UPDATE tenant_logs SET capture_content = false",
            "DELETE FROM poll_state",
            "UPDATE report_files SET data = 'x'",
            "DELETE FROM report_files",
            "TRUNCATE report_files",
            "UPDATE link_keys SET public_key = 'x'",
            "DELETE FROM link_keys",
            "TRUNCATE link_keys",
            "TRUNCATE api_keys",
            f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (99)",
            f"DELETE FROM {MIGRATIONS_TABLE}",
            "DROP TABLE tenants",
            "ALTER TABLE api_keys DROP COLUMN revoked_at",
        ]
        for stmt in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
        # What it may update, it may update directly too: that is the grant, no wider.
        conn.execute("UPDATE api_keys SET revoked_at = revoked_at")
        conn.execute("UPDATE poll_state SET state = state, updated_at = updated_at")


def test_link_keys_hold_only_well_formed_ids_and_public_keys(
    schema: str, owner: Conn, tmp_path: Path
) -> None:
    registry = open_registry(url(schema), data_dir=tmp_path)  # migrates
    registry.close()
    good = "0123456789abcdef"
    for key_id, public_key in [("0123456789ABCDEF", b"k" * 32), (good, b"k" * 31), ("x", b"")]:
        with pytest.raises(psycopg.errors.CheckViolation):
            owner.execute("INSERT INTO link_keys VALUES (%s, %s, 'now')", (key_id, public_key))
    owner.execute("INSERT INTO link_keys VALUES (%s, %s, 'now')", (good, b"k" * 32))


def test_grants_refuse_odd_identifiers() -> None:
    with pytest.raises(StorageError, match="role name"):
        grant_registry_role("postgresql://127.0.0.1:1/x", "x; DROP ROLE postgres")


def test_grants_wait_for_the_migrations(schema: str, role: str) -> None:
    PostgresStorage(postgres_dsn(), schema=schema, max_size=1).close()  # the ledger only
    with pytest.raises(StorageError, match="run `trailseal migrate-db` before granting"):
        grant_registry_role(postgres_dsn(), role, schema=schema)
    with psycopg.connect(postgres_dsn()) as conn:
        assert not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()


# -- the database is down -----------------------------------------------------------------


def test_an_unreachable_database_is_a_storage_error_without_the_password() -> None:
    dsn = "postgresql://svc:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError, match="PostgreSQL is unavailable while connecting") as e:
        PostgresRegistryDatabase(dsn, schema="anything", timeout=1.0)
    assert "hunter2" not in e.value.diagnostics()
    assert "retry" in e.value.diagnostics()


def test_losing_the_connections_is_a_storage_error_then_recovers(schema: str) -> None:
    app = f"trailseal-test-{uuid.uuid4().hex[:12]}"
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn(), application_name=app)
    registry = Registry(PostgresRegistryDatabase(dsn, schema=schema, max_size=1))
    try:
        registry.create_tenant("acme", AT)
        with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            ).fetchall()
        assert killed == [(True,)]
        with pytest.raises(StorageError, match="PostgreSQL") as e:
            registry.tenants()
        assert "service registry" in str(e.value)
        assert not isinstance(e.value, psycopg.Error)
        # The pool replaces the dead connection: the next call works.
        assert registry.tenants() == ["acme"]
    finally:
        registry.close()
