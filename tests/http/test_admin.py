"""Administration input: a bad name or origin is the client's mistake (422), never a 500,
and a refused create leaves nothing behind."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.support import Env, assert_problem


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad Name"},
        {"name": "UPPER"},
        {"name": "-lead"},
        {"name": "x" * 64},
        {"name": ""},
        {"name": "ok", "origin": "has space"},
        {"name": "ok", "origin": "a+b"},
        {"name": "ok", "origin": "ctl\x01char"},
        {"name": "ok", "origin": "del\x7fchar"},
        {"name": "ok", "origin": "line\u2028sep"},
        {"name": 5},
        {},
        {"name": "ok", "colour": "red"},
    ],
)
def test_a_bad_log_is_422_and_nothing_is_created(env: Env, body: dict[str, Any]) -> None:
    # Only the operator may choose an origin; it creates logs in its own tenant, "default".
    r = env.client.post("/v1/logs", json=body, headers=env.operator.auth)
    assert_problem(r, 422, "invalid-event")
    assert {t.name for t in env.service.registry.logs("default")} == {"default"}
    # The name is still free and the log works.
    r = env.client.post(
        "/v1/logs", json={"name": "ok", "origin": "ex.org/ok"}, headers=env.operator.auth
    )
    assert r.status_code == 201, r.text
    r = env.client.post("/v1/logs/ok/events", json={"action": "x"}, headers=env.operator.auth)
    assert r.status_code == 201


def test_only_the_operator_chooses_an_origin(env: Env) -> None:
    r = env.client.post("/v1/logs", json={"name": "mine", "origin": "ex.org/x"}, headers=env.h())
    assert_problem(r, 403, "forbidden")
    assert {t.name for t in env.service.registry.logs("a")} == {"main", "vault"}
    r = env.client.post("/v1/logs", json={"name": "mine"}, headers=env.h())
    assert r.status_code == 201
    assert r.json()["verifier_key"].startswith("localhost/trailseal/a/mine+")


def test_log_names_and_origins_are_unique(env: Env) -> None:
    h = env.operator.auth
    r = env.client.post("/v1/logs", json={"name": "one", "origin": "ex.org/one"}, headers=h)
    assert r.status_code == 201
    assert r.json()["verifier_key"].startswith("ex.org/one+")
    assert_problem(env.client.post("/v1/logs", json={"name": "one"}, headers=h), 409)
    r = env.client.post("/v1/logs", json={"name": "two", "origin": "ex.org/one"}, headers=h)
    assert_problem(r, 409, "already-exists")
    r = env.client.post("/v1/logs", json={"name": "two", "capture_content": True}, headers=h)
    assert r.status_code == 201
    logs = env.client.get("/v1/logs", headers=h).json()["logs"]
    assert {"name": "two", "capture_content": True} in logs


@pytest.mark.parametrize("name", ["Bad Name", "x" * 64, "", "ünï", "a/b", 7, None])
def test_a_bad_tenant_name_is_422(env: Env, name: Any) -> None:
    r = env.client.post("/v1/tenants", json={"name": name}, headers=env.operator.auth)
    assert_problem(r, 422, "invalid-event")
    assert set(env.service.registry.tenants()) == {"default", "a", "b"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"role": "root"}, 422),
        ({}, 422),
        ({"role": "admin", "scope": "all"}, 422),
        ({"role": "admin", "tenant": "b"}, 403),
    ],
)
def test_a_bad_key_request_is_refused(env: Env, body: dict[str, Any], status: int) -> None:
    h = env.h()
    before = len(env.service.registry.keys())
    r = env.client.post("/v1/keys", json=body, headers=h)
    assert_problem(r, status)
    assert len(env.service.registry.keys()) == before


def test_a_new_key_works_once_shown_and_is_listed_without_its_secret(env: Env) -> None:
    r = env.client.post(
        "/v1/keys", json={"role": "reader", "description": "ci bot"}, headers=env.h()
    )
    assert r.status_code == 201
    made = r.json()
    assert made["token"].startswith(f"tsk_{made['key_id']}_")
    auth = {"Authorization": f"Bearer {made['token']}"}
    assert env.client.get("/v1/logs/main/events", headers=auth).status_code == 200
    assert (
        env.client.post("/v1/logs/main/events", json={"action": "x"}, headers=auth).status_code
        == 403
    )
    listed = env.client.get("/v1/keys", headers=env.h()).json()["keys"]
    (entry,) = [k for k in listed if k["key_id"] == made["key_id"]]
    assert entry["description"] == "ci bot"
    assert entry["role"] == "reader"
    assert entry["revoked_at"] is None
    assert made["token"].split("_", 2)[2] not in str(listed)
    # The operator may make keys for any tenant; unknown tenants are 404.
    r = env.client.post(
        "/v1/keys", json={"role": "admin", "tenant": "nope"}, headers=env.operator.auth
    )
    assert_problem(r, 404, "not-found")
