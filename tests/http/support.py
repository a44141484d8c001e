"""Helpers of the HTTP API suite: a service on a data directory with its app, an
in-process client, two tenants with one API key per role, a settable clock, a uvicorn
server in a thread, and the RFC 9457 problem check every error response must pass.
"""

from __future__ import annotations

import threading
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning

from trailseal.http.app import create_app
from trailseal.http.deps import HttpOptions
from trailseal.ledger import Clock, Ledger, utc_now
from trailseal.service.core import Service, ServiceOptions

with warnings.catch_warnings():
    # starlette's TestClient prefers httpx2 and warns on import when it runs on httpx.
    warnings.filterwarnings("ignore", category=StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PROBLEM_JSON = "application/problem+json"
TENANTS = ("a", "b")
AT = "2025-01-01T00:00:00.000000Z"


@dataclass(frozen=True)
class Key:
    """An API key as a client holds it."""

    key_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class FixedClock:
    """A clock that reads what the test sets (thread-safe)."""

    def __init__(self, now: datetime = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


@dataclass
class Env:
    """A running service: its data directory, app, client, tenants, logs and keys.

    Tenants ``a`` and ``b`` each have a ``main`` log and one key per role (made on first
    use); ``a`` also has ``vault`` and ``b`` has ``only-b`` (both capture content).
    ``operator`` is the bootstrap operator key (tenant ``default``).
    """

    path: Path
    service: Service
    app: Any
    client: TestClient
    operator: Key
    keys: dict[tuple[str, str], Key] = field(default_factory=dict)
    verifier_keys: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    """Whatever a fixture wants to hand a test along with the service."""

    def key(self, tenant: str = "a", role: str = "admin") -> Key:
        """The tenant's key of ``role``, created on first use."""
        if (tenant, role) not in self.keys:
            self.keys[(tenant, role)] = self.add_key(tenant, role)
        return self.keys[(tenant, role)]

    def h(
        self, tenant: str = "a", role: str = "admin", purpose: str | None = None
    ) -> dict[str, str]:
        """Headers for a request with a key of ``tenant`` and ``role``."""
        headers = dict(self.key(tenant, role).auth)
        if purpose is not None:
            headers["X-Trailseal-Purpose"] = purpose
        return headers

    def ledger(self, tenant: str, log: str) -> Ledger:
        return self.service.ledger(self.service.registry.log(tenant, log))

    def size(self, tenant: str, log: str) -> int:
        return self.ledger(tenant, log).tree_size()

    def post(self, log: str, event: Any, tenant: str = "a", role: str = "admin") -> httpx.Response:
        return self.client.post(f"/v1/logs/{log}/events", json=event, headers=self.h(tenant, role))

    def ingest(self, log: str, events: list[dict[str, Any]], tenant: str = "a") -> list[Any]:
        """Append events as tenant's admin, checking success; returns the results."""
        r = self.client.post(
            f"/v1/logs/{log}/events/batch", json=events, headers=self.h(tenant, "admin")
        )
        assert r.status_code == 200, r.text
        results: list[Any] = r.json()["results"]
        return results

    def add_key(self, tenant: str, role: str) -> Key:
        key_id, token = self.service.registry.create_key(tenant, role, AT)
        return Key(key_id, token)

    def data_files(self) -> dict[str, bytes]:
        """Every file of the data directory (databases, their WALs, keys), as bytes."""
        return {
            str(p.relative_to(self.path)): p.read_bytes()
            for p in sorted(self.path.rglob("*"))
            if p.is_file()
        }


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """``r`` is an RFC 9457 problem of ``status`` (and type ``slug``); returns its body."""
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text[:500]}"
    assert r.headers["content-type"].split(";")[0] == PROBLEM_JSON, r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:trailseal:problem:")
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    if slug is not None:
        assert body["type"] == f"urn:trailseal:problem:{slug}", body
    return body


def open_env(
    stack: ExitStack,
    path: Path,
    *,
    http: HttpOptions | None = None,
    options: ServiceOptions | None = None,
    clock: Clock = utc_now,
) -> Env:
    """A service on ``path`` with tenants, logs and keys; closed when ``stack`` closes."""
    service, token = Service.open(path, clock=clock, options=options)
    stack.callback(service.close)
    assert token is not None
    operator_id = token.split("_")[1]
    app = create_app(service, http)
    client = stack.enter_context(TestClient(app))
    env = Env(path, service, app, client, Key(operator_id, token))
    for tenant in TENANTS:
        service.create_tenant(tenant)
        _, vkey = service.create_log(tenant, "main")
        env.verifier_keys[(tenant, "main")] = vkey
    for tenant, log in (("a", "vault"), ("b", "only-b")):
        _, vkey = service.create_log(tenant, log, capture_content=True)
        env.verifier_keys[(tenant, log)] = vkey
    return env


@dataclass
class Served:
    """A real uvicorn server on 127.0.0.1 running an app in a thread."""

    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, app: Any) -> Served:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        served = cls(server, thread)
        if not server.started:
            served.stop()
            raise AssertionError("uvicorn did not start")
        return served

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "uvicorn did not stop"
