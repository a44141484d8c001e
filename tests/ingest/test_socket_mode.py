"""Socket Mode ingestion against a local fake Slack.

The fake serves ``POST /api/apps.connections.open`` over HTTP and a WebSocket server the
URL points at. Like Slack it says ``hello`` on each connection, sends envelopes, expects an
acknowledgement per ``envelope_id`` and redelivers (``retry_attempt`` + 1) what was not
acknowledged, either on request (a timeout) or when the connection it went out on closes.
On every acknowledgement it asks the test whether the ledger already holds the event, so
"acknowledged only once durable" is checked at the moment of the ack, not afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from trailseal.errors import ConfigError, NotFoundError, StorageError
from trailseal.ingest.socket_mode import SocketModeIngestor
from trailseal.service.core import Service
from trailseal.service.rollback import TIMER_PREFIX
from trailseal.settings import Secret, SocketModeApp

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "slack"
TOKEN = "xapp-1-A111-1234567890-0123456789abcdef"
TIMEOUT = 15.0  # no single wait in these tests may take longer than this

pytestmark = pytest.mark.skipif(not FIXTURES.exists(), reason=f"no Slack fixtures at {FIXTURES}")


def base_envelope() -> dict[str, Any]:
    return json.loads((FIXTURES / "socket-mode-events-api-envelope.json").read_text())


def event_envelope(n: int) -> dict[str, Any]:
    env = base_envelope()
    env["envelope_id"] = f"env-{n}"
    env["payload"]["event_id"] = f"Ev{n:03d}"
    env["payload"]["event"]["ts"] = env["payload"]["event"]["event_ts"] = f"1610241741.{n:06d}"
    return env


SLASH = {
    "envelope_id": "env-slash",
    "type": "slash_commands",
    "accepts_response_payload": True,
    "payload": {"team_id": "T111", "user_id": "U111", "command": "/audit", "text": "search"},
}
INTERACTIVE = {
    "envelope_id": "env-interactive",
    "type": "interactive",
    "accepts_response_payload": False,
    "payload": {"type": "shortcut", "callback_id": "do-something", "user": {"id": "U111"}},
}


# -- the fake Slack ---------------------------------------------------------------------


@dataclass
class _Conn:
    number: int
    ws: ServerConnection
    unacked: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: bool = False


@dataclass(frozen=True)
class Ack:
    envelope_id: str
    connection: int
    durable: bool
    tree_size: int
    payload: dict[str, Any] | None = None
    """The acknowledgement's payload (the /audit app's answer), if any."""


class FakeSlack:
    """apps.connections.open over HTTP plus the Socket Mode WebSocket, on 127.0.0.1."""

    def __init__(self, check_durable: Callable[[dict[str, Any]], tuple[bool, int]]) -> None:
        self.check_durable = check_durable
        self.cond = threading.Condition()
        self.refuse = False
        self.authorizations: list[str | None] = []
        self.hellos = 0
        self.acks: dict[str, Ack] = {}
        self.sent: dict[str, dict[str, Any]] = {}
        self.redelivered: dict[str, str] = {}  # envelope id -> id of its redelivery
        self._conns: list[_Conn] = []
        self._current: _Conn | None = None
        self._waiting: list[dict[str, Any]] = []  # redeliveries waiting for a connection
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._ws_thread = threading.Thread(target=self._run_ws, name="fake-slack-ws")
        self._ws_thread.start()
        assert self._ready.wait(TIMEOUT), "the fake WebSocket server did not start"
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._http_handler())
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack-http"
        )
        self._http_thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/api/"

    # -- HTTP: apps.connections.open

    def _http_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                if self.path != "/api/apps.connections.open":
                    body: dict[str, Any] = {"ok": False, "error": "unknown_method"}
                else:
                    with fake.cond:
                        fake.authorizations.append(self.headers.get("authorization"))
                        fake.cond.notify_all()
                    if fake.refuse or self.headers.get("authorization") != f"Bearer {TOKEN}":
                        body = {"ok": False, "error": "invalid_auth"}
                    else:
                        n = len(fake.authorizations)
                        body = {
                            "ok": True,
                            "url": f"ws://127.0.0.1:{fake.ws_port}/link/?ticket={n}",
                        }
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    # -- WebSocket

    def _run_ws(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        server: Server
        async with serve(self._handle, "127.0.0.1", 0, compression=None) as server:
            self.ws_port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(len(self._conns) + 1, ws)
        self._conns.append(conn)
        self._current = conn
        hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A111"}}
        await ws.send(json.dumps(hello))
        with self.cond:
            self.hellos += 1
            self.cond.notify_all()
        waiting, self._waiting = self._waiting, []
        for env in waiting:
            await self._send(conn, env)
        try:
            async for raw in ws:
                message = json.loads(raw)
                envelope_id = message.get("envelope_id")
                if envelope_id:
                    self._acknowledged(conn, str(envelope_id), message.get("payload"))
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            if self._current is conn:
                self._current = None
            # What was not acknowledged on this connection is delivered again.
            for env in list(conn.unacked.values()):
                self._redeliver(env)
            conn.unacked.clear()

    def _acknowledged(
        self, conn: _Conn, envelope_id: str, payload: dict[str, Any] | None = None
    ) -> None:
        envelope = self.sent[envelope_id]
        durable, size = self.check_durable(envelope)
        for c in self._conns:
            c.unacked.pop(envelope_id, None)
        with self.cond:
            self.acks.setdefault(envelope_id, Ack(envelope_id, conn.number, durable, size, payload))
            self.cond.notify_all()

    async def _send(self, conn: _Conn, envelope: dict[str, Any]) -> None:
        with self.cond:
            self.sent[envelope["envelope_id"]] = envelope
        conn.unacked[envelope["envelope_id"]] = envelope
        await conn.ws.send(json.dumps(envelope))

    def _redeliver(self, envelope: dict[str, Any]) -> str:
        attempt = int(envelope.get("retry_attempt") or 0) + 1
        original = envelope["envelope_id"].split("-r")[0]
        again = {
            **envelope,
            "envelope_id": f"{original}-r{attempt}",
            "retry_attempt": attempt,
            "retry_reason": "timeout",
        }
        with self.cond:
            self.redelivered[envelope["envelope_id"]] = again["envelope_id"]
        current = self._current
        if current is not None and not current.closed:
            self._loop.create_task(self._send(current, again))
        else:
            self._waiting.append(again)
        return str(again["envelope_id"])

    # -- what the test does (from its own thread)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(TIMEOUT)

    def deliver(self, envelope: dict[str, Any]) -> None:
        async def go() -> None:
            assert self._current is not None, "no open connection"
            await self._send(self._current, envelope)

        self._call(go())

    def time_out(self, envelope_id: str) -> str:
        """Slack gave up waiting for this envelope's ack: deliver it again."""

        async def go() -> str:
            for conn in self._conns:
                envelope = conn.unacked.pop(envelope_id, None)
                if envelope is not None:
                    return self._redeliver(envelope)
            raise AssertionError(f"{envelope_id} is not waiting for an ack")

        return str(self._call(go()))

    def request_refresh(self) -> None:
        async def go() -> None:
            assert self._current is not None
            disconnect = {
                "type": "disconnect",
                "reason": "refresh_requested",
                "debug_info": {"host": "fake"},
            }
            await self._current.ws.send(json.dumps(disconnect))

        self._call(go())

    def drop(self) -> None:
        """Cut the current connection without a close handshake."""

        async def go() -> None:
            assert self._current is not None
            self._current.ws.transport.abort()

        self._call(go())

    def wait(self, what: str, predicate: Callable[[], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, TIMEOUT), f"timed out waiting for {what}"

    def wait_acked(self, *envelope_ids: str) -> None:
        self.wait(f"acks of {envelope_ids}", lambda: all(e in self.acks for e in envelope_ids))

    def settled(self) -> bool:
        """Everything sent was acknowledged or replaced by a redelivery."""
        return not self._waiting and all(e in self.acks or e in self.redelivered for e in self.sent)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._http_thread.join(TIMEOUT)

        def stop() -> None:
            if self._stop is not None and not self._stop.done():
                self._stop.set_result(None)

        self._loop.call_soon_threadsafe(stop)
        self._ws_thread.join(TIMEOUT)
        assert not self._ws_thread.is_alive()
        assert not self._http_thread.is_alive()


# -- fixtures ---------------------------------------------------------------------------


def has(service: Service, event_id: str) -> bool:
    ledger = service.ledger(service.registry.log("default", "default"))
    try:
        ledger.find(event_id, "slack.events")
    except NotFoundError:
        return False
    return True


def stored(service: Service) -> list[dict[str, Any]]:
    ledger = service.ledger(service.registry.log("default", "default"))
    return [json.loads(e.data) for e in ledger.storage.read_entries(ledger.log.id, 0, 1 << 30)]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service, _ = Service.open(tmp_path / "data")
    yield service
    service.close()


@pytest.fixture
def fake(service: Service) -> Iterator[FakeSlack]:
    def check_durable(envelope: dict[str, Any]) -> tuple[bool, int]:
        """Called when an ack arrives: does the ledger already hold what it acknowledges?"""
        ledger = service.ledger(service.registry.log("default", "default"))
        if envelope["type"] != "events_api":
            return True, ledger.tree_size()
        event_id = envelope["payload"]["event_id"]
        wanted = [event_id]
        if envelope.get("retry_attempt"):
            wanted.append(f"{event_id}/retry/{envelope['retry_attempt']}")
        return all(has(service, i) for i in wanted), ledger.tree_size()

    fake = FakeSlack(check_durable)
    yield fake
    fake.close()


@pytest.fixture
def run(
    service: Service,
    fake: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[], SocketModeIngestor]]:
    """Starts an ingestor on demand; afterwards checks that stopping it left no thread,
    socket or log line with a token or message text behind."""
    caplog.set_level(logging.DEBUG)
    # `serve` turns propagation off (JSON to stderr); caplog listens at the root.
    monkeypatch.setattr(logging.getLogger("trailseal"), "propagate", True)
    before = set(threading.enumerate())
    started: list[SocketModeIngestor] = []

    def start() -> SocketModeIngestor:
        app = SocketModeApp("main", Secret(TOKEN), base_url=fake.base_url)
        ingestor = SocketModeIngestor(app, service, ping_interval=0.5)
        ingestor.start()
        started.append(ingestor)
        return ingestor

    try:
        yield start
    finally:
        t0 = time.monotonic()
        for ingestor in started:
            ingestor.stop()
            assert ingestor.client is None
        stop_s = time.monotonic() - t0
    assert stop_s < 10, f"stop() took {stop_s:.1f} s"
    # The service's own deferred witness write belongs to the service (closed by its
    # fixture afterwards), not to the ingestor.
    leftover = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith(TIMER_PREFIX)
    ]
    assert leftover == [], f"threads still running after stop(): {leftover}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]
    assert TOKEN not in caplog.text
    assert "ticket=" not in caplog.text  # the WebSocket URL is a credential too
    assert "<@U111>" not in caplog.text  # message text never reaches a log


