"""Fixtures for the HTTP API suite (helpers live in ``tests.http.support``).

Every test gets its own data directory (opening one takes milliseconds), so tests never
see each other's entries or access events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.http.support import Env, Served, open_env


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """Build an :class:`Env` with custom options (several per test if need be)."""
    with ExitStack() as stack:
        count = 0

        def make(**kwargs: Any) -> Env:
            nonlocal count
            count += 1
            return open_env(stack, tmp_path / f"data{count}", **kwargs)

        yield make


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    """A fresh service with default options and the real clock."""
    return make_env()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Served]]:
    """Start apps on real sockets; every server is stopped and joined at teardown."""
    running: list[Served] = []

    def start(app: Any) -> Served:
        served = Served.start(app)
        running.append(served)
        return served

    yield start
    for served in running:
        served.stop()
