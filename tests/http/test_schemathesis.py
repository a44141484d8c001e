"""Property-based conformance of the API to its own OpenAPI document (schemathesis).

Every documented operation is exercised in process, through the ASGI app, with an operator
admin key: generated valid requests (against a seeded log) and generated invalid ones.
No answer may be a 5xx, and every answer must have a documented status, a documented
media type and, where one is declared, a body matching the schema. A last test sends one
hand-made valid request per operation, so that the 2xx of every operation is checked too.

Bounded for CI: 25 examples per operation and mode, derandomized, no deadline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.http.support import Env, open_env

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "docs" / "openapi.json").read_text())
OPERATIONS = sorted((m.upper(), p) for p, ops in OPENAPI["paths"].items() for m in ops)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def _has_inputs(method: str, path: str) -> bool:
    operation = OPENAPI["paths"][path][method.lower()]
    return bool(operation.get("parameters") or operation.get("requestBody"))


# Invalid requests only for operations that take input (there is nothing to break else).
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or _has_inputs(method, path)
]
CASE_IDS = [f"{m} {p} {mode.value}" for m, p, mode in CASES]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Any]]:
    """A service with a seeded default log, and its schema loaded from the live app."""
    with ExitStack() as stack:
        env = open_env(stack, tmp_path_factory.mktemp("schemathesis") / "data")
        headers = env.operator.auth
        r = env.client.post(
            "/v1/logs/default/events/batch",
            json=[
                {"id": f"e{i}", "action": "seed.event", "content": {"body": "b"}} for i in range(20)
            ],
            headers=headers,
        )
        assert r.status_code == 200
        schema = schemathesis.openapi.from_asgi("/openapi.json", env.app)
        yield env, schema


def test_the_served_document_is_the_committed_one(api: tuple[Env, Any]) -> None:
    env, _ = api
    assert env.client.get("/openapi.json").json() == OPENAPI


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=CASE_IDS)
def test_operation_conforms(
    api: tuple[Env, Any], method: str, path: str, mode: GenerationMode
) -> None:
    env, schema = api
    operation = schema[path][method]
    fixed = {"log": "default"} if "{log}" in path and mode == GenerationMode.POSITIVE else None
    strategy = operation.as_strategy(mode, path_parameters=fixed)

    @SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        case.call_and_validate(headers=env.operator.auth, checks=CHECKS)

    run()


def _valid_requests(env: Env) -> dict[tuple[str, str], dict[str, Any]]:
    """One hand-made valid request per operation, for the operator's tenant."""
    results = env.client.post(
        "/v1/logs/vault/events",
        json={"action": "message.posted", "content": {"body": "sealed"}},
        headers=env.operator.auth,
    ).json()
    ref = json.loads(env.ledger("default", "vault").entry(results["index"]).data)["content"]["ref"]
    victim = env.add_key("default", "reader")
    log = {"log": "default"}
    unique = f"n{len(env.service.registry.tenants())}"
    purpose = {"X-Trailseal-Purpose": "conformance"}
    return {
        ("GET", "/healthz"): {},
        ("GET", "/readyz"): {},
        ("GET", "/metrics"): {},
        ("GET", "/v1/schema/event.json"): {},
        ("GET", "/v1/keys"): {},
        ("POST", "/v1/keys"): {"body": {"role": "reader", "description": "d"}},
        ("DELETE", "/v1/keys/{key_id}"): {"path_parameters": {"key_id": victim.key_id}},
        ("GET", "/v1/logs"): {},
        ("POST", "/v1/logs"): {"body": {"name": unique, "capture_content": True}},
        ("POST", "/v1/tenants"): {"body": {"name": unique}},
        ("GET", "/v1/logs/{log}/checkpoint"): {"path_parameters": log},
        ("GET", "/v1/logs/{log}/content/{ref}"): {
            "path_parameters": {"log": "vault", "ref": ref},
            "headers": purpose,
        },
        ("GET", "/v1/logs/{log}/entries/{index}"): {
            "path_parameters": {**log, "index": 0},
            "headers": purpose,
        },
        ("GET", "/v1/logs/{log}/events"): {
            "path_parameters": log,
            "query": {"action": "seed.event", "limit": 5},
        },
        ("POST", "/v1/logs/{log}/events"): {
            "path_parameters": log,
            "body": {"action": "conformance.checked"},
        },
        ("POST", "/v1/logs/{log}/events/batch"): {
            "path_parameters": log,
            "body": [{"action": "conformance.checked"}],
            "media_type": "application/json",
        },
        ("GET", "/v1/logs/{log}/events/{event_id}"): {
            "path_parameters": {**log, "event_id": "e1"},
        },
        ("GET", "/v1/logs/{log}/keys"): {"path_parameters": log},
        ("GET", "/v1/logs/{log}/proof/consistency"): {
            "path_parameters": log,
            "query": {"first": 1},
        },
        ("GET", "/v1/logs/{log}/proof/inclusion"): {
            "path_parameters": log,
            "query": {"index": 0, "tree_size": 20},
        },
        ("GET", "/v1/logs/{log}/tile/{path}"): {
            "path_parameters": {**log, "path": "entries/000.p/1"},
        },
    }


def test_every_operation_answers_a_valid_request_as_documented(api: tuple[Env, Any]) -> None:
    env, schema = api
    if ("default", "vault") not in env.verifier_keys:
        _, env.verifier_keys[("default", "vault")] = env.service.create_log(
            "default", "vault", capture_content=True
        )
    requests = _valid_requests(env)
    assert set(requests) == set(OPERATIONS)
    for (method, path), kwargs in requests.items():
        case = schema[path][method].Case(**kwargs)
        response = case.call_and_validate(headers=env.operator.auth, checks=CHECKS)
        assert response.status_code < 300, (method, path, response.text)
