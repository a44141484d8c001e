"""Tenant isolation, roles and authentication, route by route.

Tenant ``b``'s logs are invisible to tenant ``a``: every route of docs/openapi.json,
called with a valid request (one that ``b``'s own admin key gets a 2xx for), answers
404 to each of ``a``'s keys, exactly as for a log that does not exist, and leaves ``b``'s
log untouched (a refused read is not even audited there). ``b``'s data never shows up in
``a``'s answers. Then the role matrix, operator-only tenant creation, and 401s.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http.support import Env, assert_problem, open_env
from trailseal.service.registry import ROLES

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "docs" / "openapi.json").read_text())
OPERATIONS = sorted((m.upper(), p) for p, ops in OPENAPI["paths"].items() for m in ops)
B_MARKER = "bbbb-marker-of-tenant-b"


@dataclass(frozen=True)
class Target:
    """What a valid request needs to name in one log."""

    log: str
    event_id: str
    source: str
    ref: str
    index: int
    size: int


Request = tuple[str, str, dict[str, Any]]
LOG_REQUESTS: dict[tuple[str, str], Callable[[Target], Request]] = {
    ("GET", "/v1/logs/{log}/checkpoint"): lambda t: ("GET", f"/v1/logs/{t.log}/checkpoint", {}),
    ("GET", "/v1/logs/{log}/content/{ref}"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/content/{t.ref}",
        {"purpose": "incident 42"},
    ),
    ("GET", "/v1/logs/{log}/entries/{index}"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/entries/{t.index}",
        {},
    ),
    ("GET", "/v1/logs/{log}/events"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/events",
        {"params": {"q": B_MARKER}},
    ),
    ("POST", "/v1/logs/{log}/events"): lambda t: (
        "POST",
        f"/v1/logs/{t.log}/events",
        {"json": {"action": "intrusion.attempt", "raw": {"note": "from a"}}},
    ),
    ("POST", "/v1/logs/{log}/events/batch"): lambda t: (
        "POST",
        f"/v1/logs/{t.log}/events/batch",
        {"json": [{"action": "intrusion.attempt"}, {"action": "intrusion.attempt"}]},
    ),
    ("GET", "/v1/logs/{log}/events/{event_id}"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/events/{t.event_id}",
        {"params": {"source": t.source}},
    ),
    ("GET", "/v1/logs/{log}/keys"): lambda t: ("GET", f"/v1/logs/{t.log}/keys", {}),
    ("GET", "/v1/logs/{log}/proof/consistency"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/proof/consistency",
        {"params": {"first": 1}},
    ),
    ("GET", "/v1/logs/{log}/proof/inclusion"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/proof/inclusion",
        {"params": {"index": t.index, "tree_size": t.size}},
    ),
    ("GET", "/v1/logs/{log}/tile/{path}"): lambda t: (
        "GET",
        f"/v1/logs/{t.log}/tile/entries/000.p/1",
        {},
    ),
}


def seed_b(env: Env, log: str = "only-b") -> Target:
    """An event with a captured body in one of b's logs."""
    (result,) = env.ingest(
        log,
        [
            {
                "id": "b-evt-1",
                "source": "chat.events",
                "action": "message.posted",
                "actor": {"type": "user", "id": "U-B", "name": B_MARKER},
                "raw": {"marker": B_MARKER},
                "content": {"body": f"body of {B_MARKER}"},
            }
        ],
        tenant="b",
    )
    ref = json.loads(env.ledger("b", log).entry(result["index"]).data)["content"]["ref"]
    return Target(log, "b-evt-1", "chat.events", ref, result["index"], result["tree_size"])


def send(env: Env, request: Request, headers: dict[str, str]) -> httpx.Response:
    method, url, kwargs = request
    kwargs = dict(kwargs)
    purpose = kwargs.pop("purpose", None)
    if purpose:
        headers = {**headers, "X-Trailseal-Purpose": purpose}
    return env.client.request(method, url, headers=headers, **kwargs)


