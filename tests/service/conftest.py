"""Fixtures of the registry suite: one place per engine where several nodes meet.

``nodes`` opens registries that share one place, as several ``trailseal serve`` processes
would: the SQLite ``service.db`` of one data directory, or a fresh PostgreSQL schema
(dropped after the test; skipped with the reason when PostgreSQL is not reachable, see
``tests/conftest.py``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import drop_schema, postgres_dsn
from trailseal.service.registry import Registry, open_registry
from trailseal.storage.urls import StorageUrl

ENGINES = ("sqlite", "postgres")


class FakeMonotonic:
    """A monotonic clock the test moves (thread-safe)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


OpenNode = Callable[..., Registry]
"""``open_node(monotonic=...)``: another registry on the test's shared place."""


@pytest.fixture(params=ENGINES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageUrl]:
    """Where this test's registries live: a data directory's SQLite, or a fresh schema."""
    if request.param == "sqlite":
        yield StorageUrl("sqlite", path=tmp_path / "trailseal.db")
        return
    dsn = postgres_dsn()  # skips the test when PostgreSQL is not reachable
    schema = f"t_{uuid.uuid4().hex}"
    try:
        yield StorageUrl("postgresql", dsn=dsn, schema=schema)
    finally:
        drop_schema(schema)


@pytest.fixture
def open_node(place: StorageUrl, tmp_path: Path) -> Iterator[OpenNode]:
    """Opens registries on ``place`` (closed after the test, before its schema is dropped)."""
    opened: list[Registry] = []

    def open_(*, monotonic: Callable[[], float] = time.monotonic, migrate: bool = True) -> Registry:
        registry = open_registry(place, data_dir=tmp_path, migrate=migrate, monotonic=monotonic)
        opened.append(registry)
        return registry

    try:
        yield open_
    finally:
        for registry in opened:
            registry.close()


@pytest.fixture
def registry(open_node: OpenNode) -> Registry:
    """One registry (one node) on a fresh place."""
    return open_node()
