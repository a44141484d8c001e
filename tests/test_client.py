"""The Python SDK against a real trailseal server (uvicorn in a thread).

Server behaviour always comes from the real server; ``httpx.MockTransport`` (or a
forwarding wrapper) only simulates a server that fails or lies.
"""

from __future__ import annotations

import logging
import os
import random
import stat
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from trailseal.client import (
    AuditLogHandler,
    BadRequest,
    BufferFull,
    Client,
    ClientConnectionError,
    ClientError,
    Conflict,
    Forbidden,
    InvalidEvent,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import Checkpoint, parse_signed_checkpoint, sign_checkpoint
from trailseal.core.merkle import leaf_hash
from trailseal.core.note import NoteSigner, NoteVerifier, b64decode, b64encode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.errors import (
    ConfigError,
    Error,
    InconsistencyError,
    SignatureError,
    TamperError,
    VerificationError,
)
from trailseal.http import create_app
from trailseal.ledger import Ledger
from trailseal.service.core import Service

# -- the real server --------------------------------------------------------------------


@dataclass
class Server:
    url: str
    token: str
    service: Service
    ledger: Ledger
    vkey: str
    origin: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    service, token = Service.open(tmp_path_factory.mktemp("server") / "data")
    assert token is not None
    config = uvicorn.Config(
        create_app(service), host="127.0.0.1", port=0, log_config=None, ws="none"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive(), "the server thread died"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    ledger = service.ledger(service.registry.log("default", "default"))
    (vkey,) = [v.to_string() for v in ledger.verifiers()]
    try:
        yield Server(f"http://127.0.0.1:{port}", token, service, ledger, vkey, ledger.origin)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        service.close()


class Sleeps(list[float]):
    """An injected sleep that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(server: Server, sleeps: Sleeps) -> Iterator[Callable[..., Client]]:
    """A client of the real server with the pinned key; closed after the test."""
    made: list[Client] = []

    def make(**kw: Any) -> Client:
        kw.setdefault("verifier_keys", [server.vkey])
        kw.setdefault("sleep", sleeps)
        kw.setdefault("rng", random.Random(7))
        client = Client(server.url, kw.pop("api_key", server.token), **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# -- transports that forward, fail or lie -----------------------------------------------


class Upstream:
    """Forwards a request to the real server over a real connection."""

    def __init__(self) -> None:
        self.transport = httpx.HTTPTransport()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self.transport.handle_request(request)
        try:
            content = response.read()
        finally:
            response.close()
        keep = ("content-type", "retry-after", "x-request-id")
        headers = {k: v for k, v in response.headers.items() if k.lower() in keep}
        return httpx.Response(response.status_code, headers=headers, content=content)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.transport.close()


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    body: bytes
    thread: str


@dataclass
class Wire(httpx.BaseTransport):
    """Records every request; ``rewrite`` may answer instead of the real server."""

    upstream: Upstream
    rewrite: Callable[[httpx.Request, Upstream], httpx.Response] | None = None
    seen: list[Seen] = field(default_factory=list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            Seen(
                request.method,
                request.url.path,
                dict(request.url.params),
                request.read(),
                threading.current_thread().name,
            )
        )
        if self.rewrite is not None:
            return self.rewrite(request, self.upstream)
        return self.upstream(request)

    def posts(self, suffix: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path.endswith(suffix)]

    def gets(self, suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.endswith(suffix)]


def problem(status: int, *, retry_after: str | None = None, **fields: Any) -> httpx.Response:
    body = {"type": f"urn:trailseal:problem:x{status}", "title": f"title {status}", **fields}
    headers = {"Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return httpx.Response(status, headers=headers, content=orjson.dumps({"status": status, **body}))


def rewrite_json(
    response: httpx.Response, change: Callable[[dict[str, Any]], None]
) -> httpx.Response:
    data = orjson.loads(response.content)
    change(data)
    return httpx.Response(response.status_code, json=data)


def search_entries(client: Client, **filters: Any) -> list[dict[str, Any]]:
    return [hit["entry"] for hit in client.search(**filters)]


# -- appending with verified receipts ---------------------------------------------------


def test_append_returns_a_receipt_verified_with_the_pinned_key(
    server: Server, make_client: Callable[..., Client]
) -> None:
    client = make_client()
    assert client.origin is None
    r = client.append({"action": "doc.shared", "actor": {"type": "user", "id": "U1"}})

    assert (r.status, r.source, r.verified) == ("appended", "api", True)
    assert len(r.id) == 32
    assert int(r.id, 16) >= 0
    assert client.origin == server.origin  # pinned from the first verified checkpoint
    assert r.checkpoint is not None
    assert r.checkpoint.tree_size == r.tree_size > r.index
    assert r.receipt == Receipt.from_text(r.receipt_text)
    # Independently: the receipt verifies offline against the key alone.
    verify_receipt(
        Receipt.from_text(r.receipt_text),
        [NoteVerifier.from_string(server.vkey)],
        origin=server.origin,
        entry_leaf_hash=r.leaf_hash,
    )

    again = client.append(
        {"id": r.id, "action": "doc.shared", "actor": {"type": "user", "id": "U1"}}
    )
    assert (again.status, again.index, again.leaf_hash) == ("duplicate", r.index, r.leaf_hash)
    assert again.verified

    entry = client.get_entry(r.index, purpose="test: read back")
    assert entry.verified
    assert entry.index == r.index
    assert entry.leaf_hash == r.leaf_hash
    assert entry.record["id"] == r.id
    assert entry.record["action"] == "doc.shared"
    assert leaf_hash(canonicalize(entry.record)) == r.leaf_hash

    odd = client.append({"id": "order 42#?&=", "action": "order.placed"})
    assert client.get_event("order 42#?&=").index == odd.index

    keys = client.verifier_keys()
    assert (keys.origin, keys.verifier_keys) == (server.origin, (server.vkey,))
    cp = client.checkpoint()
    assert cp.origin == server.origin
    assert cp.tree_size > odd.index

    # The purpose header reached the server: the access event records it.
    access = search_entries(client, action="access.fetch", source="trailseal.access")
    assert any(e["raw"].get("purpose") == "test: read back" for e in access)


def test_without_pinned_keys_receipts_are_parsed_but_not_verified(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(verifier_keys=None)
    r = client.append({"action": "doc.viewed"})
    assert r.status == "appended"
    assert not r.verified
    assert r.checkpoint is None
    assert not client.get_entry(r.index).verified
    assert client.checkpoint().tree_size >= r.tree_size


def test_bad_configuration_is_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pinned"):
        Client(server.url, server.token, state_path=tmp_path / "s.json")
    with pytest.raises(ConfigError, match="empty"):
        Client(server.url, server.token, verifier_keys=[])
    with pytest.raises(TypeError, match="list of key strings"):
        Client(server.url, server.token, verifier_keys=server.vkey)


# -- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "status"),
    [("before-sending", "appended"), ("after-the-server-stored-it", "duplicate")],
)
def test_a_retry_after_a_dropped_connection_reuses_the_id(
    drop: str,
    status: str,
    make_client: Callable[..., Client],
    upstream: Upstream,
    sleeps: Sleeps,
) -> None:
    dropped: list[bool] = []

    def first_attempt_fails(request: httpx.Request, up: Upstream) -> httpx.Response:
        if request.method == "POST" and not dropped:
            dropped.append(True)
            if drop != "before-sending":
                up(request)  # stored, but the answer is lost
            raise httpx.ReadError("connection reset by peer", request=request)
        return up(request)

    wire = Wire(upstream, first_attempt_fails)
    client = make_client(transport=wire, backoff_s=0.1)
    action = f"retry.{drop}"
    r = client.append({"action": action, "raw": {"note": "no id: the client assigns one"}})

    assert r.status == status
    assert r.verified
    bodies = [orjson.loads(s.body) for s in wire.posts("/events")]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    assert bodies[0]["id"] == r.id
    assert len(sleeps) == 1
    assert 0.05 <= sleeps[0] <= 0.1
    # The log holds the event exactly once.
    assert client.get_event(r.id).index == r.index
    assert [e["id"] for e in search_entries(client, action=action)] == [r.id]


def test_429_and_503_honour_retry_after_capped_then_back_off(
    make_client: Callable[..., Client], upstream: Upstream, sleeps: Sleeps
) -> None:
    now = 1_800_000_000.0
    http_date = format_datetime(datetime.fromtimestamp(now + 7, UTC), usegmt=True)
    script = [
        problem(429, retry_after="3"),
        problem(503, retry_after=http_date),
        problem(503, retry_after="1000"),  # capped at retry_after_cap_s
        problem(502),
        problem(504),
    ]
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return script.pop(0) if script else upstream(request)

    client = make_client(
        transport=httpx.MockTransport(flaky),
        clock=lambda: now,
        retry_after_cap_s=30.0,
        backoff_s=0.1,
        max_retries=5,
    )
    r = client.append({"action": "retry.after"})
    assert r.status == "appended"
    assert len(calls) == 6
    assert sleeps[:3] == [3.0, 7.0, 30.0]
    # 502 and 504 carry no Retry-After: exponential backoff with jitter.
    assert 0.4 <= sleeps[3] <= 0.8
    assert 0.8 <= sleeps[4] <= 1.6


def test_retries_give_up_with_the_problem_fields(
    make_client: Callable[..., Client], sleeps: Sleeps
) -> None:
    calls: list[str] = []

    def overloaded(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return problem(503, retry_after="2", detail="the append queue is full")

    client = make_client(transport=httpx.MockTransport(overloaded), max_retries=2)
    with pytest.raises(ServiceUnavailable) as caught:
        client.append({"action": "x.y"})
    err = caught.value
    assert (len(calls), list(sleeps)) == (3, [2.0, 2.0])
    assert (err.status, err.detail, err.retry_after_s) == (503, "the append queue is full", 2.0)
    assert "after 3 attempts" in str(err)
    assert "retry after 2 s" in err.diagnostics()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, BadRequest),
        (422, InvalidEvent),
    ],
)
def test_other_4xx_are_never_retried(
    status: int, error: type[ClientError], make_client: Callable[..., Client], sleeps: Sleeps
) -> None:
    calls: list[bytes] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.read())
        return problem(status, detail=f"refused {status}", errors=["event.x: bad"], request_id="r1")

    client = make_client(transport=httpx.MockTransport(refuse))
    secret = "s3cret-body-value"
    with pytest.raises(error) as caught:
        client.append({"action": "x.y", "raw": {"password": secret}})
    err = caught.value
    assert len(calls) == 1
    assert sleeps == []
    assert (err.status, err.type, err.title, err.detail) == (
        status,
        f"urn:trailseal:problem:x{status}",
        f"title {status}",
        f"refused {status}",
    )
    assert err.errors == ["event.x: bad"]
    assert err.request_id == "r1"
    assert isinstance(err, Error)
    assert "event.x: bad" in err.diagnostics()
    for text in (str(err), repr(err), err.diagnostics(), "".join(traceback.format_exception(err))):
        assert secret not in text  # never the request body


def test_real_server_refusals_carry_the_problem(
    server: Server, make_client: Callable[..., Client], sleeps: Sleeps
) -> None:
    client = make_client()
    with pytest.raises(InvalidEvent) as invalid:
        client.append({"actor": {"id": "U1"}})  # no action
    assert invalid.value.status == 422
    assert any("action" in e for e in invalid.value.errors)

    first = client.append({"action": "doc.created"})
    with pytest.raises(Conflict) as conflict:
        client.append({"id": first.id, "action": "doc.deleted"})
    assert conflict.value.status == 409

    with pytest.raises(NotFound):
        client.get_entry(10**9)
    assert sleeps == []


def test_the_api_key_never_leaks(
    server: Server, make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = make_client()
    assert "***" in repr(good)
    assert server.token not in repr(good)
    assert server.token not in repr(good._http.auth)

    wrong = server.token[:-4] + "AAAA"
    with pytest.raises(Unauthorized) as unauthorized:
        make_client(api_key=wrong).append({"action": "x.y"})

    unreachable = Client(
        "http://127.0.0.1:1", server.token, max_retries=1, sleep=lambda s: None, timeout_s=2
    )
    with unreachable, pytest.raises(ClientConnectionError) as refused:
        unreachable.append({"action": "x.y"})
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None

    for err in (unauthorized.value, refused.value):
        text = str(err) + repr(err) + err.diagnostics() + "".join(traceback.format_exception(err))
        assert server.token not in text
        assert wrong not in text
    for record in caplog.records:
        assert server.token not in record.getMessage()
        assert server.token not in str(record.__dict__)


# -- batches and buffering --------------------------------------------------------------


def test_batches_are_chunked_every_receipt_verified_and_search_pages_followed(
    make_client: Callable[..., Client], upstream: Upstream
) -> None:
    wire = Wire(upstream)
    client = make_client(transport=wire, max_batch_events=3)
    action = f"batch.item{uuid.uuid4().hex[:8]}"
    events: list[dict[str, Any]] = [{"action": action, "raw": {"n": n}} for n in range(6)]
    events.append({"id": f"batch-{uuid.uuid4().hex}", "action": action, "raw": {"n": 6}})
    receipts = client.append_batch(events)

    assert len(wire.posts("/events/batch")) == 3  # 3 + 3 + 1
    assert [r.status for r in receipts] == ["appended"] * 7
    assert all(r.verified for r in receipts)
    assert [r.index for r in receipts] == sorted(r.index for r in receipts)
    assert receipts[6].id == events[6]["id"]
    assert "id" not in events[0]

    again = client.append_batch([{**e, "id": r.id} for e, r in zip(events, receipts, strict=True)])
    assert [r.status for r in again] == ["duplicate"] * 7
    assert [r.index for r in again] == [r.index for r in receipts]

    hits = list(client.search(action=action, page_size=3, purpose="test: paging"))
    assert [h["index"] for h in hits] == [r.index for r in reversed(receipts)]  # newest first
    pages = wire.gets("/events")
    assert len(pages) == 3
    assert ["cursor" in p.params for p in pages] == [False, True, True]
    with pytest.raises(TypeError, match="unknown search filter"):
        client.search(colour="red")


def test_buffer_flushes_at_batch_size_and_on_close(
    server: Server, make_client: Callable[..., Client], upstream: Upstream
) -> None:
    wire = Wire(upstream)
    action = f"buffered.{uuid.uuid4().hex[:8]}"
    with Client(
        server.url, server.token, verifier_keys=[server.vkey], transport=wire, batch_size=3
    ) as client:
        client.buffer({"action": action})
        client.buffer({"action": action})
        assert (client.buffered, wire.posts()) == (2, [])
        client.buffer({"action": action})  # the third fills the batch
        assert (client.buffered, len(wire.posts("/events/batch"))) == (0, 1)
        client.buffer({"action": action})
        client.buffer({"action": action})
        with pytest.raises(InvalidEvent) as invalid:
            client.buffer({"actor": {"id": "U1"}})  # refused here, not at flush time
        assert invalid.value.status is None
        assert client.buffered == 2
    assert len(wire.posts("/events/batch")) == 2  # the rest went on close
    assert len(search_entries(make_client(), action=action)) == 5

    with Client(server.url, server.token, batch_size=10, max_buffer_events=2) as small:
        small.buffer({"action": action})
        small.buffer({"action": action})
        with pytest.raises(BufferFull):
            small.buffer({"action": action})


def test_a_flush_that_fails_keeps_the_events_for_the_next(
    make_client: Callable[..., Client], upstream: Upstream
) -> None:
    down = [True]

    def maybe_down(request: httpx.Request) -> httpx.Response:
        return problem(503) if down[0] else upstream(request)

    client = make_client(transport=httpx.MockTransport(maybe_down), max_retries=0, batch_size=50)
    action = f"kept.{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        client.buffer({"action": action})
    with pytest.raises(ServiceUnavailable):
        client.flush()
    assert client.buffered == 3
    down[0] = False
    receipts = client.flush()
    assert [r.status for r in receipts] == ["appended"] * 3
    assert client.buffered == 0


def test_the_background_flusher_sends_and_stops_on_close(
    server: Server, upstream: Upstream
) -> None:
    wire = Wire(upstream)
    client = Client(
        server.url,
        server.token,
        verifier_keys=[server.vkey],
        transport=wire,
        batch_size=100,
        flush_interval_s=0.05,
    )
    flusher = client._flusher
    assert flusher is not None
    assert flusher.daemon
    client.buffer({"action": "background.flush"})
    deadline = time.monotonic() + 5
    while not wire.posts() and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()  # waits for the flush in flight
    assert not flusher.is_alive()
    assert client.buffered == 0
    assert client.last_flush_error is None
    assert {s.thread for s in wire.posts()} == {"trailseal-flush"}
    with pytest.raises(ClientError, match="closed"):
        client.buffer({"action": "too.late"})


# -- a server that lies about receipts --------------------------------------------------


def _other_receipt(client: Client) -> tuple[str, str]:
    other = client.append({"action": "lie.decoy"})
    return other.receipt_text, b64encode(other.leaf_hash)


def _flip_signature(receipt_text: str) -> str:
    head, _, sig = receipt_text.rpartition(" ")
    blob = bytearray(b64decode(sig.strip(), "sig"))
    blob[-1] ^= 1
    return f"{head} {b64encode(bytes(blob))}\n"


def _foreign_signature(receipt_text: str, server: Server) -> str:
    body, _, checkpoint = receipt_text.partition("\n\n")
    impostor = NoteSigner.generate(server.origin)  # same name, another key
    forged = sign_checkpoint(parse_signed_checkpoint(checkpoint.encode()).checkpoint, [impostor])
    return body + "\n\n" + forged.to_bytes().decode()


@pytest.mark.parametrize(
    ("lie", "error"),
    [
        ("another entry's receipt", VerificationError),
        ("another entry's leaf hash", VerificationError),
        ("another event's id", VerificationError),
        ("a flipped signature bit", SignatureError),
        ("an untrusted key's signature", SignatureError),
        ("a garbled receipt", VerificationError),
    ],
)
def test_a_lying_append_answer_is_caught(
    lie: str,
    error: type[Error],
    server: Server,
    make_client: Callable[..., Client],
    upstream: Upstream,
) -> None:
    decoy_receipt, decoy_leaf = _other_receipt(make_client())

    def change(data: dict[str, Any]) -> None:
        match lie:
            case "another entry's receipt":
                data["receipt"] = decoy_receipt
            case "another entry's leaf hash":
                data["leaf_hash"] = decoy_leaf
            case "another event's id":
                data["id"] = "someone-else"
            case "a flipped signature bit":
                data["receipt"] = _flip_signature(data["receipt"])
            case "an untrusted key's signature":
                data["receipt"] = _foreign_signature(data["receipt"], server)
            case _:
                data["receipt"] = data["receipt"].replace("index", "idx")

    def liar(request: httpx.Request) -> httpx.Response:
        response = upstream(request)
        if request.method == "POST":
            return rewrite_json(response, change)
        return response

    client = make_client(transport=httpx.MockTransport(liar))
    with pytest.raises(error):
        client.append({"action": "lie.target"})


def test_a_lying_batch_or_entry_answer_is_caught(
    make_client: Callable[..., Client], upstream: Upstream
) -> None:
    honest = make_client().append({"action": "lie.entry"})

    def liar(request: httpx.Request) -> httpx.Response:
        response = upstream(request)
        path = request.url.path
        if path.endswith("/events/batch"):
            return rewrite_json(response, lambda d: d["results"].reverse())
        if "/entries/" in path:
            return rewrite_json(response, lambda d: d["entry"].update(action="lie.rewritten"))
        return response

    client = make_client(transport=httpx.MockTransport(liar))
    with pytest.raises(VerificationError, match="answered for event"):
        client.append_batch([{"action": "lie.a"}, {"action": "lie.b"}])
    with pytest.raises(TamperError) as tampered:
        client.get_entry(honest.index)
    assert tampered.value.index == honest.index
    assert tampered.value.found == honest.leaf_hash


# -- consistency: state across clients, history rewrites --------------------------------


def _state(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def test_the_last_seen_checkpoint_persists_across_clients(
    server: Server, make_client: Callable[..., Client], upstream: Upstream, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "default.json"
    first = make_client(state_path=path)
    r1 = first.append({"action": "state.one"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _state(path)["tree_size"] == r1.tree_size == first.state.tree_size  # type: ignore[union-attr]
    assert sorted(p.name for p in path.parent.iterdir()) == ["default.json"]  # no temp files
    first.close()

    wire = Wire(upstream)
    second = make_client(state_path=path, transport=wire)
    assert second.origin == server.origin
    assert second.state == first.state
    r2 = second.append({"action": "state.two"})
    (proof,) = wire.gets("/proof/consistency")
    assert proof.params == {"first": str(r1.tree_size), "second": str(r2.tree_size)}
    assert _state(path)["tree_size"] == r2.tree_size

    # A receipt into an older checkpoint (an answer racing a newer one) is no rollback:
    # it is proved to be a prefix of the state, which stays where it was.
    replay = Wire(upstream, lambda req, up: up(req) if req.method == "GET" else stale)
    stale_client = make_client(state_path=path, transport=replay)
    stale = httpx.Response(201, json=_append_answer(r1))
    assert stale_client.append({"id": r1.id, "action": "state.one"}).index == r1.index
    assert stale_client.state == second.state
    assert len(replay.gets("/proof/consistency")) == 1

    with pytest.raises(ConfigError, match="origin"):
        make_client(state_path=path, origin="example.com/another-log")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unusable"):
        make_client(state_path=path)


def _append_answer(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "source": r.source,
        "index": r.index,
        "leaf_hash": b64encode(r.leaf_hash),
        "tree_size": r.tree_size,
        "status": r.status,
        "receipt": r.receipt_text,
    }


@pytest.mark.parametrize(
    "rewrite",
    [
        "forged root at a larger size",
        "forged root with a forged proof answer",
        "a size the server cannot prove",
        "an equal size with another root",
        "a smaller size (rollback)",
    ],
)
def test_a_server_that_rewrites_history_is_caught_by_its_clients(
    rewrite: str,
    server: Server,
    make_client: Callable[..., Client],
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    writer = make_client()
    writer.append({"action": "history.start"})
    old = writer.checkpoint().to_bytes()  # an honest checkpoint, soon out of date
    writer.append({"action": "history.before"})
    path = tmp_path / "state.json"
    pinned = make_client(state_path=path).check_consistency()
    for _ in range(3):
        writer.append({"action": "history.after"})
    real = writer.checkpoint()

    def forge(size: int) -> bytes:
        fake = Checkpoint(server.origin, size, os.urandom(32))
        return sign_checkpoint(fake, server.ledger.signers).to_bytes()  # the real key signs

    served = {
        "forged root at a larger size": forge(real.tree_size),
        "forged root with a forged proof answer": forge(real.tree_size),
        "a size the server cannot prove": forge(real.tree_size + 1000),
        "an equal size with another root": forge(pinned.tree_size),
        "a smaller size (rollback)": old,
    }[rewrite]

    def liar(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/checkpoint"):
            return httpx.Response(200, content=served)
        response = upstream(request)
        if rewrite == "forged root with a forged proof answer" and "consistency" in str(
            request.url
        ):
            return rewrite_json(response, lambda d: d.update(checkpoint=served.decode()))
        return response

    before = path.read_bytes()
    client = make_client(state_path=path, transport=httpx.MockTransport(liar))
    with pytest.raises(InconsistencyError) as caught:
        client.check_consistency()
    err = caught.value
    assert err.older
    assert err.newer
    assert served.decode() in (err.older, err.newer)
    assert "older checkpoint" in err.diagnostics()
    if rewrite == "forged root with a forged proof answer":
        assert err.proof  # the proof that failed is part of the evidence
    assert path.read_bytes() == before
    assert client.state == pinned

    honest = make_client(state_path=path).check_consistency()
    assert honest.tree_size >= real.tree_size
    assert _state(path)["tree_size"] == honest.tree_size


# -- the logging handler ----------------------------------------------------------------


def test_log_records_land_in_the_log_searchable_by_action(
    server: Server, make_client: Callable[..., Client], upstream: Upstream
) -> None:
    wire = Wire(upstream)
    client = make_client(transport=wire, batch_size=2)
    handler = AuditLogHandler(client, flush_interval_s=0.05)
    failures: list[logging.LogRecord] = []
    handler.handleError = failures.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger(f"tests.audit.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    tag = uuid.uuid4().hex[:8]
    try:
        logger.info(
            "alice exported %s",
            "report.csv",
            extra={
                "audit_action": f"report.exported{tag}",
                "audit_actor": {"type": "user", "id": "U-alice"},
            },
        )
        logger.warning("disk at %d%%", 91)
        secret_local = "do-not-ship-locals"
        try:
            raise ValueError(f"boom {tag}")
        except ValueError:
            logger.exception("job failed", extra={"audit_action": f"job.failed{tag}"})
        del secret_local
        logger.info("bad actor", extra={"audit_actor": {"nickname": "x"}})  # schema refuses
        logging.getLogger("httpx").addHandler(handler)
        logging.getLogger("httpx").warning("never audited")  # the client's own chatter
        logging.getLogger("httpx").removeHandler(handler)
        deadline = time.monotonic() + 5
        while client.buffered and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logger.removeHandler(handler)
        handler.close()

    assert len(failures) == 1
    assert failures[0].getMessage() == "bad actor"
    assert {s.thread for s in wire.posts()} == {"trailseal-flush"}  # emit never sent itself

    (exported,) = search_entries(client, action=f"report.exported{tag}")
    assert exported["actor"] == {"type": "user", "id": "U-alice"}
    assert exported["source"] == "python.logging"
    raw = exported["raw"]
    assert (raw["logger"], raw["message"], raw["level"]) == (
        logger.name,
        "alice exported report.csv",
        "INFO",
    )
    assert raw["func"] == "test_log_records_land_in_the_log_searchable_by_action"
    assert raw["module"] == "test_client"
    assert isinstance(raw["line"], int)
    assert exported["time"].endswith("Z")

    (failed,) = search_entries(client, action=f"job.failed{tag}")
    exc = failed["raw"]["exception"]
    assert exc["type"] == "builtins.ValueError"
    assert exc["message"] == f"boom {tag}"
    assert "Traceback" in exc["traceback"]
    assert "do-not-ship-locals" not in orjson.dumps(failed).decode()

    warnings = [
        e for e in search_entries(client, action="log.warning") if e["raw"]["logger"] == logger.name
    ]
    assert [e["raw"]["message"] for e in warnings] == ["disk at 91%"]
    assert not [
        e for e in search_entries(client, q="never audited") if e.get("source") == "python.logging"
    ]
