"""Ingest over HTTP: every refusal is RFC 9457 problem+json with the right status, nothing
refused is stored, retries are idempotent, receipts verify offline, secrets and content
bodies never reach the leaf or the disk in clear, and overload is a 503 or 429 with
Retry-After that acknowledges nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.http.support import Env, FixedClock, assert_problem
from trailseal.core.canonical import canonicalize
from trailseal.core.merkle import leaf_hash
from trailseal.core.note import NoteVerifier
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.errors import NotFoundError
from trailseal.http.deps import HttpOptions
from trailseal.policy.content import check_commitment
from trailseal.service.core import ServiceOptions
from trailseal.service.ingest import _deeper_than
from trailseal.storage import sqlite as sqlite_storage

JSON_HEADERS = {"Content-Type": "application/json"}
NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}


def raw_post(
    env: Env, path: str, body: bytes, content_type: str | None, **h: str
) -> httpx.Response:
    headers = env.h(**h)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return env.client.post(path, content=body, headers=headers)


def stored(env: Env, index: int, tenant: str = "a", log: str = "main") -> dict[str, Any]:
    record: dict[str, Any] = json.loads(env.ledger(tenant, log).entry(index).data)
    return record


def is_stored(env: Env, event_id: str, source: str = "api", log: str = "main") -> bool:
    try:
        env.ledger("a", log).find(event_id, source)
    except NotFoundError:
        return False
    return True


# -- malformed requests ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{bad", b'{"action": "x",}', b"", b"\xff\xfe", b'{"action": "x"} trailing', b"NaN"],
)
def test_malformed_json_is_400(env: Env, body: bytes) -> None:
    for path in ("/v1/logs/main/events", "/v1/logs/main/events/batch"):
        problem = assert_problem(raw_post(env, path, body, "application/json"), 400, "bad-request")
        assert "JSON" in problem["detail"] or "empty" in problem["detail"]
    assert env.size("a", "main") == 0


@pytest.mark.parametrize("body", [b"[]", b'[{"action": "x"}]', b'"x"', b"42", b"null", b"true"])
def test_a_body_that_is_not_an_object_is_422(env: Env, body: bytes) -> None:
    r = raw_post(env, "/v1/logs/main/events", body, "application/json")
    problem = assert_problem(r, 422, "invalid-event")
    assert "object" in problem["detail"]
    assert env.size("a", "main") == 0


@pytest.mark.parametrize("body", [b'{"action": "x"}', b'"x"', b"null"])
def test_a_batch_that_is_not_an_array_is_422(env: Env, body: bytes) -> None:
    r = raw_post(env, "/v1/logs/main/events/batch", body, "application/json")
    problem = assert_problem(r, 422, "invalid-event")
    assert "array" in problem["detail"]


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({"action": "x", "colour": "red"}, "colour"),
        ({"action": "x", "actor": {"id": "U1", "nickname": "bob"}}, "nickname"),
        ({"action": "x", "targets": [{"id": "C1", "owner": "U1"}]}, "owner"),
        ({"action": "x", "content": {"body": "b", "lang": "en"}}, "lang"),
    ],
)
def test_an_unknown_field_is_422_and_named(env: Env, event: dict[str, Any], named: str) -> None:
    problem = assert_problem(env.post("main", event), 422, "invalid-event")
    assert any(named in e for e in problem["errors"]), problem
    assert "nothing was stored" in problem["detail"]
    assert env.size("a", "main") == 0


@pytest.mark.parametrize(
    "action", ["channel renamed", "", ".x", "x.", "a..b", "a/b", "ü.x", "x" * 129, None, 7]
)
def test_a_bad_action_is_422(env: Env, action: Any) -> None:
    event = {"id": "e1"} if action is None else {"id": "e1", "action": action}
    problem = assert_problem(env.post("main", event), 422, "invalid-event")
    assert any("action" in e for e in problem["errors"]), problem
    assert env.size("a", "main") == 0


def test_raw_may_hold_anything(env: Env) -> None:
    raw = {"anything": [1, 2.5, None, True, {"deep": {"er": "ok"}}], "": "empty key"}
    r = env.post("main", {"action": "x", "raw": raw})
    assert r.status_code == 201, r.text
    assert stored(env, r.json()["index"])["raw"] == raw


# -- time -----------------------------------------------------------------------------


def test_an_event_time_far_in_the_future_is_refused_for_clock_skew(
    make_env: Callable[..., Env],
) -> None:
    clock = FixedClock()
    env = make_env(clock=clock)
    now = clock.now

    def at(seconds: float, event_id: str) -> httpx.Response:
        moment = now.timestamp() + seconds
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        return env.post("main", {"id": event_id, "action": "x", "time": when + "Z"})

    problem = assert_problem(at(301, "late"), 422, "invalid-event")
    assert "clock skew" in " ".join(problem["errors"])
    assert "301 s ahead" in " ".join(problem["errors"])
    assert not is_stored(env, "late")
    # Within the tolerance, and any time in the past, is accepted as sent.
    assert at(299, "close").status_code == 201
    assert at(-86400 * 365, "old").status_code == 201
    assert (
        stored(env, 1)["time"]
        == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now.timestamp() - 86400 * 365)) + "Z"
    )
    # Without a time, the server's reading is the event's time.
    r = env.post("main", {"id": "untimed", "action": "x"})
    assert stored(env, r.json()["index"])["time"] == "2025-06-01T12:00:00.000000Z"
    assert stored(env, r.json()["index"])["received_at"] == "2025-06-01T12:00:00.000000Z"


def test_early_years_are_kept_and_sorted_as_times(env: Env) -> None:
    for event_id, when in (
        ("y636", "0636-10-15T04:25:12+18:55"),
        ("y2000", "2000-01-01T00:00:00Z"),
    ):
        r = env.post("main", {"id": event_id, "action": "x", "time": when})
        assert r.status_code == 201, r.text
    assert stored(env, 0)["time"] == "0636-10-15T04:25:12+18:55"  # as sent
    hits = env.client.get(
        "/v1/logs/main/events", params={"until": "1000-01-01T00:00:00Z"}, headers=env.h()
    ).json()["hits"]
    assert [h["entry"]["id"] for h in hits] == ["y636"]


@pytest.mark.parametrize(
    "when",
    [
        "yesterday",
        "2025-06-01",
        "2025-06-01T12:00:00",
        "2025-13-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_an_event_time_that_is_not_rfc3339_utc_is_422(env: Env, when: str) -> None:
    problem = assert_problem(env.post("main", {"action": "x", "time": when}), 422)
    assert any("time" in e for e in problem["errors"]), problem
    assert env.size("a", "main") == 0


# -- limits and media types -----------------------------------------------------------


def test_an_oversized_body_is_413_and_not_stored(make_env: Callable[..., Env]) -> None:
    env = make_env(http=HttpOptions(max_body_bytes=1024, max_batch_body_bytes=2048))
    big = {"id": "big", "action": "x", "raw": {"pad": "p" * 1100}}
    assert_problem(env.post("main", big), 413, "too-large")
    # Without Content-Length (chunked): the limit holds while streaming.
    data = json.dumps(big).encode()
    chunks = (data[i : i + 100] for i in range(0, len(data), 100))
    r = env.client.post("/v1/logs/main/events", content=chunks, headers={**env.h(), **JSON_HEADERS})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "too-large")
    batch = [{"action": "x", "raw": {"pad": "p" * 500}} for _ in range(4)]
    r = env.client.post("/v1/logs/main/events/batch", json=batch, headers=env.h())
    assert_problem(r, 413, "too-large")
    assert env.size("a", "main") == 0
    # Just under the limits is fine.
    assert env.post("main", {"action": "x", "raw": {"pad": "p" * 900}}).status_code == 201
    r = env.client.post("/v1/logs/main/events/batch", json=batch[:3], headers=env.h())
    assert r.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/xml", "json"],
)
def test_a_wrong_content_type_is_415(env: Env, content_type: str | None) -> None:
    body = b'{"action": "x"}'
    r = raw_post(env, "/v1/logs/main/events", body, content_type)
    problem = assert_problem(r, 415, "unsupported-media-type")
    assert "application/json" in problem["detail"]
    r = raw_post(env, "/v1/logs/main/events/batch", b"[" + body + b"]", content_type)
    problem = assert_problem(r, 415, "unsupported-media-type")
    assert "application/x-ndjson" in problem["detail"]
    # NDJSON is for batches only.
    r = raw_post(env, "/v1/logs/main/events", body, "application/x-ndjson")
    assert_problem(r, 415, "unsupported-media-type")
    assert env.size("a", "main") == 0


def test_media_type_parameters_and_case_are_accepted(env: Env) -> None:
    body = b'{"action": "x"}'
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        assert raw_post(env, "/v1/logs/main/events", body, content_type).status_code == 201


# -- batches --------------------------------------------------------------------------


def test_json_array_and_ndjson_batches(env: Env) -> None:
    events = [{"id": f"j{i}", "action": "batch.json", "raw": {"i": i}} for i in range(5)]
    r = env.client.post("/v1/logs/main/events/batch", json=events, headers=env.h("a", "ingest"))
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["id"] for x in results] == [f"j{i}" for i in range(5)]
    assert [x["index"] for x in results] == list(range(5))
    assert {x["status"] for x in results} == {"appended"}
    assert {x["tree_size"] for x in results} == {5}

    lines = [json.dumps({"id": f"n{i}", "action": "batch.ndjson"}) for i in range(3)]
    body = ("\n".join(lines[:2]) + "\n\n  \n" + lines[2] + "\r\n").encode()
    r = raw_post(env, "/v1/logs/main/events/batch", body, "application/x-ndjson", role="ingest")
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["id"], x["index"], x["status"]) for x in results] == [
        ("n0", 5, "appended"),
        ("n1", 6, "appended"),
        ("n2", 7, "appended"),
    ]
    assert env.size("a", "main") == 8
    assert [stored(env, i)["id"] for i in range(8)] == [
        *(f"j{i}" for i in range(5)),
        *(f"n{i}" for i in range(3)),
    ]


@pytest.mark.parametrize("form", ["json", "ndjson"])
def test_a_batch_with_one_bad_event_stores_nothing(env: Env, form: str) -> None:
    env.ingest("main", [{"id": "before", "action": "x"}])
    events: list[Any] = [{"id": f"ok{i}", "action": "fine"} for i in range(5)]
    events[3] = {"id": "bad", "action": "not fine"}
    if form == "json":
        r = env.client.post("/v1/logs/main/events/batch", json=events, headers=env.h())
    else:
        body = "\n".join(json.dumps(e) for e in events).encode()
        r = raw_post(env, "/v1/logs/main/events/batch", body, "application/x-ndjson")
    problem = assert_problem(r, 422, "invalid-event")
    assert "nothing was stored" in problem["detail"]
    assert len(problem["errors"]) == 1
    assert problem["errors"][0].startswith("[3] "), problem
    assert env.size("a", "main") == 1
    assert not any(is_stored(env, f"ok{i}") for i in range(5))


def test_every_bad_event_of_a_batch_is_named(env: Env) -> None:
    events = [{"action": "ok"}, {"action": "x", "zz": 1}, {"action": "ok"}, {}, "no"]
    r = env.client.post("/v1/logs/main/events/batch", json=events, headers=env.h())
    problem = assert_problem(r, 422)
    assert [e.split(" ")[0] for e in problem["errors"]] == ["[1]", "[3]", "[4]"]
    assert env.size("a", "main") == 0


def test_a_bad_ndjson_line_is_400_naming_the_line(env: Env) -> None:
    body = b'{"action": "x"}\n{"action": "y"}\n{oops}\n'
    r = raw_post(env, "/v1/logs/main/events/batch", body, "application/x-ndjson")
    problem = assert_problem(r, 400, "bad-request")
    assert "line 3" in problem["detail"]
    assert env.size("a", "main") == 0


@pytest.mark.parametrize(
    ("body", "content_type"), [(b"[]", "application/json"), (b"\n\n", "application/x-ndjson")]
)
def test_an_empty_batch_is_422(env: Env, body: bytes, content_type: str) -> None:
    r = raw_post(env, "/v1/logs/main/events/batch", body, content_type)
    assert "empty" in assert_problem(r, 422)["detail"]


def test_too_many_events_in_a_batch_is_422(make_env: Callable[..., Env]) -> None:
    env = make_env()
    r = env.client.post(
        "/v1/logs/main/events/batch", json=[{"action": "x"}] * 1001, headers=env.h()
    )
    problem = assert_problem(r, 422, "invalid-event")
    assert "at most 1000" in problem["detail"]
    assert problem["errors"] == ["1001 events were sent"]
    assert env.size("a", "main") == 0
    small = make_env(options=ServiceOptions(max_batch_events=5))
    r = small.client.post(
        "/v1/logs/main/events/batch", json=[{"action": "x"}] * 6, headers=small.h()
    )
    assert "at most 5" in assert_problem(r, 422)["detail"]
    r = small.client.post(
        "/v1/logs/main/events/batch", json=[{"action": "x"}] * 5, headers=small.h()
    )
    assert r.status_code == 200
    assert small.size("a", "main") == 5


# -- idempotency ----------------------------------------------------------------------


def test_a_retry_returns_the_original_receipt_and_stores_one_copy(env: Env) -> None:
    event = {"id": "evt-1", "source": "chat.events", "action": "x", "content": {"body": "hi"}}
    first = env.post("main", event)
    assert first.status_code == 201
    env.post("main", {"action": "in.between"})
    for _ in range(2):
        again = env.post("main", event)
        assert again.status_code == 200, again.text
        a, b = first.json(), again.json()
        assert (b["index"], b["leaf_hash"], b["id"], b["source"]) == (
            a["index"],
            a["leaf_hash"],
            a["id"],
            a["source"],
        )
        assert b["status"] == "duplicate"
    # Inside a batch too, next to a new event.
    r = env.client.post(
        "/v1/logs/main/events/batch", json=[event, {"id": "evt-2", "action": "y"}], headers=env.h()
    )
    statuses = [(x["id"], x["index"], x["status"]) for x in r.json()["results"]]
    assert statuses == [("evt-1", 0, "duplicate"), ("evt-2", 2, "appended")]
    assert env.size("a", "main") == 3
    hits = env.client.get(
        "/v1/logs/main/events", params={"source": "chat.events"}, headers=env.h()
    ).json()["hits"]
    assert [h["entry"]["id"] for h in hits] == ["evt-1"]
    # The same id from another source is another event.
    assert env.post("main", {**event, "source": "api"}).status_code == 201


def test_the_same_id_with_other_content_is_409(env: Env) -> None:
    original = env.post("main", {"id": "evt-1", "action": "x", "raw": {"v": 1}})
    assert original.status_code == 201
    for changed in (
        {"id": "evt-1", "action": "x", "raw": {"v": 2}},
        {"id": "evt-1", "action": "y", "raw": {"v": 1}},
        {"id": "evt-1", "action": "x", "raw": {"v": 1}, "content": {"body": "new"}},
    ):
        problem = assert_problem(env.post("main", changed), 409, "conflict")
        assert problem["index"] == 0
        assert "evt-1" in problem["detail"]
    r = env.client.post(
        "/v1/logs/main/events/batch",
        json=[{"id": "evt-1", "action": "z"}, {"id": "evt-3", "action": "z"}],
        headers=env.h(),
    )
    assert [x["status"] for x in r.json()["results"]] == ["conflict", "appended"]
    assert stored(env, 0)["raw"] == {"v": 1}
    assert env.size("a", "main") == 2


def test_a_changed_body_is_a_conflict_even_though_bodies_are_not_stored(env: Env) -> None:
    event = {"id": "m1", "action": "message.posted", "content": {"body": "original text"}}
    assert env.post("main", event).status_code == 201
    assert env.post("main", event).status_code == 200
    changed = {**event, "content": {"body": "edited text"}}
    assert_problem(env.post("main", changed), 409, "conflict")


# -- receipts -------------------------------------------------------------------------


def verifiers_of(env: Env, log: str = "main") -> tuple[str, list[NoteVerifier]]:
    keys = env.client.get(f"/v1/logs/{log}/keys", headers=env.h("a", "ingest")).json()
    return keys["origin"], [NoteVerifier.from_string(k) for k in keys["verifier_keys"]]


def test_receipts_verify_offline_against_the_published_keys(env: Env) -> None:
    results = [env.post("main", {"id": "single", "action": "x"}).json()]
    results += env.ingest("main", [{"id": f"b{i}", "action": "y"} for i in range(20)])
    results.append(env.post("main", {"id": "single", "action": "x"}).json())  # a retry
    origin, verifiers = verifiers_of(env)
    assert origin == "localhost/trailseal/a/main"
    assert env.verifier_keys[("a", "main")] in [v.to_string() for v in verifiers]
    for result in results:
        receipt = Receipt.from_text(result["receipt"])
        assert receipt.index == result["index"]
        leaf = base64.b64decode(result["leaf_hash"])
        data = env.ledger("a", "main").entry(result["index"]).data
        assert leaf_hash(data) == leaf
        signed = verify_receipt(receipt, verifiers, origin=origin, entry=data)
        assert signed.tree_size >= result["index"] + 1
        verify_receipt(receipt, verifiers, origin=origin, entry_leaf_hash=leaf)
    # Another log's keys do not verify them.
    _, vault_keys = verifiers_of(env, "vault")
    receipt = Receipt.from_text(results[0]["receipt"])
    with pytest.raises(Exception, match=r"(?i)signature|trusted|origin"):
        verify_receipt(receipt, vault_keys, origin=origin, entry_leaf_hash=leaf)


# -- secrets and content --------------------------------------------------------------


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@pytest.fixture
def leaks() -> dict[str, str]:
    """Fresh secrets of every built-in detector, so that a scan for them means something."""
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return {
        "bot": f"xoxb-{_random(string.digits, 12)}-{_random(string.ascii_letters, 24)}",
        "user": f"xoxp-{_random(string.digits, 12)}-{_random(string.ascii_letters, 20)}",
        "app": f"xapp-1-A{_random(string.digits, 10)}-{_random(string.hexdigits, 32)}",
        "bearer": _random(string.ascii_letters + string.digits, 32),
        "aws": "AKIA" + _random(string.ascii_uppercase + string.digits, 16),
        "pem": pem,
        "pem_body": pem.splitlines()[1],
        "in_body": f"xoxb-{_random(string.digits, 12)}-{_random(string.ascii_letters, 24)}",
        "as_key": f"xoxe-{_random(string.digits, 10)}-{_random(string.ascii_letters, 20)}",
    }


def _leaky_event(leaks: dict[str, str], body: str) -> dict[str, Any]:
    return {
        "id": "leaky-1",
        "action": "app.token_rotated",
        "actor": {"type": "bot", "id": "B1", "name": f"deploy bot Bearer {leaks['bearer']}"},
        "targets": [{"type": "app", "id": "A1", "name": leaks["app"]}],
        "context": {"location": f"key={leaks['aws']} region=eu"},
        "raw": {
            "token": leaks["bot"],
            "nested": [{"pem": f"key:\n{leaks['pem']}"}],
            "a/b~c": f"user token {leaks['user']}",
            leaks["as_key"]: "value",
        },
        "content": {"body": f"{body} {leaks['in_body']}"},
    }


SECRETS_TO_SCAN = ("bot", "user", "app", "bearer", "aws", "pem_body", "in_body", "as_key")


def test_secrets_are_masked_and_recorded_with_json_pointers(
    env: Env, leaks: dict[str, str]
) -> None:
    body = f"body-{secrets.token_hex(8)}"
    r = env.post("main", _leaky_event(leaks, body))
    assert r.status_code == 201, r.text
    entry = env.client.get(f"/v1/logs/main/entries/{r.json()['index']}", headers=env.h()).json()[
        "entry"
    ]
    text = json.dumps(entry)
    for name in SECRETS_TO_SCAN:
        assert leaks[name] not in text, name
    assert body not in text
    assert entry["actor"]["name"] == "deploy bot [REDACTED:bearer_token]"
    assert entry["targets"][0]["name"] == "[REDACTED:slack_app_token]"
    assert entry["context"]["location"] == "key=[REDACTED:aws_access_key] region=eu"
    assert entry["raw"]["token"] == "[REDACTED:slack_token]"
    assert entry["raw"]["nested"][0]["pem"] == "key:\n[REDACTED:private_key]\n"
    assert entry["raw"]["a/b~c"] == "user token [REDACTED:slack_token]"
    assert entry["raw"]["[REDACTED:slack_token]"] == "value"
    assert set(entry["content"]) >= {"commitment", "salt", "encrypted", "ref"}
    assert entry["content"]["encrypted"] is False
    found = {(x["path"], x["detector"], x["mode"]) for x in entry["redaction"]}
    assert found == {
        ("/actor/name", "bearer_token", "mask"),
        ("/targets/0/name", "slack_app_token", "mask"),
        ("/context/location", "aws_access_key", "mask"),
        ("/raw/token", "slack_token", "mask"),
        ("/raw/nested/0/pem", "private_key", "mask"),
        ("/raw/a~1b~0c", "slack_token", "mask"),
        ("/raw/[REDACTED:slack_token]", "slack_token", "mask"),
        ("/content/body", "slack_token", "mask"),
        ("/content/body", "content", "omit"),
    }
    # Redaction records say where, never what.
    for name in SECRETS_TO_SCAN:
        assert leaks[name] not in json.dumps(entry["redaction"])


def test_secrets_and_bodies_never_reach_the_disk(env: Env, leaks: dict[str, str]) -> None:
    body = f"body-{secrets.token_hex(8)}"
    captured = f"captured-{secrets.token_hex(8)}"
    assert env.post("main", _leaky_event(leaks, body)).status_code == 201
    r = env.post("vault", {**_leaky_event(leaks, captured), "id": "leaky-2"})
    assert r.status_code == 201
    # A refused event's secret is not kept either.
    assert env.post("main", {"action": "x", "bad": leaks["bot"]}).status_code == 422
    # Fill the search index and the access log too.
    for log in ("main", "vault"):
        assert env.client.get(
            f"/v1/logs/{log}/events", params={"q": "deploy"}, headers=env.h()
        ).json()["hits"]
    files = env.data_files()
    names = set(files)
    assert {"trailseal.db", "service.db", "search.db"} <= names
    assert {"trailseal.db-wal", "service.db-wal", "search.db-wal"} & names
    for name, data in files.items():
        for secret in SECRETS_TO_SCAN:
            assert leaks[secret].encode() not in data, (name, secret)
        assert body.encode() not in data, name
        assert captured.encode() not in data, name


def test_captured_content_is_sealed_and_readable_by_an_auditor_with_a_purpose(
    env: Env, leaks: dict[str, str]
) -> None:
    body = f"quarterly numbers {secrets.token_hex(8)} are final; token {leaks['in_body']}"
    r = env.post(
        "vault",
        {
            "id": "m1",
            "action": "message.posted",
            "content": {"body": body, "media_type": "text/markdown"},
        },
    )
    assert r.status_code == 201
    leaf = stored(env, r.json()["index"], log="vault")["content"]
    assert leaf["encrypted"] is True
    assert leaf["media_type"] == "text/markdown"
    ref = leaf["ref"]
    assert ref.startswith("c_")
    assert body not in json.dumps(leaf)

    r = env.client.get(
        f"/v1/logs/vault/content/{ref}", headers=env.h("a", "auditor", purpose="audit 2025-Q3")
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    # The secret in the body was masked before it was sealed.
    masked = body.replace(leaks["in_body"], "[REDACTED:slack_token]")
    assert r.text == masked

    keys = env.service.tenant_keys("a")
    assert check_commitment(keys, masked.encode(), leaf)
    assert not check_commitment(keys, body.encode(), leaf)
    assert not check_commitment(keys, (masked + " ").encode(), leaf)

    conn = sqlite3.connect(f"file:{env.path / 'service.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT tenant, log, nonce, ciphertext FROM content WHERE ref = ?", (ref,)
        ).fetchall()
    finally:
        conn.close()
    ((tenant, log, nonce, ciphertext),) = rows
    assert (tenant, log) == ("a", "vault")
    assert len(nonce) == 12
    assert masked.encode() not in ciphertext
    assert len(ciphertext) == len(masked.encode()) + 16  # AES-GCM tag
    for data in env.data_files().values():
        assert masked.encode() not in data

    # The ref is the vault's: through another log it does not exist.
    r = env.client.get(f"/v1/logs/main/content/{ref}", headers=env.h("a", "auditor", purpose="x"))
    assert_problem(r, 404, "not-found")
    # Without capture there is no ref to fetch.
    r = env.post("main", {"action": "message.posted", "content": {"body": "not kept"}})
    leaf = stored(env, r.json()["index"])["content"]
    assert (leaf["encrypted"], leaf["ref"]) == (False, None)


# -- overload and storage failure -----------------------------------------------------


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_full_queue_is_503_with_retry_after_and_acknowledges_nothing(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(options=ServiceOptions(max_queue_entries=1))
    ledger = env.ledger("a", "main")
    principal = env.service.registry.authenticate(env.key("a", "ingest").token)
    assert principal is not None
    done: dict[str, Any] = {}

    def ingest(event_id: str) -> None:
        done[event_id] = env.service.ingest(principal, "main", [{"id": event_id, "action": "q"}])

    threads = [threading.Thread(target=ingest, args=(name,)) for name in ("first", "second")]
    # Hold the storage write lock: the first append commits nothing until it is released,
    # the second waits in the queue, which is then full.
    with env.service.data_dir.storage.write(ledger.log.id):
        threads[0].start()
        # (The ledger's private state is the only way to see where the leader is.)
        _wait_for(lambda: ledger._leader and ledger._queued_entries == 0, "the first append")
        threads[1].start()
        _wait_for(lambda: ledger._queued_entries == 1, "the second append to queue")
        r = env.post("main", {"id": "third", "action": "q"}, role="ingest")
        problem = assert_problem(r, 503, "overloaded")
        assert int(r.headers["retry-after"]) >= 1
        assert "receipt" not in problem
        r = env.client.post(
            "/v1/logs/main/events/batch", json=[{"id": "fourth", "action": "q"}], headers=env.h()
        )
        assert_problem(r, 503, "overloaded")
    for t in threads:
        t.join(timeout=10)
    assert set(done) == {"first", "second"}
    assert env.size("a", "main") == 2
    assert is_stored(env, "first")
    assert is_stored(env, "second")
    assert not is_stored(env, "third")
    assert not is_stored(env, "fourth")
    # Once the queue drains, the same request goes through.
    assert env.post("main", {"id": "third", "action": "q"}).status_code == 201


def test_a_storage_failure_is_503_and_acknowledges_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.ingest("main", [{"id": "before", "action": "x"}])
    real = sqlite_storage._SqliteWrite.append

    def append(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_storage._SqliteWrite, "append", append)
    r = env.post("main", {"id": "lost", "action": "x"})
    problem = assert_problem(r, 503, "storage-unavailable")
    assert r.headers["retry-after"] == "5"
    assert "receipt" not in problem
    r = env.client.post(
        "/v1/logs/main/events/batch",
        json=[{"id": "lost-2", "action": "x"}, {"id": "lost-3", "action": "x"}],
        headers=env.h(),
    )
    assert_problem(r, 503, "storage-unavailable")
    monkeypatch.undo()
    assert env.size("a", "main") == 1
    assert not any(is_stored(env, i) for i in ("lost", "lost-2", "lost-3"))
    # The log carries on where it was, and its receipts verify.
    r = env.post("main", {"id": "lost", "action": "x"})
    assert r.status_code == 201
    assert r.json()["index"] == 1
    origin, verifiers = verifiers_of(env)
    verify_receipt(
        Receipt.from_text(r.json()["receipt"]),
        verifiers,
        origin=origin,
        entry=env.ledger("a", "main").entry(1).data,
    )


def test_the_rate_limit_is_429_with_retry_after_per_key(make_env: Callable[..., Env]) -> None:
    env = make_env(http=HttpOptions(rate_limit_rps=1, rate_limit_burst=2))
    statuses = []
    for i in range(4):
        r = env.post("main", {"id": f"r{i}", "action": "x"}, role="ingest")
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert_problem(r, 429, "rate-limited")
            assert int(r.headers["retry-after"]) >= 1
    assert statuses[:2] == [201, 201]
    assert 429 in statuses[2:]
    # Refused requests store nothing; other keys have their own bucket.
    assert env.size("a", "main") == statuses.count(201)
    assert env.post("main", {"id": "other", "action": "x"}, role="admin").status_code == 201
    # Unauthenticated requests are refused before the limiter: 401, not 429.
    r = env.client.get("/v1/logs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_leaf_hashes_are_of_the_canonical_entry(env: Env) -> None:
    r = env.post("main", {"action": "x", "raw": {"b": 1, "a": [1.5, "é", None]}})
    entry = env.client.get(f"/v1/logs/main/entries/{r.json()['index']}", headers=env.h()).json()
    assert base64.b64decode(entry["leaf_hash"]) == leaf_hash(canonicalize(entry["entry"]))
    assert entry["leaf_hash"] == r.json()["leaf_hash"]


@pytest.mark.parametrize("depth", [101, 1000, 1020])
def test_an_event_nested_too_deeply_is_422_not_a_crash(env: Env, depth: int) -> None:
    # Under the JSON parser's own limit (1024), over what the pipeline will recurse into.
    body = b'{"action": "x", "raw": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    r = raw_post(env, "/v1/logs/main/events", body, "application/json")
    problem = assert_problem(r, 422, "invalid-event")
    assert problem["errors"] == ["[0] event: objects and arrays nest deeper than 100 levels"]
    body = b'[{"action": "x"}, {"action": "x", "raw": ' + b"[" * depth + b"]" * depth + b"}]"
    r = raw_post(env, "/v1/logs/main/events/batch", body, "application/json")
    assert assert_problem(r, 422, "invalid-event")["errors"][0].startswith("[1] ")
    assert env.size("a", "main") == 0


def test_an_event_nested_deeply_but_within_the_limit_is_stored(env: Env) -> None:
    body = b'{"action": "x", "raw": ' + b'{"a": ' * 98 + b"1" + b"}" * 98 + b"}"
    r = raw_post(env, "/v1/logs/main/events", body, "application/json")
    assert r.status_code == 201, r.text


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("strings", ["", "{[" * 300])
def test_the_depth_limit_is_exact_whatever_the_strings_hold(strings: str) -> None:
    # The quick count of brackets must never pass a value the walk would refuse, and
    # brackets inside strings (which only raise the count) must not refuse a shallow one.
    assert not _deeper_than({"s": strings, "v": nested(99)}, 100)
    assert _deeper_than({"s": strings, "v": nested(100)}, 100)
    assert not _deeper_than({"s": strings, "v": [nested(3)] * 200}, 100)


@pytest.mark.parametrize(
    "source", ["trailseal.access", "trailseal", "slack.events", "webhook:okta"]
)
def test_an_api_key_cannot_claim_a_servers_own_source(env: Env, source: str) -> None:
    # Else a client could forge access events, or Slack deliveries.
    forged = {"source": source, "action": "access.search", "actor": {"id": "someone"}}
    for role in ("ingest", "admin"):
        problem = assert_problem(env.post("main", forged, role=role), 422, "invalid-event")
        assert "reserved" in problem["errors"][0]
    r = env.client.post(
        "/v1/logs/main/events/batch", json=[{"action": "fine"}, forged], headers=env.h()
    )
    assert assert_problem(r, 422)["errors"][0].startswith("[1] ")
    assert env.size("a", "main") == 0
