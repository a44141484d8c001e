"""Fixtures shared by the storage contract suite and the ledger tests.

Every backend is built by one factory in :data:`STORAGE_FACTORIES`, keyed by name. The
``storage`` fixture is parametrized over that dict, so adding a backend (PostgreSQL, say)
is one entry here: every contract and ledger test then runs against it too.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import (
    EMPTY_ROOT,
    fold_right,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
)
from trailseal.core.note import NoteSigner, NoteVerifier
from trailseal.core.receipt import verify_receipt
from trailseal.ledger import Ledger
from trailseal.storage import MemoryStorage, SqliteStorage, Storage

StorageFactory = Callable[[Path], Storage]
"""Builds a fresh, empty store; it may keep its files under the given directory."""

POSTGRES_DSN = os.environ.get(
    "TRAILSEAL_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL the postgres tests use; each test gets its own schema, dropped after."""

_postgres_reachable: str | None = None  # "" when reachable, else why not; None: not tried


def postgres_dsn() -> str:
    """:data:`POSTGRES_DSN`, or skip the calling test when PostgreSQL is not reachable."""
    global _postgres_reachable  # noqa: PLW0603 (probed once per session)
    if _postgres_reachable is None:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_DSN, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            _postgres_reachable = ""
        except Exception as e:
            _postgres_reachable = f"{type(e).__name__}: {str(e).strip()[:200]}"
    if _postgres_reachable:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_DSN} ({_postgres_reachable})")
    return POSTGRES_DSN


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _postgres_storage(tmp: Path) -> Storage:
    """A store in a fresh schema ``t_<uuid>``, dropped when the store is closed."""
    dsn = postgres_dsn()
    from trailseal.storage.postgres import PostgresStorage

    class ThrowawayPostgresStorage(PostgresStorage):
        def close(self) -> None:
            super().close()
            drop_schema(self.schema)

    schema = f"t_{uuid.uuid4().hex}"
    try:
        return ThrowawayPostgresStorage(dsn, schema=schema, max_size=4)
    except BaseException:
        drop_schema(schema)
        raise


STORAGE_FACTORIES: dict[str, StorageFactory] = {
    "memory": lambda tmp: MemoryStorage(),
    "sqlite": lambda tmp: SqliteStorage(tmp / "t.db"),
    "postgres": _postgres_storage,  # skipped when PostgreSQL is not reachable
}


@pytest.fixture(params=list(STORAGE_FACTORIES))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh store of each backend, closed after the test."""
    store = STORAGE_FACTORIES[request.param](tmp_path)
    try:
        yield store
    finally:
        store.close()


class FakeClock:
    """A deterministic, thread-safe clock: each call is one second after the previous."""

    def __init__(self, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> None:
        self._start = start
        self._ticks = itertools.count()
        self.calls = 0

    def __call__(self) -> datetime:
        n = next(self._ticks)  # itertools.count is atomic under the GIL
        self.calls = n + 1
        return self._start + timedelta(seconds=n)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def signer() -> NoteSigner:
    return NoteSigner.generate("test.example/log-key")


@pytest.fixture(scope="session")
def signer2() -> NoteSigner:
    return NoteSigner.generate("test.example/log-key-2025")


LogChecker = Callable[[Ledger, Sequence[NoteVerifier]], list[bytes]]


def _prefix_roots(leaves: Sequence[bytes], sizes: Sequence[int]) -> list[bytes]:
    """RFC 9162 roots of ``leaves[:n]`` for each ``n`` in ascending ``sizes``, in one pass
    (``root_from_leaf_hashes`` per size would be quadratic for thousands of checkpoints)."""
    out: list[bytes] = []
    stack: list[tuple[int, bytes]] = []  # perfect subtree roots, largest first
    wanted = iter(sizes)
    target = next(wanted, None)
    for n, h in enumerate([*leaves, None], start=0):
        while target == n:
            out.append(fold_right([r for _, r in stack]) if stack else EMPTY_ROOT)
            target = next(wanted, None)
        if h is None:
            break
        level, cur = 0, h
        while stack and stack[-1][0] == level:
            cur = node_hash(stack.pop()[1], cur)
            level += 1
        stack.append((level, cur))
    assert len(out) == len(sizes), "a checkpoint is larger than the log"
    return out


def _check_log(ledger: Ledger, verifiers: Sequence[NoteVerifier]) -> list[bytes]:
    """Check a stored log against independent oracles; return its leaf hashes.

    Entries are contiguous and counted; every stored checkpoint is signed by a trusted
    key, names the right origin, and commits to the root of its prefix of the entries;
    sizes strictly increase; consecutive checkpoints are provably consistent; receipts
    (all of them for small logs, a sample otherwise) verify offline.
    """
    storage, log = ledger.storage, ledger.log
    size = ledger.tree_size()
    entries = list(storage.read_entries(log.id, 0, size + 1))
    assert [e.index for e in entries] == list(range(size))
    assert storage.entry_count(log.id) == size
    leaves = [leaf_hash(e.data) for e in entries]

    stored = list(storage.checkpoints(log.id))
    sizes = [c.tree_size for c in stored]
    assert sizes == sorted(set(sizes)), f"checkpoint sizes do not strictly increase: {sizes}"
    roots = _prefix_roots(leaves, sizes)
    if sizes:
        assert roots[-1] == root_from_leaf_hashes(leaves[: sizes[-1]])
    for c, root in zip(stored, roots, strict=True):
        signed = verify_checkpoint(c.note, verifiers, log.origin)
        assert (signed.tree_size, signed.root_hash) == (c.tree_size, c.root_hash)
        assert c.root_hash == root, f"checkpoint at {c.tree_size} has the wrong root"
    for older, newer in itertools.pairwise(stored):
        proof = ledger.consistency_proof(older.tree_size, newer.tree_size)
        verify_consistency(
            older.tree_size, newer.tree_size, proof, older.root_hash, newer.root_hash
        )

    if size:
        step = max(1, size // 300)
        for i in [*range(0, size, step), size - 1]:
            assert ledger.leaf_hash(i) == leaves[i]
            verify_receipt(ledger.receipt(i), verifiers, origin=log.origin, entry=entries[i].data)
    return leaves


@pytest.fixture
def check_log() -> LogChecker:
    return _check_log