def check_log_route(env: Env, op: tuple[str, str]) -> None:
    target = seed_b(env)
    request = LOG_REQUESTS[op](target)
    # The request is valid: b's own admin gets an answer.
    r = send(env, request, env.h("b", "admin"))
    assert r.status_code < 300, r.text
    b_size = env.size("b", "only-b")
    a_sizes = {log: env.size("a", log) for log in ("main", "vault")}
    missing = LOG_REQUESTS[op](replace(target, log="no-such-log"))
    gone = assert_problem(send(env, missing, env.h("a", "admin")), 404, "not-found")
    for role in ROLES:
        r = send(env, request, env.h("a", role))
        body = assert_problem(r, 404, "not-found")
        # Indistinguishable from a log that does not exist at all.
        assert body["detail"] == gone["detail"].replace("no-such-log", "only-b")
        assert B_MARKER not in r.text
        assert "tenant 'b'" not in r.text
    # Nothing was written to b's log, not even an access event; nor to a's.
    assert env.size("b", "only-b") == b_size
    assert {log: env.size("a", log) for log in ("main", "vault")} == a_sizes


def check_list_logs(env: Env) -> None:
    seed_b(env)
    for role in ROLES:
        r = env.client.get("/v1/logs", headers=env.h("a", role))
        assert r.status_code == 200
        assert {log["name"] for log in r.json()["logs"]} == {"main", "vault"}


def check_create_log(env: Env) -> None:
    target = seed_b(env)
    b_keys = env.client.get("/v1/logs/only-b/keys", headers=env.h("b", "admin")).json()
    # a may take the same name: it is a's own, new, empty log.
    r = env.client.post("/v1/logs", json={"name": "only-b"}, headers=env.h("a", "admin"))
    assert r.status_code == 201, r.text
    assert r.json()["verifier_key"] not in b_keys["verifier_keys"]
    assert env.size("a", "only-b") == 0
    assert env.size("b", "only-b") == target.size
    assert env.client.get("/v1/logs/only-b/keys", headers=env.h("b", "admin")).json() == b_keys
    r = env.client.get("/v1/logs/only-b/events", headers=env.h("a", "admin"))
    assert B_MARKER not in r.text


def check_list_keys(env: Env) -> None:
    for tenant in ("a", "b"):
        for role in ROLES:
            env.key(tenant, role)
    r = env.client.get("/v1/keys", headers=env.h("a", "admin"))
    assert r.status_code == 200
    listed = {k["key_id"] for k in r.json()["keys"]}
    assert listed == {env.key("a", role).key_id for role in ROLES}
    for role in ROLES:
        assert env.key("b", role).key_id not in r.text
    assert "tsk_" not in r.text  # never a token


def check_create_key(env: Env) -> None:
    before = {k.key_id for k in env.service.registry.keys("b")}
    r = env.client.post(
        "/v1/keys", json={"role": "admin", "tenant": "b"}, headers=env.h("a", "admin")
    )
    assert_problem(r, 403, "forbidden")
    assert {k.key_id for k in env.service.registry.keys("b")} == before
    # Without a tenant, the key is a's.
    r = env.client.post("/v1/keys", json={"role": "reader"}, headers=env.h("a", "admin"))
    assert r.status_code == 201
    assert r.json()["tenant"] == "a"


def check_revoke_key(env: Env) -> None:
    victim = env.key("b", "reader")
    r = env.client.delete(f"/v1/keys/{victim.key_id}", headers=env.h("a", "admin"))
    assert_problem(r, 404, "not-found")
    assert env.client.get("/v1/logs", headers=victim.auth).status_code == 200


def check_create_tenant(env: Env) -> None:
    for role in ROLES:
        r = env.client.post("/v1/tenants", json={"name": f"by-{role}"}, headers=env.h("a", role))
        assert_problem(r, 403, "forbidden")
    assert set(env.service.registry.tenants()) == {"default", "a", "b"}


def check_public(path: str) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        seed_b(env)
        r = env.client.get(path)
        assert r.status_code == 200
        assert B_MARKER not in r.text

    return check


def check_metrics(env: Env) -> None:
    """/metrics names every tenant's logs, so only the operator reads it."""
    seed_b(env)
    assert env.client.get("/metrics").status_code == 401
    for role in ("ingest", "reader", "auditor", "approver", "admin"):
        assert env.client.get("/metrics", headers=env.h("a", role)).status_code == 403
    assert env.client.get("/metrics", headers=env.operator.auth).status_code == 200