# -- tests ------------------------------------------------------------------------------


def test_events_are_stored_once_and_acknowledged_only_when_durable_across_reconnects(
    service: Service,
    fake: FakeSlack,
    run: Callable[[], SocketModeIngestor],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_ingest = service.ingest
    slow_stored = threading.Event()
    release = threading.Event()

    def ingest(*args: Any, **kwargs: Any) -> Any:
        results = real_ingest(*args, **kwargs)
        if [r.id for r in results] == ["Ev007"]:  # the first delivery of event 7 only
            slow_stored.set()
            release.wait(TIMEOUT)  # durable, but the ack waits until the socket is cut
        return results

    monkeypatch.setattr(service, "ingest", ingest)
    run()
    fake.wait("the first hello", lambda: fake.hellos == 1)

    # 1. Plain deliveries on the first connection, and the two ack-only envelope types.
    for n in (1, 2, 3):
        fake.deliver(event_envelope(n))
    fake.deliver(SLASH)
    fake.deliver(INTERACTIVE)
    fake.wait_acked("env-1", "env-2", "env-3", "env-slash", "env-interactive")

    # 2. Slack asks for a refresh; two more envelopes go out on the old connection.
    fake.request_refresh()
    fake.deliver(event_envelope(4))
    fake.deliver(event_envelope(5))
    fake.wait("the reconnection", lambda: fake.hellos == 2)
    fake.wait("events 4 and 5", fake.settled)
    fake.deliver(event_envelope(6))
    fake.wait_acked("env-6")

    # 3. The socket is cut after event 7 is durable but before its ack goes out.
    fake.deliver(event_envelope(7))
    assert slow_stored.wait(TIMEOUT)
    fake.drop()
    release.set()
    fake.wait("the reconnection after the drop", lambda: fake.hellos == 3)
    fake.wait("event 7's redelivery", fake.settled)
    fake.deliver(event_envelope(8))
    fake.wait_acked("env-8")
    fake.wait("everything acknowledged", fake.settled)

    # Every ack came after the ledger held what it acknowledged.
    not_durable = [a for a in fake.acks.values() if not a.durable]
    assert not_durable == []
    assert "env-7" in fake.redelivered  # the drop lost its ack; Slack redelivered it
    assert fake.acks[fake.redelivered["env-7"]].connection == 3

    # Each event exactly once; a delivery record per redelivery, nothing else.
    records = stored(service)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), f"stored twice: {ids}"
    events = sorted(i for i in ids if "/retry/" not in i)
    assert events == [f"Ev{n:03d}" for n in range(1, 9)]
    expected_retries = {
        f"{fake.sent[old]['payload']['event_id']}/retry/{fake.sent[new]['retry_attempt']}"
        for old, new in fake.redelivered.items()
    }
    assert {i for i in ids if "/retry/" in i} == expected_retries
    assert "Ev007/retry/1" in expected_retries
    (attempt,) = [r for r in records if r["id"] == "Ev007/retry/1"]
    assert attempt["result"]["delivery"] == {"attempt": 1, "retry_of": "Ev007"}
    assert attempt["result"]["reason"] == "timeout"

    (first,) = [r for r in records if r["id"] == "Ev001"]
    assert first["source"] == "slack.events"
    assert first["action"] == "app.mentioned"
    assert first["auth"] == {"method": "token"}  # the app-level token's link, not a signature
    assert "token" not in first["raw"]  # Slack's verification token is stripped
    assert "<@U111>" not in json.dumps(records)  # the text is content, off the leaf

    # Three connections, each opened with the app-level token in the Authorization header.
    assert fake.authorizations == [f"Bearer {TOKEN}"] * 3
    reasons = [r.reason for r in caplog.records if hasattr(r, "reason")]
    assert reasons == ["refresh_requested"]


