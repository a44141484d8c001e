"""Fixtures shared by the storage contract suite and the ledger tests.

Every backend is built by one factory in :data:`STORAGE_FACTORIES`, keyed by name. The
``storage`` fixture is parametrized over that dict, so adding a backend (PostgreSQL, say)
is one entry here: every contract and ledger test then runs against it too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trailseal.core.note import NoteSigner
from trailseal.storage import MemoryStorage, SqliteStorage, Storage

StorageFactory = Callable[[Path], Storage]
"""Builds a fresh, empty store; it may keep its files under the given directory."""

STORAGE_FACTORIES: dict[str, StorageFactory] = {
    "memory": lambda tmp: MemoryStorage(),
    "sqlite": lambda tmp: SqliteStorage(tmp / "t.db"),
    # "postgres": lambda tmp: PostgresStorage(os.environ["TRAILSEAL_TEST_DSN"], schema=...),
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