OTHER_ROUTES: dict[tuple[str, str], Callable[[Env], None]] = {
    ("GET", "/v1/logs"): check_list_logs,
    ("POST", "/v1/logs"): check_create_log,
    ("GET", "/v1/keys"): check_list_keys,
    ("POST", "/v1/keys"): check_create_key,
    ("DELETE", "/v1/keys/{key_id}"): check_revoke_key,
    ("POST", "/v1/tenants"): check_create_tenant,
    ("GET", "/healthz"): check_public("/healthz"),
    ("GET", "/readyz"): check_public("/readyz"),
    ("GET", "/metrics"): check_metrics,
    ("GET", "/v1/schema/event.json"): check_public("/v1/schema/event.json"),
}


def test_every_documented_route_has_an_isolation_check() -> None:
    assert set(OPERATIONS) == set(LOG_REQUESTS) | set(OTHER_ROUTES)


@pytest.mark.parametrize("op", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_another_tenants_log_is_not_found_by_any_route(env: Env, op: tuple[str, str]) -> None:
    if op in LOG_REQUESTS:
        check_log_route(env, op)
    else:
        OTHER_ROUTES[op](env)


def test_another_tenants_data_never_appears_in_answers(env: Env) -> None:
    """Both tenants have a log named ``main``: a's key only ever sees a's."""
    seed_b(env, "main")
    env.ingest("main", [{"id": "a-1", "action": "a.did", "raw": {"n": i}} for i in range(3)])
    b_main = env.client.get("/v1/logs/main/keys", headers=env.h("b", "admin")).json()
    b_checkpoint = env.client.get("/v1/logs/main/checkpoint", headers=env.h("b", "admin")).text
    b_texts = [B_MARKER, "tenant-b", '"tenant":"b"', b_main["origin"], *b_main["verifier_keys"]]
    b_texts += [env.key("b", role).key_id for role in ROLES]

    h = env.h("a", "admin", purpose="isolation check")
    answers = [
        env.client.get("/v1/logs/main/events", params={"limit": 1000}, headers=h),
        env.client.get("/v1/logs/main/events", params={"q": "message", "actor": "U-B"}, headers=h),
        env.client.get("/v1/logs/main/events", params={"source": "chat.events"}, headers=h),
        env.client.get("/v1/logs/main/events/b-evt-1", params={"source": "chat.events"}, headers=h),
        env.client.get("/v1/logs/main/checkpoint", headers=h),
        env.client.get("/v1/logs/main/keys", headers=h),
        env.client.get("/v1/keys", headers=h),
        env.client.get("/v1/logs", headers=h),
    ]
    size = env.size("a", "main")
    answers += [env.client.get(f"/v1/logs/main/entries/{i}", headers=h) for i in range(size)]
    answers += [
        env.client.get(f"/v1/logs/main/tile/entries/000.p/{size}", headers=h),
        env.client.get(f"/v1/logs/main/tile/0/000.p/{size}", headers=h),
        env.client.get("/v1/logs/main/proof/inclusion", params={"index": 0}, headers=h),
        env.client.get("/v1/logs/main/proof/consistency", params={"first": 1}, headers=h),
    ]
    assert answers[0].json()["hits"], "a sees its own entries"
    # a's searches find nothing of b's (only the access events of a's own searches).
    for r in answers[1:3]:
        assert {h["entry"]["source"] for h in r.json()["hits"]} <= {"trailseal.access"}
    assert answers[3].status_code == 404
    assert answers[4].text != b_checkpoint
    for r in answers:
        assert r.status_code in (200, 404), r.text
        for text in b_texts:
            assert text.encode() not in r.content, (r.request.url, text)
    for hit in answers[0].json()["hits"]:
        assert (hit["entry"]["tenant"], hit["entry"]["log"]) == ("a", "main")


# -- roles ----------------------------------------------------------------------------

ALLOWED = {
    "ingest": {"write", "list-logs", "verifier-keys"},
    "reader": {"read", "list-logs", "verifier-keys"},
    "auditor": {"read", "content", "list-logs", "verifier-keys"},
    "approver": {"read", "list-logs", "verifier-keys"},
    "admin": {"write", "read", "content", "manage", "list-logs", "verifier-keys"},
}


@dataclass(frozen=True)
class Action:
    name: str
    needs: str
    ok: int
    call: Callable[[Env, dict[str, str]], httpx.Response]


def _revoke_fresh(env: Env, h: dict[str, str]) -> httpx.Response:
    victim = env.add_key("a", "reader")
    return env.client.delete(f"/v1/keys/{victim.key_id}", headers=h)


def _content(env: Env, h: dict[str, str], purpose: str | None) -> httpx.Response:
    (result,) = env.ingest("vault", [{"action": "message.posted", "content": {"body": "hi"}}])
    ref = json.loads(env.ledger("a", "vault").entry(result["index"]).data)["content"]["ref"]
    if purpose is not None:
        h = {**h, "X-Trailseal-Purpose": purpose}
    return env.client.get(f"/v1/logs/vault/content/{ref}", headers=h)


def _get(url: str, **params: Any) -> Callable[[Env, dict[str, str]], httpx.Response]:
    def call(env: Env, h: dict[str, str]) -> httpx.Response:
        env.ingest("main", [{"id": "seen", "action": "x.y"}])
        return env.client.get(url, params=params, headers=h)

    return call


ACTIONS = [
    Action(
        "post-event",
        "write",
        201,
        lambda env, h: env.client.post("/v1/logs/main/events", json={"action": "x"}, headers=h),
    ),
    Action(
        "post-batch",
        "write",
        200,
        lambda env, h: env.client.post(
            "/v1/logs/main/events/batch", json=[{"action": "x"}], headers=h
        ),
    ),
    Action("search", "read", 200, _get("/v1/logs/main/events")),
    Action("entry", "read", 200, _get("/v1/logs/main/entries/0")),
    Action("event", "read", 200, _get("/v1/logs/main/events/seen")),
    Action("inclusion", "read", 200, _get("/v1/logs/main/proof/inclusion", index=0)),
    Action("consistency", "read", 200, _get("/v1/logs/main/proof/consistency", first=1)),
    Action("checkpoint", "read", 200, _get("/v1/logs/main/checkpoint")),
    Action("entry-bundle", "read", 200, _get("/v1/logs/main/tile/entries/000.p/1")),
    Action("hash-tile", "read", 200, _get("/v1/logs/main/tile/0/000.p/1")),
    Action("verifier-keys", "verifier-keys", 200, _get("/v1/logs/main/keys")),
    Action("list-logs", "list-logs", 200, _get("/v1/logs")),
    Action("content", "content", 200, lambda env, h: _content(env, h, "incident 7")),
    Action("list-keys", "manage", 200, lambda env, h: env.client.get("/v1/keys", headers=h)),
    Action(
        "create-key",
        "manage",
        201,
        lambda env, h: env.client.post("/v1/keys", json={"role": "reader"}, headers=h),
    ),
    Action("revoke-key", "manage", 204, _revoke_fresh),
    Action(
        "create-log",
        "manage",
        201,
        lambda env, h: env.client.post(
            "/v1/logs", json={"name": f"log-{uuid.uuid4().hex[:8]}"}, headers=h
        ),
    ),
]


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One service for the role matrix: its actions do not disturb each other."""
    with ExitStack() as stack:
        yield open_env(stack, tmp_path_factory.mktemp("roles") / "data")


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(shared_env: Env, role: str, action: Action) -> None:
    env = shared_env
    before = env.size("a", "main")
    r = action.call(env, env.h("a", role))
    if action.needs in ALLOWED[role]:
        assert r.status_code == action.ok, r.text
    else:
        body = assert_problem(r, 403, "forbidden")
        assert role in body["detail"] or "admin" in body["detail"]
        assert "www-authenticate" not in r.headers
        if action.needs == "write":
            assert env.size("a", "main") == before


@pytest.mark.parametrize("role", ROLES)
def test_content_needs_a_declared_purpose(env: Env, role: str) -> None:
    for purpose in (None, "", "   "):
        r = _content(env, env.h("a", role), purpose)
        body = assert_problem(r, 403, "forbidden")
        if role in ("auditor", "admin"):
            assert "purpose" in body["detail"]
    r = _content(env, env.h("a", role), "legal hold 2025-17")
    assert r.status_code == (200 if role in ("auditor", "admin") else 403)


@pytest.mark.parametrize("role", [r for r in ROLES if "write" not in ALLOWED[r]])
def test_roles_without_write_store_nothing(env: Env, role: str) -> None:
    before = env.size("a", "main")
    r = env.post("main", {"id": f"by-{role}", "action": "x"}, role=role)
    assert_problem(r, 403, "forbidden")
    r = env.client.post(
        "/v1/logs/main/events/batch",
        content=b'{"action": "x"}\n{"action": "y"}\n',
        headers={**env.h("a", role), "Content-Type": "application/x-ndjson"},
    )
    assert_problem(r, 403, "forbidden")
    assert env.size("a", "main") == before


def test_only_an_operator_creates_tenants(env: Env) -> None:
    r = env.client.post("/v1/tenants", json={"name": "c"}, headers=env.h("a", "admin"))
    assert_problem(r, 403, "forbidden")
    r = env.client.post("/v1/tenants", json={"name": "c"}, headers=env.operator.auth)
    assert r.status_code == 201
    assert r.json() == {"name": "c"}
    r = env.client.post("/v1/tenants", json={"name": "c"}, headers=env.operator.auth)
    assert_problem(r, 409, "already-exists")
    # The operator may also give the new tenant its first admin key, which works there only.
    r = env.client.post(
        "/v1/keys", json={"role": "admin", "tenant": "c"}, headers=env.operator.auth
    )
    assert r.status_code == 201
    c_admin = {"Authorization": f"Bearer {r.json()['token']}"}
    r = env.client.post("/v1/logs", json={"name": "main"}, headers=c_admin)
    assert r.status_code == 201
    assert env.client.get("/v1/logs", headers=c_admin).json()["logs"] == [
        {"name": "main", "capture_content": False}
    ]
    r = env.client.post("/v1/tenants", json={"name": "d"}, headers=c_admin)
    assert_problem(r, 403, "forbidden")


# -- authentication -------------------------------------------------------------------


def _unauthorized(r: httpx.Response) -> dict[str, Any]:
    body = assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == 'Bearer realm="trailseal"'
    return body


def test_a_revoked_key_is_refused(env: Env) -> None:
    victim = env.add_key("a", "reader")
    assert env.client.get("/v1/logs/main/keys", headers=victim.auth).status_code == 200
    r = env.client.delete(f"/v1/keys/{victim.key_id}", headers=env.h("a", "admin"))
    assert r.status_code == 204
    assert r.content == b""
    for method, url in [
        ("GET", "/v1/logs/main/keys"),
        ("GET", "/v1/logs/main/events"),
        ("POST", "/v1/logs/main/events"),
        ("GET", "/v1/logs"),
    ]:
        _unauthorized(env.client.request(method, url, headers=victim.auth))
    # Revoking twice: the key is no longer active.
    r = env.client.delete(f"/v1/keys/{victim.key_id}", headers=env.h("a", "admin"))
    assert_problem(r, 404, "not-found")
    listed = env.client.get("/v1/keys", headers=env.h("a", "admin")).json()["keys"]
    (entry,) = [k for k in listed if k["key_id"] == victim.key_id]
    assert entry["revoked_at"] is not None


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "tsk_abcdefabcdef_" + "A" * 43,
        "Bearer tsk_short",
        "Bearer tsk_abcdefabcdef_" + "A" * 43,
        "Bearer not-a-token",
        "Bearer tsk_abcdefabcdef_" + "A" * 44,
    ],
)
def test_missing_or_malformed_authorization_is_401(env: Env, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, url in [
        ("GET", "/v1/logs/main/events"),
        ("POST", "/v1/logs/main/events"),
        ("GET", "/v1/logs/only-b/checkpoint"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/tenants"),
    ]:
        _unauthorized(env.client.request(method, url, headers=headers))


def test_a_wrong_secret_looks_like_an_unknown_key(env: Env) -> None:
    real = env.key("a", "admin")
    wrong = real.token[:-4] + ("AAAA" if not real.token.endswith("AAAA") else "BBBB")
    unknown = "tsk_000000000000_" + real.token.split("_", 2)[2]
    bodies = [
        _unauthorized(env.client.get("/v1/logs", headers={"Authorization": f"Bearer {token}"}))[
            "detail"
        ]
        for token in (wrong, unknown)
    ]
    assert bodies[0] == bodies[1]
    # Scheme is case-insensitive, as RFC 9110 says.
    assert (
        env.client.get("/v1/logs", headers={"Authorization": f"bearer {real.token}"}).status_code
        == 200
    )