def test_a_failed_ingest_is_not_acknowledged_and_the_redelivery_is_stored(
    service: Service,
    fake: FakeSlack,
    run: Callable[[], SocketModeIngestor],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_ingest = service.ingest
    failed = threading.Event()

    def ingest(*args: Any, **kwargs: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise StorageError("disk I/O error")
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(service, "ingest", ingest)
    run()
    fake.wait("hello", lambda: fake.hellos == 1)
    fake.deliver(event_envelope(1))
    assert failed.wait(TIMEOUT)
    time.sleep(0.5)  # time enough for a (wrong) ack to arrive
    assert "env-1" not in fake.acks
    assert stored(service) == []
    errors = [r.error for r in caplog.records if hasattr(r, "error")]
    assert errors == ["StorageError"]  # the error's class is logged; no payload, no token

    again = fake.time_out("env-1")  # Slack's ack timeout: the same event, retry_attempt 1
    fake.wait_acked(again)
    assert fake.acks[again].durable
    assert [r["id"] for r in stored(service)] == ["Ev001", "Ev001/retry/1"]


def test_a_refused_token_fails_start_and_leaves_nothing_running(
    service: Service, fake: FakeSlack, run: Callable[[], SocketModeIngestor]
) -> None:
    fake.refuse = True
    with pytest.raises(ConfigError, match=r"apps\.connections\.open failed \(invalid_auth\)"):
        run()
    assert fake.hellos == 0


def test_an_unknown_log_fails_start(service: Service, fake: FakeSlack) -> None:
    app = SocketModeApp("main", Secret(TOKEN), log="nope", base_url=fake.base_url)
    with pytest.raises(NotFoundError):
        SocketModeIngestor(app, service).start()
    assert fake.authorizations == []


def test_stop_before_start_is_harmless(service: Service, fake: FakeSlack) -> None:
    app = SocketModeApp("main", Secret(TOKEN), base_url=fake.base_url)
    ingestor = SocketModeIngestor(app, service)
    ingestor.stop()
    assert ingestor.client is None


def test_stop_while_reconnecting_leaves_nothing_running(
    fake: FakeSlack, run: Callable[[], SocketModeIngestor]
) -> None:
    ingestor = run()
    fake.wait("hello", lambda: fake.hellos == 1)
    fake.drop()
    time.sleep(0.6)  # the client is noticing, or reconnecting, when stop() comes
    ingestor.stop()  # the `run` fixture then checks for threads, sockets and logs


def test_serve_runs_one_ingestor_per_configured_app(
    service: Service,
    fake: FakeSlack,
    run: Callable[[], SocketModeIngestor],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import uvicorn

    from trailseal.cli import main
    from trailseal.http import observability

    config = tmp_path / "data" / "trailseal.toml"
    config.write_text(
        config.read_text()
        + "\n[[slack.socket_mode]]\n"
        + 'name = "main"\n'
        + 'app_token_env = "TRAILSEAL_TEST_SLACK_APP_TOKEN"\n'
        + f'base_url = "{fake.base_url}"\n'
    )
    monkeypatch.setenv("TRAILSEAL_TEST_SLACK_APP_TOKEN", TOKEN)
    monkeypatch.setattr(observability, "configure_logging", lambda level: None)
    served: list[bool] = []

    def instead_of_serving() -> None:
        """Instead of serving HTTP: the ingestor is connected; one event goes through."""
        fake.wait("hello", lambda: fake.hellos == 1)
        fake.deliver(event_envelope(1))
        fake.wait_acked("env-1")
        served.append(True)

    def server_run(self: uvicorn.Server, sockets: Any = None) -> None:
        self.started = True
        instead_of_serving()

    # `serve` may run uvicorn either way; neither may really listen here.
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: instead_of_serving())
    monkeypatch.setattr(uvicorn.Server, "run", server_run)
    assert main(["--data-dir", str(tmp_path / "data"), "serve", "--port", "0"]) == 0
    assert served == [True]
    assert fake.acks["env-1"].durable
    assert has(service, "Ev001")
