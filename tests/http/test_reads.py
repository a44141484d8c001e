"""Reads over HTTP: search with filters and cursors, entries and proofs that verify, the
access event every audited read appends before it answers, the C2SP tlog-tiles API on a
real socket, and operations (health, readiness, metrics, request ids, logs).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.http.support import Env, Served, assert_problem
from trailseal.cli import main
from trailseal.cli.common import EXIT_OK, EXIT_STORAGE
from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import leaf_hash, verify_consistency
from trailseal.core.note import NoteVerifier
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.errors import StorageError
from trailseal.http.observability import JsonFormatter
from trailseal.storage import sqlite as sqlite_storage
from trailseal.tiled_log import verify_tiled_log

ACCESS = "trailseal.access"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _at(hours: int) -> str:
    return (T0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


SEEDS: list[dict[str, Any]] = [
    {
        "id": "s0",
        "time": _at(0),
        "source": "chat.events",
        "class": "admin",
        "action": "channel.created",
        "actor": {"type": "user", "id": "U1", "name": "Fox Mulder"},
        "targets": [{"type": "channel", "id": "C1", "name": "general"}],
        "correlation": {"id": "corr-1"},
        "raw": {"note": "alpha kickoff"},
        "content": {"body": "zulu-only-in-the-body"},
    },
    {
        "id": "s1",
        "time": _at(1),
        "action": "channel.renamed",
        "actor": {"type": "user", "id": "U2"},
        "targets": [{"type": "channel", "id": "C1", "name": "random"}],
        "correlation": {"id": "corr-1"},
        "changes": [{"field": "name", "before": "general", "after": "random"}],
    },
    {
        "id": "s2",
        "time": _at(2),
        "class": "content",
        "action": "file.shared",
        "actor": {"type": "user", "id": "U1"},
        "targets": [{"type": "file", "id": "F1"}, {"type": "channel", "id": "C2"}],
        "correlation": {"id": "corr-2"},
        "raw": {"note": "charlie report"},
    },
    {
        "id": "s3",
        "time": _at(3),
        "source": "okta:sso",
        "action": "user.login",
        "actor": {"type": "user", "id": "U3", "name": "Dana Scully"},
        "correlation": {"id": "corr-3"},
    },
    {
        "id": "s4",
        "time": _at(4),
        "source": "chat.events",
        "class": "admin",
        "action": "channel.archived",
        "actor": {"type": "user", "id": "U2"},
        "targets": [{"type": "channel", "id": "C2"}],
        "correlation": {"id": "corr-2"},
    },
    {
        "id": "s5",
        "time": _at(5),
        "class": "debug",
        "action": "app.installed",
        "actor": {"type": "app", "id": "A1"},
        "targets": [{"type": "app", "id": "C11"}],
        "correlation": {"id": "corr-4"},
        "context": {"workspace": "T-ACME"},
    },
    {
        "id": "s6",
        "time": "2025-03-01T17:00:00+02:00",  # 15:00Z, hour 6
        "class": "delivery",
        "action": "message.sent",
        "actor": {"type": "bot", "id": "B1"},
        "targets": [{"type": "channel", "id": "C1"}],
        "correlation": {"id": "corr-1"},
        "content": {"body": "zulu again, still only in a body"},
    },
]
HOUR = {s["id"]: i for i, s in enumerate(SEEDS)}


def _field(seed: dict[str, Any], name: str) -> Any:
    return {
        "source": seed.get("source", "api"),
        "class": seed.get("class", "security"),
        "actor": seed.get("actor", {}).get("id"),
        "action": seed["action"],
        "correlation_id": seed.get("correlation", {}).get("id"),
        "targets": [t["id"] for t in seed.get("targets", [])],
    }[name]


FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"since": _at(2)}, lambda s: HOUR[s["id"]] >= 2),
    ({"until": _at(2)}, lambda s: HOUR[s["id"]] < 2),
    ({"since": _at(1), "until": _at(4)}, lambda s: 1 <= HOUR[s["id"]] < 4),
    ({"since": "2025-03-01T12:00:00+02:00"}, lambda s: HOUR[s["id"]] >= 1),  # 10:00Z
    ({"until": "2025-03-01T15:00:00.000001Z"}, lambda s: True),
    ({"actor": "U1"}, lambda s: _field(s, "actor") == "U1"),
    ({"actor": "U"}, lambda s: False),
    ({"action": "channel.renamed"}, lambda s: s["action"] == "channel.renamed"),
    ({"action": "channel"}, lambda s: False),
    ({"target": "C1"}, lambda s: "C1" in _field(s, "targets")),
    ({"target": "C2"}, lambda s: "C2" in _field(s, "targets")),
    ({"target": "F1"}, lambda s: "F1" in _field(s, "targets")),
    ({"target": "C"}, lambda s: False),
    ({"source": "chat.events"}, lambda s: _field(s, "source") == "chat.events"),
    ({"source": "api"}, lambda s: _field(s, "source") == "api"),
    ({"class": "admin"}, lambda s: _field(s, "class") == "admin"),
    ({"class": "security"}, lambda s: _field(s, "class") == "security"),
    ({"correlation_id": "corr-1"}, lambda s: _field(s, "correlation_id") == "corr-1"),
    ({"correlation_id": "corr-2", "actor": "U2"}, lambda s: s["id"] == "s4"),
    ({"target": "C1", "since": _at(1), "class": "security"}, lambda s: s["id"] == "s1"),
    ({"q": "alpha"}, lambda s: s["id"] == "s0"),
    ({"q": "alpha kickoff"}, lambda s: s["id"] == "s0"),
    ({"q": "kickoff alpha"}, lambda s: False),
    ({"q": "Scully"}, lambda s: s["id"] == "s3"),
    ({"q": "random"}, lambda s: s["id"] == "s1"),
    ({"q": "T-ACME"}, lambda s: s["id"] == "s5"),
    ({"q": 'quote " inside'}, lambda s: False),
    ({"q": "zulu"}, lambda s: False),  # content bodies are never searchable
    ({"q": "zulu-only-in-the-body"}, lambda s: False),
]


@pytest.fixture
def seeded(env: Env) -> Env:
    results = env.ingest("main", SEEDS)
    assert [r["index"] for r in results] == list(range(len(SEEDS)))
    env.notes["seed_results"] = results
    return env


def search(env: Env, role: str = "reader", **params: Any) -> dict[str, Any]:
    r = env.client.get("/v1/logs/main/events", params=params, headers=env.h("a", role))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def seed_ids(hits: list[dict[str, Any]]) -> list[str]:
    """The ids of hits that are not access events."""
    return [h["entry"]["id"] for h in hits if h["entry"]["source"] != ACCESS]


@pytest.mark.parametrize(("params", "matches"), FILTERS, ids=[str(p) for p, _ in FILTERS])
def test_search_filters(
    seeded: Env, params: dict[str, Any], matches: Callable[[dict[str, Any]], bool]
) -> None:
    found = search(seeded, **params)
    expected = [s["id"] for s in reversed(SEEDS) if matches(s)]  # newest first
    assert seed_ids(found["hits"]) == expected
    assert found["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2025-03-01"},
        {"since": "2025-03-01T10:00:00"},  # no zone
        {"since": "0001-01-01T00:00:00+01:00"},
        {"until": "9999-12-31T23:59:59-01:00"},
    ],
)
def test_a_bad_time_filter_is_400(seeded: Env, params: dict[str, str]) -> None:
    r = seeded.client.get("/v1/logs/main/events", params=params, headers=seeded.h())
    assert_problem(r, 400, "bad-request")


def test_free_text_with_a_nul_is_400_not_a_storage_failure(seeded: Env) -> None:
    r = seeded.client.get("/v1/logs/main/events", params={"q": "a\x00b"}, headers=seeded.h())
    assert_problem(r, 400)


def test_cursor_pagination_covers_every_hit_once(seeded: Env) -> None:
    # A filter that only seeds match, and then no filter at all: the access events each
    # page appends are newer than the cursor and never shift a page.
    for params, limit in (({"until": _at(24)}, 2), ({}, 3), ({"actor": "U1"}, 1)):
        pages, cursor, seen = 0, None, []
        while True:
            query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
            page = search(seeded, **query)
            pages += 1
            assert len(page["hits"]) <= limit
            seen += page["hits"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(page["hits"]) == limit
        indexes = [h["index"] for h in seen]
        assert indexes == sorted(indexes, reverse=True)
        assert len(set(indexes)) == len(indexes)
        assert pages == -(-len(seen) // limit)
        if not params:
            assert indexes == list(range(indexes[0], -1, -1))
            assert seen[0]["entry"]["action"] == "access.search"
        else:
            wanted = params.get("actor")
            expected = [
                s["id"] for s in reversed(SEEDS) if not wanted or _field(s, "actor") == wanted
            ]
            assert seed_ids(seen) == expected


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5", ""])
def test_limit_out_of_bounds_is_400(seeded: Env, limit: str) -> None:
    r = seeded.client.get("/v1/logs/main/events", params={"limit": limit}, headers=seeded.h())
    problem = assert_problem(r, 400, "bad-parameters")
    assert any("limit" in e for e in problem["errors"])


def test_limit_bounds_are_inclusive(seeded: Env) -> None:
    assert len(search(seeded, limit=1)["hits"]) == 1
    assert len(search(seeded, limit=1000)["hits"]) == seeded.size("a", "main")


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "zzz",
        "!!!",
        "%%%",
        _b64(b'{"before": -1}'),
        _b64(b'{"before": "3"}'),
        _b64(b'{"before": 1.5}'),
        _b64(b'{"after": 3}'),
        _b64(b"[3]"),
        _b64(b"not json"),
        _b64(b'{"before": 18446744073709551615}'),
        _b64(b'{"before": 100000000000000000000000}'),
        "A" * 201,
    ],
)
def test_a_bad_cursor_is_400(seeded: Env, cursor: str) -> None:
    r = seeded.client.get("/v1/logs/main/events", params={"cursor": cursor}, headers=seeded.h())
    assert_problem(r, 400)


def test_hits_carry_the_index_and_leaf_hash_the_log_holds(seeded: Env) -> None:
    ledger = seeded.ledger("a", "main")
    hits = search(seeded, limit=1000)["hits"]
    assert len(hits) == ledger.tree_size()
    for hit in hits:
        leaf = base64.b64decode(hit["leaf_hash"])
        assert leaf == ledger.leaf_hash(hit["index"])
        assert leaf == leaf_hash(ledger.entry(hit["index"]).data)
        assert leaf == leaf_hash(canonicalize(hit["entry"]))
    for hit, result in zip(reversed(hits[1:]), seeded.notes["seed_results"], strict=True):
        assert (hit["index"], hit["leaf_hash"]) == (result["index"], result["leaf_hash"])


def _verifiers(env: Env) -> tuple[str, list[NoteVerifier]]:
    keys = env.client.get("/v1/logs/main/keys", headers=env.h("a", "reader")).json()
    return keys["origin"], [NoteVerifier.from_string(k) for k in keys["verifier_keys"]]


def test_entries_and_events_come_with_receipts_that_verify(seeded: Env) -> None:
    origin, verifiers = _verifiers(seeded)
    for i, seed in enumerate(SEEDS):
        by_index = seeded.client.get(f"/v1/logs/main/entries/{i}", headers=seeded.h("a", "reader"))
        by_id = seeded.client.get(
            f"/v1/logs/main/events/{seed['id']}",
            params={"source": seed.get("source", "api")},
            headers=seeded.h("a", "reader"),
        )
        for r in (by_index, by_id):
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["index"] == i
            assert got["entry"]["id"] == seed["id"]
            assert got["entry"]["action"] == seed["action"]
            data = canonicalize(got["entry"])
            assert base64.b64decode(got["leaf_hash"]) == leaf_hash(data)
            receipt = Receipt.from_text(got["receipt"])
            assert receipt.index == i
            verify_receipt(receipt, verifiers, origin=origin, entry=data)
    # The default source is "api"; other sources must be named.
    r = seeded.client.get("/v1/logs/main/events/s0", headers=seeded.h("a", "reader"))
    assert_problem(r, 404, "not-found")
    r = seeded.client.get("/v1/logs/main/entries/999", headers=seeded.h("a", "reader"))
    assert_problem(r, 404, "not-found")


def test_inclusion_and_consistency_proofs_verify(seeded: Env) -> None:
    origin, verifiers = _verifiers(seeded)
    first = Receipt.from_text(seeded.notes["seed_results"][0]["receipt"])
    old = verify_checkpoint(first.checkpoint, verifiers, origin)
    assert old.tree_size == len(SEEDS)
    h = seeded.h("a", "reader")
    for index in range(len(SEEDS)):
        data = seeded.ledger("a", "main").entry(index).data
        for tree_size in (len(SEEDS), None):
            params = {"index": index, **({"tree_size": tree_size} if tree_size else {})}
            r = seeded.client.get("/v1/logs/main/proof/inclusion", params=params, headers=h)
            assert r.status_code == 200, r.text
            got = r.json()
            receipt = Receipt.from_text(got["receipt"])
            assert [base64.b64decode(p) for p in got["proof"]] == list(receipt.proof)
            signed = verify_receipt(receipt, verifiers, origin=origin, entry=data)
            assert got["tree_size"] == signed.tree_size
            if tree_size:
                assert signed.tree_size == tree_size
                assert signed.root_hash == old.root_hash

    r = seeded.client.get("/v1/logs/main/proof/consistency", params={"first": 7}, headers=h)
    assert r.status_code == 200
    got = r.json()
    new = verify_checkpoint(got["checkpoint"].encode(), verifiers, origin)
    assert got["second"] == new.tree_size > old.tree_size
    proof = [base64.b64decode(p) for p in got["proof"]]
    verify_consistency(7, new.tree_size, proof, old.root_hash, new.root_hash)
    for small in range(1, 7):
        # Every size from the seeds' batch has no checkpoint of its own but is provable
        # against one: first need not be a checkpoint size, second must be.
        r = seeded.client.get(
            "/v1/logs/main/proof/consistency",
            params={"first": small, "second": new.tree_size},
            headers=h,
        )
        assert r.status_code == 200
        assert r.json()["second"] == new.tree_size
    r = seeded.client.get(
        "/v1/logs/main/proof/consistency", params={"first": 9, "second": 7}, headers=h
    )
    assert_problem(r, 400, "bad-proof-request")
    r = seeded.client.get(
        "/v1/logs/main/proof/inclusion", params={"index": 0, "tree_size": 10_000}, headers=h
    )
    assert_problem(r, 404, "not-found")
    r = seeded.client.get("/v1/logs/main/proof/inclusion", params={"index": 99}, headers=h)
    assert_problem(r, 404, "not-found")


@pytest.mark.parametrize(
    "param",
    [
        ("entries/{n}", {}),
        ("proof/inclusion", {"index": "{n}"}),
        ("proof/consistency", {"first": "{n}"}),
        ("proof/inclusion", {"index": 0, "tree_size": "{n}"}),
    ],
    ids=["entry", "inclusion-index", "consistency-first", "inclusion-size"],
)
@pytest.mark.parametrize("n", [2**53, 2**63, 10**30])
def test_huge_indexes_are_client_errors(
    seeded: Env, param: tuple[str, dict[str, Any]], n: int
) -> None:
    path, params = param
    url = "/v1/logs/main/" + path.format(n=n)
    query = {k: str(v).format(n=n) for k, v in params.items()}
    r = seeded.client.get(url, params=query, headers=seeded.h("a", "reader"))
    assert r.status_code in (400, 404), r.text
    assert_problem(r, r.status_code)


# -- access events --------------------------------------------------------------------


def _read(kind: str) -> Callable[[Env, dict[str, str]], httpx.Response]:
    def read(env: Env, h: dict[str, str]) -> httpx.Response:
        if kind == "search":
            return env.client.get("/v1/logs/main/events", params={"actor": "U1"}, headers=h)
        if kind == "entry":
            return env.client.get("/v1/logs/main/entries/2", headers=h)
        if kind == "event":
            return env.client.get("/v1/logs/main/events/s1", headers=h)
        if kind == "inclusion":
            return env.client.get("/v1/logs/main/proof/inclusion", params={"index": 3}, headers=h)
        if kind == "consistency":
            return env.client.get("/v1/logs/main/proof/consistency", params={"first": 7}, headers=h)
        if kind == "bundle":
            return env.client.get("/v1/logs/main/tile/entries/000.p/7", headers=h)
        raise AssertionError(kind)

    return read


AUDITED = [
    ("search", "access.search", {"query": {"actor": "U1"}}),
    ("entry", "access.fetch", {"index": 2, "event_id": None}),
    ("event", "access.fetch", {"event_id": "s1", "source": "api", "index": None}),
    ("inclusion", "access.proof", {"kind": "inclusion", "index": 3}),
    ("consistency", "access.proof", {"kind": "consistency", "first": 7}),
    ("bundle", "access.tiles", {"path": "tile/entries/000.p/7"}),
]


@pytest.mark.parametrize(("kind", "action", "details"), AUDITED, ids=[a[0] for a in AUDITED])
def test_every_audited_read_appends_its_access_event_before_answering(
    seeded: Env, kind: str, action: str, details: dict[str, Any]
) -> None:
    key = seeded.key("a", "approver")
    purpose = f"case {secrets.token_hex(4)}"
    before = seeded.size("a", "main")
    r = _read(kind)(seeded, {**key.auth, "X-Trailseal-Purpose": purpose})
    assert r.status_code == 200, r.text
    assert seeded.size("a", "main") == before + 1
    access = json.loads(seeded.ledger("a", "main").entry(before).data)
    assert access["action"] == action
    assert access["source"] == ACCESS
    assert access["class"] == "security"
    assert access["actor"] == {"type": "service", "id": key.key_id}
    assert access["auth"]["token_ref"] == key.key_id
    assert access["auth"]["scopes"] == ["approver"]
    assert access["targets"] == [{"type": "log", "id": "main"}]
    assert access["result"] == {"status": "success"}
    for name, value in details.items():
        assert access["raw"][name] == value, name
    if kind != "bundle":  # the tiles API takes no purpose header
        assert access["raw"]["purpose"] == purpose
    # Before answering: the answer already commits to its own access event.
    if kind in ("entry", "event", "inclusion"):
        receipt = Receipt.from_text(r.json()["receipt"])
        signed = verify_checkpoint(receipt.checkpoint, _verifiers(seeded)[1])
        assert signed.tree_size == before + 1
    if kind == "consistency":
        assert r.json()["second"] == before
    if kind == "search":
        assert r.json()["hits"][0]["index"] < before  # filtered on actor U1: not itself
    # And it can be found like any event.
    found = search(seeded, role="auditor", action=action)["hits"]
    assert before in [h["index"] for h in found]
    assert next(h for h in found if h["index"] == before)["entry"]["actor"]["id"] == key.key_id


def test_content_reads_are_audited_with_their_purpose(env: Env) -> None:
    r = env.post("vault", {"action": "message.posted", "content": {"body": "for auditors"}})
    ref = json.loads(env.ledger("a", "vault").entry(r.json()["index"]).data)["content"]["ref"]
    before = env.size("a", "vault")
    key = env.key("a", "auditor")
    r = env.client.get(
        f"/v1/logs/vault/content/{ref}",
        headers={**key.auth, "X-Trailseal-Purpose": "subpoena 12"},
    )
    assert r.text == "for auditors"
    access = json.loads(env.ledger("a", "vault").entry(before).data)
    assert access["action"] == "access.content"
    assert access["raw"] == {"purpose": "subpoena 12", "ref": ref}
    assert access["actor"]["id"] == key.key_id
    # A refused content read (no purpose) is not answered and not logged as an access.
    r = env.client.get(f"/v1/logs/vault/content/{ref}", headers=key.auth)
    assert r.status_code == 403
    assert env.size("a", "vault") == before + 1


def test_unaudited_reads_append_nothing(seeded: Env) -> None:
    before = seeded.size("a", "main")
    h = seeded.h("a", "reader")
    for url in (
        "/v1/logs/main/checkpoint",
        "/v1/logs/main/keys",
        "/v1/logs/main/tile/0/000.p/7",
        "/v1/logs",
    ):
        assert seeded.client.get(url, headers=h).status_code == 200
    assert seeded.size("a", "main") == before


# -- tlog-tiles over a real socket ----------------------------------------------------


class AuthorizedTiles:
    """A TileSource that sends the API key (a trailseal server's tiles need one)."""

    def __init__(self, client: httpx.Client, base: str) -> None:
        self.client = client
        self.base = base
        self.fetched: list[str] = []

    def fetch(self, path: str) -> bytes | None:
        self.fetched.append(path)
        r = self.client.get(self.base + path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.content


def test_tiles_verify_with_the_standard_verifier_on_a_real_server(
    env: Env, serve: Callable[[Any], Served], capsys: pytest.CaptureFixture[str]
) -> None:
    env.ingest("main", [{"action": "bulk", "raw": {"i": i}} for i in range(300)])
    served = serve(env.app)
    base = f"{served.base_url}/v1/logs/main/"
    vkey = env.verifier_keys[("a", "main")]
    reader = env.key("a", "reader")

    # The tiles API wants an API key: without --header the verifier cannot read it.
    assert main(["verify", "--tiles", base, "--key", vkey]) == EXIT_STORAGE
    assert "401" in capsys.readouterr().err

    code = main(
        [
            "verify",
            "--tiles",
            base,
            "--key",
            vkey,
            "--origin",
            "localhost/trailseal/a/main",
            "--header",
            f"Authorization: Bearer {reader.token}",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    report = json.loads(out)
    assert report["ok"] is True
    assert report["entries_checked"] == report["tree_size"] >= 300
    assert report["tiles_checked"] >= 3  # 0/000, 0/001.p/N, 1/000.p/1

    # The same with the library and a source of our own.
    with httpx.Client(headers=reader.auth, timeout=10) as client:
        source = AuthorizedTiles(client, base)
        tiled = verify_tiled_log(
            source, [NoteVerifier.from_string(vkey)], "localhost/trailseal/a/main"
        )
    assert tiled.ok, tiled.problems
    assert tiled.entries_checked == tiled.checkpoint.tree_size
    assert "tile/entries/000" in source.fetched
    # Entry bundles are tenant data: each read of one was an access event.
    bundles = search(env, action="access.tiles", limit=1000)["hits"]
    assert {h["entry"]["raw"]["path"] for h in bundles} >= {"tile/entries/000"}
    assert {h["entry"]["actor"]["id"] for h in bundles} == {reader.key_id}
    # Another tenant's key sees none of it.
    r = httpx.get(base + "checkpoint", headers=env.h("b", "admin"))
    assert r.status_code == 404


def test_tile_responses(seeded: Env) -> None:
    h = seeded.h("a", "reader")
    r = seeded.client.get("/v1/logs/main/checkpoint", headers=h)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["cache-control"] == "no-store"
    assert r.text.startswith("localhost/trailseal/a/main\n")
    r = seeded.client.get("/v1/logs/main/tile/0/000.p/7", headers=h)
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["cache-control"] == "no-store"
    assert len(r.content) == 7 * 32
    for i in range(7):
        assert r.content[32 * i : 32 * (i + 1)] == seeded.ledger("a", "main").leaf_hash(i)
    # (A refused entry-bundle read is itself audited, so the log grows as this goes.)
    for path in ("0/000.p/200", "entries/001", "0/001", "1/000.p/1", "entries/000.p/200"):
        r = seeded.client.get(f"/v1/logs/main/tile/{path}", headers=h)
        assert_problem(r, 404, "not-found")
    for path in ("abc", "0/x00", "entries/000.p/0", "entries/000.p/257", "-1/000", "0/000.p/300"):
        r = seeded.client.get(f"/v1/logs/main/tile/{path}", headers=h)
        assert_problem(r, 400)


def test_a_refused_read_is_audited_as_a_failure(seeded: Env) -> None:
    """A read of what does not exist is answered 404, and recorded as a failed access."""
    h = seeded.h("a", "reader")
    assert_problem(seeded.client.get("/v1/logs/main/entries/999", headers=h), 404, "not-found")
    assert_problem(
        seeded.client.get("/v1/logs/main/proof/inclusion", params={"index": 999}, headers=h),
        404,
        "not-found",
    )
    ok = seeded.client.get("/v1/logs/main/entries/0", headers=h)
    assert ok.status_code == 200
    ledger = seeded.ledger("a", "main")
    access = [
        e
        for e in (
            orjson.loads(x.data) for x in ledger.storage.read_entries(ledger.log.id, 0, 1 << 40)
        )
        if e.get("source") == "trailseal.access"
    ]
    fetch_fail, proof_fail, fetch_ok = access[-3:]
    assert fetch_fail["action"] == "access.fetch"
    assert fetch_fail["result"]["status"] == "failure"
    assert "999" in fetch_fail["result"]["reason"]
    assert proof_fail["action"] == "access.proof"
    assert proof_fail["result"]["status"] == "failure"
    assert fetch_ok["result"] == {"status": "success"}
    # The receipt of a successful fetch is into a checkpoint that includes its access event.
    assert ok.json()["receipt"]


# -- operations -----------------------------------------------------------------------


def test_health_and_readiness(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    r = env.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "checks": {"storage": True, "keys": True}}

    def broken(log_id: int) -> Any:
        raise StorageError("database is locked")

    monkeypatch.setattr(env.service.data_dir.storage, "write", broken)
    r = env.client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "checks": {"storage": False, "keys": True}}
    assert env.client.get("/healthz").status_code == 200  # alive, not ready
    monkeypatch.undo()
    assert env.client.get("/readyz").status_code == 200


def test_readiness_fails_when_the_database_is_gone(env: Env) -> None:
    env.service.data_dir.storage.close()
    r = env.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["storage"] is False


def _metrics(env: Env) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = env.client.get("/metrics", headers=env.operator.auth)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_after_traffic(env: Env) -> None:
    env.post("main", {"action": "one"})
    env.post("main", {"action": "two"})
    env.ingest("main", [{"action": "b"}] * 3)
    env.post("main", {"id": "dup", "action": "x"})
    env.post("main", {"id": "dup", "action": "x"})
    env.post("main", {"action": "bad action"})
    env.client.post(
        "/v1/logs/main/events", content=b"{}", headers={**env.h(), "Content-Type": "text/plain"}
    )
    env.client.get("/v1/logs/main/events", params={"limit": 0}, headers=env.h())
    env.client.get("/v1/logs/main/events", headers=env.h("a", "ingest"))
    env.client.get("/v1/logs", headers={"Authorization": "Bearer nope"})
    m = _metrics(env)

    events = "trailseal_ingest_events_total"
    assert m[(events, (("log", "a.main"), ("status", "appended")))] == 6
    assert m[(events, (("log", "a.main"), ("status", "duplicate")))] == 1
    assert m[("trailseal_ingest_batch_events_count", ())] >= 5
    assert m[("trailseal_ingest_batch_events_bucket", (("le", "1.0"),))] >= 4
    assert m[("trailseal_ingest_batch_events_bucket", (("le", "5.0"),))] >= 5
    assert m[("trailseal_ingest_batch_events_sum", ())] >= 8
    assert m[("trailseal_integration_seconds_count", ())] >= 5
    assert m[("trailseal_tree_size", (("log", "a.main"),))] == env.size("a", "main") == 6
    for reason in (
        "ValidationError",
        "media_type",
        "bad_parameters",
        "ForbiddenError",
        "AuthError",
    ):
        assert m[("trailseal_rejections_total", (("reason", reason),))] >= 1, reason
    routes = {
        dict(labels).get("route") for (name, labels) in m if name.startswith("trailseal_http")
    }
    assert "/v1/logs/{log}/events" in routes
    assert not any(r and "main" in r for r in routes)  # route templates, not paths


def test_request_ids_are_echoed_or_made(env: Env) -> None:
    r = env.client.get("/healthz", headers={"X-Request-Id": "req-1234-abcd"})
    assert r.headers["x-request-id"] == "req-1234-abcd"
    made = env.client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32
    assert int(made, 16) >= 0
    for bad in (
        b"has space",
        b"x" * 65,
        b"semi;colon",
        b"tab\tbed",
        b"<script>",
        b"\xc3\xbc-\xc2\xaf",
    ):
        got = env.client.get("/healthz", headers={"X-Request-Id": bad}).headers["x-request-id"]
        assert got != bad.decode("latin-1")
        assert len(got) == 32
    # Problems carry it too.
    r = env.client.get("/v1/logs/nope/events", headers={**env.h(), "X-Request-Id": "trace-77"})
    assert r.headers["x-request-id"] == "trace-77"
    assert assert_problem(r, 404)["request_id"] == "trace-77"
    r = env.client.get(
        "/v1/logs/main/events?limit=0", headers={**env.h(), "X-Request-Id": "trace-78"}
    )
    assert assert_problem(r, 400)["request_id"] == "trace-78"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """trailseal's log records, formatted as the service writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("trailseal")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_logs_carry_no_body_token_or_secret(
    env: Env, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"xoxb-{secrets.randbelow(10**12):012d}-{secrets.token_hex(12)}"
    body = f"private words {secrets.token_hex(6)}"
    key = env.key("a", "admin")
    bogus = f"tsk_{'x' * 12}_{secrets.token_urlsafe(32)[:43]}"
    env.post("main", {"action": "ok", "raw": {"t": secret}, "content": {"body": body}})
    env.post("main", {"action": "not ok", "raw": {"t": secret}, "content": {"body": body}})
    env.client.post(
        "/v1/logs/main/events",
        content=json.dumps({"action": "x", "t": secret}).encode(),
        headers={**env.h(), "Content-Type": "text/plain"},
    )
    env.client.post(
        "/v1/logs/main/events",
        content=b"{" + secret.encode(),
        headers={**env.h(), "Content-Type": "application/json"},
    )
    env.client.get("/v1/logs", headers={"Authorization": f"Bearer {bogus}"})
    env.client.get("/v1/logs/main/events", params={"q": secret}, headers=env.h())

    real = sqlite_storage._SqliteWrite.append

    def failing(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        raise sqlite3.OperationalError(f"disk I/O error near {secret}")

    monkeypatch.setattr(sqlite_storage._SqliteWrite, "append", failing)
    r = env.post("main", {"action": "x", "raw": {"t": secret}})
    assert r.status_code == 503
    monkeypatch.undo()

    text = log_lines.getvalue()
    records = [orjson.loads(line) for line in text.splitlines()]
    assert len([r for r in records if r["msg"] == "request"]) >= 7
    assert any(r["msg"] == "request failed" and r["error"] == "StorageError" for r in records)
    for needle in (secret, body, key.token, key.token.split("_", 2)[2], bogus, "private words"):
        assert needle not in text, needle
    requests = [r for r in records if r["msg"] == "request"]
    assert {r["status"] for r in requests} >= {201, 422, 415, 400, 401, 503, 200}
    authed = [r for r in requests if r["status"] == 201]
    assert authed[0]["key_id"] == key.key_id
    assert authed[0]["tenant"] == "a"
    assert all(r["route"].startswith("/v1/") for r in requests)
