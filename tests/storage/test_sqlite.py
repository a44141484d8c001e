"""What only the SQLite backend promises: file mode, durability PRAGMAs, append-only
triggers, reopening, schema versions, and surviving a full disk."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from trailseal.core.note import NoteSigner
from trailseal.errors import StorageError
from trailseal.ledger import Clock, Ledger
from trailseal.storage import KeyEvent, SqliteStorage
from trailseal.storage.sqlite import SCHEMA_VERSION

if TYPE_CHECKING:
    from conftest import LogChecker

CREATED = "2025-01-01T00:00:00.000000Z"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStorage]:
    s = SqliteStorage(db)
    try:
        yield s
    finally:
        s.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain sqlite3 connection, as an operator with the sqlite3 shell would have."""
    return closing(sqlite3.connect(path, isolation_level=None))


def filled(store: SqliteStorage, signer: NoteSigner, clock: Clock) -> Ledger:
    """A log with a key event, entries over two batches, tiles and checkpoints."""
    log = store.create_log("main", "test.example/main", CREATED)
    store.add_key_event(log.id, KeyEvent(signer.verifier.to_string(), "added", CREATED))
    ledger = Ledger(store, log, [signer], clock=clock)
    ledger.append([{"id": f"e{i}", "source": "slack", "n": i} for i in range(5)])
    ledger.append([{"n": i} for i in range(300)])
    return ledger


# -- the file -----------------------------------------------------------------------------


def test_database_file_is_private(store: SqliteStorage, db: Path, signer: NoteSigner) -> None:
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    # SQLite gives the WAL and shared-memory files the database file's mode.
    log = store.create_log("main", "test.example/main", CREATED)
    Ledger(store, log, [signer]).append([{"a": 1}])
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        assert side.exists()
        assert stat.S_IMODE(os.stat(side).st_mode) == 0o600


def test_wal_and_synchronous_full(store: SqliteStorage, db: Path) -> None:
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # synchronous is per connection: check the writer and a reader of the store.
    full = 2
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == full
    assert store._reader().execute("PRAGMA synchronous").fetchone()[0] == full
    assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- append-only triggers ------------------------------------------------------------------

_ONE_COLUMN = {
    "logs": "name",
    "log_keys": "verifier",
    "entries": "data",
    "tiles": "hashes",
    "checkpoints": "note",
}


@pytest.mark.parametrize("table", sorted(_ONE_COLUMN))
@pytest.mark.parametrize("op", ["update", "delete"])
def test_triggers_reject_rewriting_history(
    store: SqliteStorage, db: Path, signer: NoteSigner, clock: Clock, table: str, op: str
) -> None:
    filled(store, signer, clock)
    col = _ONE_COLUMN[table]
    sql = f"UPDATE {table} SET {col} = {col} || 'x'" if op == "update" else f"DELETE FROM {table}"
    with raw(db) as conn:
        before = conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
        assert before
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql + " WHERE rowid = (SELECT max(rowid) FROM " + table + ")")
        after = conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    assert after == before
    # Through the store's own connection too.
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._writer.execute(sql)


# -- reopening and schema versions ---------------------------------------------------------


def test_reopening_keeps_everything(
    db: Path, signer: NoteSigner, clock: Clock, check_log: LogChecker
) -> None:
    first = SqliteStorage(db)
    ledger = filled(first, signer, clock)
    log = ledger.log
    state = (
        first.list_logs(),
        first.key_events(log.id),
        list(first.read_entries(log.id, 0, 1000)),
        list(first.tile_chunks(log.id)),
        list(first.checkpoints(log.id)),
        first.latest_checkpoint(log.id),
    )
    first.close()

    again = SqliteStorage(db)
    try:
        assert again.get_log("main") == log
        assert (
            again.list_logs(),
            again.key_events(log.id),
            list(again.read_entries(log.id, 0, 1000)),
            list(again.tile_chunks(log.id)),
            list(again.checkpoints(log.id)),
            again.latest_checkpoint(log.id),
        ) == state
        found = again.find_entry(log.id, "slack", "e3")
        assert found is not None
        assert found.index == 3
        # And the log carries on where it was.
        ledger2 = Ledger(again, again.get_log("main"), [signer], clock=clock)
        res = ledger2.append([{"after": "reopen"}])
        assert res[0].index == 305
        check_log(ledger2, [signer.verifier])
    finally:
        again.close()


def test_newer_schema_is_refused(db: Path) -> None:
    SqliteStorage(db).close()
    with raw(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match=r"(?i)upgrade trailseal") as info:
        SqliteStorage(db)
    assert "99" in str(info.value)


def test_failed_open_closes_its_connections(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused database must not leave connections open (ResourceWarning on 3.13+)."""
    SqliteStorage(db).close()
    with raw(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def spy(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy)
    with pytest.raises(StorageError):
        SqliteStorage(db)
    assert opened
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")  # closed


def test_fresh_file_gets_the_schema(db: Path) -> None:
    SqliteStorage(db).close()
    with raw(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        triggers = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
    assert {"logs", "log_keys", "entries", "tiles", "checkpoints"} <= tables
    assert len(triggers) == 10


# -- a full disk ---------------------------------------------------------------------------


def test_full_disk_rolls_back_then_recovers(
    store: SqliteStorage, signer: NoteSigner, clock: Clock, check_log: LogChecker
) -> None:
    ledger = filled(store, signer, clock)
    log_id = ledger.log.id
    before = (
        list(store.read_entries(log_id, 0, 10_000)),
        list(store.tile_chunks(log_id)),
        list(store.checkpoints(log_id)),
    )
    size = ledger.tree_size()
    assert size == 305

    writer = store._writer
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    assert writer.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages
    big = [{"id": f"big{i}", "pad": "x" * 2000} for i in range(400)]
    with pytest.raises(StorageError, match="full"):
        ledger.append(big)

    assert not writer.in_transaction
    assert store.entry_count(log_id) == size
    assert (
        list(store.read_entries(log_id, 0, 10_000)),
        list(store.tile_chunks(log_id)),
        list(store.checkpoints(log_id)),
    ) == before
    assert store.find_entry(log_id, "", "big0") is None
    assert ledger.tree_size() == size

    writer.execute("PRAGMA max_page_count = 1073741823")
    results = ledger.append(big)
    assert [r.index for r in results] == list(range(size, size + 400))
    assert {r.status for r in results} == {"appended"}
    assert ledger.tree_size() == size + 400
    check_log(ledger, [signer.verifier])
