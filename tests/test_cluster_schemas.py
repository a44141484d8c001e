"""Two independent deployments in one PostgreSQL database, each in its own schema.

Advisory locks belong to the database, and every store's first log has id 1: the
integrator and singleton-task elections must be keyed by schema, or the first
deployment's node would hold the lock the second one's nodes need, and the second store
would never get an integrator (its writes would wait, then fail with 503).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import drop_schema, postgres_dsn
from tests.test_cluster import make_nodes
from trailseal.service.core import Service


@pytest.fixture
def two_schemas() -> Iterator[tuple[str, str]]:
    postgres_dsn()  # skip when unreachable
    names = (f"t_two_a_{uuid.uuid4().hex[:12]}", f"t_two_b_{uuid.uuid4().hex[:12]}")
    yield names
    for name in names:
        drop_schema(name)


def test_each_store_elects_its_own_integrator_and_task_runner(
    tmp_path: Path, two_schemas: tuple[str, str]
) -> None:
    services: list[Service] = []
    try:
        for schema in two_schemas:
            (tmp_path / schema).mkdir()
            dirs, _ = make_nodes(tmp_path / schema, f"{postgres_dsn()}?schema={schema}", 1)
            service, _ = Service.open(dirs[0])
            services.append(service)
            service.join_cluster(election_interval_s=0.1)
            service.leads("slack-audit")  # enters the singleton task's election
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(
                s.node_status()["integrating"] == ["default"] and s.leads("slack-audit")  # type: ignore[index]
                for s in services
            ):
                break
            time.sleep(0.05)
        assert [s.node_status()["integrating"] for s in services] == [["default"], ["default"]]  # type: ignore[index]
        assert all(s.leads("slack-audit") for s in services)
    finally:
        for s in services:
            s.close()
