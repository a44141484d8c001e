"""PostgreSQL-only checks: append-only triggers, a least-privilege service role,
migrations, and two stores (two processes) sharing one schema.

The contract suite and the ledger tests already run against PostgreSQL through the
``storage`` fixture; these tests reach around the store with raw SQL. They are skipped
when PostgreSQL is not reachable (see ``tests/conftest.py``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql
from tests.conftest import FakeClock, LogChecker, drop_schema, postgres_dsn

from trailseal.core.note import NoteSigner
from trailseal.errors import StorageError
from trailseal.ledger import Ledger
from trailseal.storage import KeyEvent
from trailseal.storage.postgres import SCHEMA_VERSION, PostgresStorage, grant_service_role

CREATED = "2025-01-01T00:00:00.000000Z"
ORIGIN = "test.example/main"
TABLES = ("logs", "log_keys", "entries", "tiles", "checkpoints")


@pytest.fixture
def schema() -> Iterator[str]:
    postgres_dsn()  # skip when unreachable
    name = f"t_{uuid.uuid4().hex}"
    yield name
    drop_schema(name)


@pytest.fixture
def store(schema: str) -> Iterator[PostgresStorage]:
    s = PostgresStorage(postgres_dsn(), schema=schema, max_size=4)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def owner(schema: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
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


def fill(store: PostgresStorage, signer: NoteSigner) -> Ledger:
    """A log with a key event, entries, tiles and checkpoints: a row in every table."""
    log = store.create_log("main", ORIGIN, CREATED)
    store.add_key_event(log.id, KeyEvent(signer.verifier.to_string(), "added", CREATED))
    ledger = Ledger(store, log, [signer], clock=FakeClock())
    ledger.append([{"id": f"e{i}", "n": i} for i in range(5)])
    ledger.append([{"n": 5}])
    return ledger


def counts(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, object]:
    return {
        t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
        for t in TABLES
    }


# -- append-only triggers -------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("op", ["UPDATE", "DELETE", "TRUNCATE"])
def test_triggers_reject_rewrites(
    store: PostgresStorage,
    owner: psycopg.Connection[tuple[object, ...]],
    signer: NoteSigner,
    table: str,
    op: str,
) -> None:
    fill(store, signer)
    before = counts(owner)
    t = sql.Identifier(table)
    stmt = {
        "UPDATE": sql.SQL("UPDATE {} SET log_id = log_id").format(t)
        if table != "logs"
        else sql.SQL("UPDATE {} SET name = name").format(t),
        "DELETE": sql.SQL("DELETE FROM {}").format(t),
        "TRUNCATE": sql.SQL("TRUNCATE {} CASCADE").format(t),
    }[op]
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        owner.execute(stmt)
    assert counts(owner) == before


def test_migrations_create_every_trigger(
    store: PostgresStorage, owner: psycopg.Connection[tuple[object, ...]]
) -> None:
    rows = owner.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND NOT t.tgisinternal",
        (store.schema,),
    ).fetchall()
    assert sorted(rows) == sorted(
        (t, f"{t}_{kind}") for t in TABLES for kind in ("no_truncate", "no_update_delete")
    )


# -- a least-privilege service role -------------------------------------------------------


def test_service_role_may_append_but_never_rewrite(
    store: PostgresStorage,
    owner: psycopg.Connection[tuple[object, ...]],
    signer: NoteSigner,
    role: str,
) -> None:
    ledger = fill(store, signer)
    log_id = ledger.log.id
    grant_service_role(owner, role, schema=store.schema)

    # The owner drops every append-only trigger: only privileges are left to stop rewrites.
    for t in TABLES:
        for kind in ("no_update_delete", "no_truncate"):
            owner.execute(
                sql.SQL("DROP TRIGGER {} ON {}").format(
                    sql.Identifier(f"{t}_{kind}"), sql.Identifier(t)
                )
            )

    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        # Appending and reading through raw SQL works.
        conn.execute(
            "INSERT INTO entries (log_id, idx, data, source, event_id)"
            " VALUES (%s, 6, %s, 'raw', 'r1')",
            (log_id, b'{"raw":1}'),
        )
        conn.execute(
            "INSERT INTO log_keys (log_id, verifier, event, at) VALUES (%s, 'v', 'retired', 'x')",
            (log_id,),
        )
        found = conn.execute(
            "SELECT data FROM entries WHERE log_id = %s AND idx = 6", (log_id,)
        ).fetchone()
        assert found == (b'{"raw":1}',)
        before = counts(conn)

        for t in TABLES:
            ident = sql.Identifier(t)
            for stmt in (
                sql.SQL("UPDATE {} SET log_id = log_id").format(ident)
                if t != "logs"
                else sql.SQL("UPDATE {} SET name = name").format(ident),
                sql.SQL("DELETE FROM {}").format(ident),
                sql.SQL("TRUNCATE {}").format(ident),
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(stmt)
        # Nor can it put the triggers' absence to use by other means.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE entries")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE evil (x int)")
        assert counts(conn) == before


def test_service_role_runs_the_store(
    store: PostgresStorage,
    owner: psycopg.Connection[tuple[object, ...]],
    signer: NoteSigner,
    role: str,
    check_log: LogChecker,
) -> None:
    """A login role with only the service grants opens the (migrated) store and appends."""
    fill(store, signer)
    grant_service_role(owner, role, schema=store.schema, login=True)
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn(), user=role)
    svc = PostgresStorage(dsn, schema=store.schema, max_size=2)
    try:
        assert svc.migrate() == []  # nothing pending, so no DDL is attempted
        ledger = Ledger(svc, svc.get_log("main"), [signer], clock=FakeClock())
        ledger.append([{"n": 100 + i} for i in range(300)])
        assert ledger.tree_size() == 306
        check_log(ledger, [signer.verifier])
        other = svc.create_log("second", "test.example/second", CREATED)
        assert svc.get_log("second") == other
    finally:
        svc.close()


# -- migrations ---------------------------------------------------------------------------


def test_migrations_are_idempotent_and_recorded(
    store: PostgresStorage, owner: psycopg.Connection[tuple[object, ...]], signer: NoteSigner
) -> None:
    rows = owner.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert all(r[1] is not None for r in rows)
    fill(store, signer)
    assert store.migrate() == []
    again = PostgresStorage(postgres_dsn(), schema=store.schema, max_size=1)
    try:
        assert again.migrate() == []
        assert again.get_log("main") == store.get_log("main")
    finally:
        again.close()
    assert owner.execute("SELECT version, applied_at FROM schema_migrations").fetchall() == rows


def test_concurrent_first_migrations_are_safe(schema: str) -> None:
    barrier = threading.Barrier(4)

    def open_store(_: int) -> PostgresStorage:
        barrier.wait()
        return PostgresStorage(postgres_dsn(), schema=schema, min_size=1, max_size=1)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_store, range(4)))
    try:
        assert all(s.migrate() == [] for s in stores)
        with psycopg.connect(postgres_dsn()) as conn:
            versions = conn.execute(
                sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))
            ).fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        for s in stores:
            s.close()


def test_newer_schema_version_is_refused(
    store: PostgresStorage, owner: psycopg.Connection[tuple[object, ...]]
) -> None:
    owner.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match="Upgrade trailseal"):
        PostgresStorage(postgres_dsn(), schema=store.schema, max_size=1)


# -- two stores (two processes) on one schema ---------------------------------------------


@pytest.fixture
def two_ledgers(store: PostgresStorage, signer: NoteSigner) -> Iterator[tuple[Ledger, Ledger]]:
    other = PostgresStorage(postgres_dsn(), schema=store.schema, max_size=4)
    try:
        log = store.create_log("main", ORIGIN, CREATED)
        clock = FakeClock()
        yield (
            Ledger(store, log, [signer], clock=clock),
            Ledger(other, other.get_log("main"), [signer], clock=clock),
        )
    finally:
        other.close()


def test_two_stores_interleaving_appends(
    two_ledgers: tuple[Ledger, Ledger], signer: NoteSigner, check_log: LogChecker
) -> None:
    a, b = two_ledgers
    expected = 0
    for i in range(30):
        ledger = a if i % 3 else b  # uneven turns: sometimes one ledger twice in a row
        n = i % 4 + 1
        res = ledger.append([{"i": i, "j": j} for j in range(n)])
        assert [r.index for r in res] == list(range(expected, expected + n))
        assert res[0].tree_size == expected + n
        expected += n
        if i == 20:  # cross a tile boundary on the other store's edge
            (a if i % 2 else b).append([{"bulk": k} for k in range(300)])
            expected += 300
    (orig,) = a.append([{"id": "x", "v": 1}])
    (dup,) = b.append([{"id": "x", "v": 1}])
    assert (dup.index, dup.status) == (orig.index, "duplicate")
    assert a.tree_size() == b.tree_size() == expected + 1
    assert check_log(a, [signer.verifier]) == check_log(b, [signer.verifier])


def test_two_stores_appending_concurrently(
    two_ledgers: tuple[Ledger, Ledger], signer: NoteSigner, check_log: LogChecker
) -> None:
    a, b = two_ledgers

    def worker(t: int) -> list[int]:
        ledger = a if t % 2 else b
        out = []
        for c in range(25):
            out += [
                r.index for r in ledger.append([{"t": t, "c": c, "k": k} for k in range(t % 3 + 1)])
            ]
        return out

    with ThreadPoolExecutor(8) as pool:
        indexes = [i for w in pool.map(worker, range(8)) for i in w]
    assert sorted(indexes) == list(range(len(indexes)))
    check_log(a, [signer.verifier])


# -- idempotency lookups --------------------------------------------------------------------


def test_idempotency_lookup_reads_only_the_rows_it_finds(
    store: PostgresStorage, signer: NoteSigner
) -> None:
    """Looking up event ids before an append must not read the whole log.

    On a table PostgreSQL has not analyzed yet (every young or fast-growing log), one
    ``event_id = ANY(...)`` query was planned as an index scan on (log_id, source) that
    filtered event_id in the heap: it fetched every entry of the source, so each append
    cost O(log size). The transaction's own statistics count the rows it fetched.
    """
    log = store.create_log("main", ORIGIN, CREATED)
    store.add_key_event(log.id, KeyEvent(signer.verifier.to_string(), "added", CREATED))
    ledger = Ledger(store, log, [signer], clock=FakeClock())
    for start in range(0, 4000, 1000):
        ledger.append([{"id": f"e{i}", "source": "s", "n": i} for i in range(start, start + 1000)])
    keys = [("s", f"e{i}") for i in range(0, 4000, 400)] + [("s", "missing"), ("t", "e1")]
    with store.write(log.id) as tx:
        conn = tx._conn  # the write transaction's connection: its statistics are ours
        fetched_before = _entries_rows_fetched(conn)
        found = tx.find_entries(keys)
        fetched = _entries_rows_fetched(conn) - fetched_before
    assert sorted(e.index for e in found.values()) == list(range(0, 4000, 400))
    assert fetched <= 10 * len(keys), f"the lookup of {len(keys)} keys read {fetched} rows"


def _entries_rows_fetched(conn: psycopg.Connection[object]) -> int:
    row = conn.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relid = 'entries'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


# -- advisory locks --------------------------------------------------------------------------


def test_write_lock_is_per_schema(store: PostgresStorage, signer: NoteSigner) -> None:
    """Two stores in one database both have a log with id 1: a writer of one must not
    wait for a writer of the other (advisory locks are database-wide)."""
    other_schema = f"t_{uuid.uuid4().hex}"
    other = PostgresStorage(postgres_dsn(), schema=other_schema, max_size=2)
    try:
        mine = store.create_log("main", ORIGIN, CREATED)
        theirs = other.create_log("main", ORIGIN, CREATED)
        assert mine.id == theirs.id
        wrote = threading.Event()

        def write_other() -> None:
            with other.write(theirs.id) as tx:
                tx.tree_size()
            wrote.set()

        with store.write(mine.id) as tx:
            tx.tree_size()  # holding this store's lock of log `mine.id` until the block ends
            worker = threading.Thread(target=write_other, daemon=True)
            worker.start()
            finished_while_held = wrote.wait(timeout=5)
        worker.join(timeout=10)
        assert finished_while_held, "a writer of another schema waited for this schema's lock"
    finally:
        other.close()
        drop_schema(other_schema)
