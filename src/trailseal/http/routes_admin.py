"""Administration: logs, tenants and API keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from trailseal.errors import ConfigError, ForbiddenError, ValidationError
from trailseal.http.deps import (
    JSON,
    PROBLEMS,
    Api,
    json_response,
    parse_json_body,
    read_body,
    require_type,
)
from trailseal.ledger import rfc3339
from trailseal.service.registry import ROLES, Principal

_SMALL = 64 << 10
_T = TypeVar("_T")


def _object_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


_LOG_BODY = _object_body(
    {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"},
            "origin": {"type": "string", "maxLength": 200},
            "capture_content": {"type": "boolean"},
        },
    }
)
_TENANT_BODY = _object_body(
    {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}},
    }
)
_KEY_BODY = _object_body(
    {
        "type": "object",
        "required": ["role"],
        "additionalProperties": False,
        "properties": {
            "role": {"enum": list(ROLES)},
            "tenant": {"type": "string"},
            "description": {"type": "string", "maxLength": 200},
        },
    }
)


def _need_manage(principal: Principal, what: str) -> None:
    if not principal.can("manage"):
        raise ForbiddenError(f"only an admin key may {what}")


async def _body(request: Request, allowed: set[str]) -> dict[str, Any]:
    require_type(request, JSON)
    body = parse_json_body(await read_body(request, _SMALL))
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ValidationError("unknown fields", errors=[f"unknown field {k!r}" for k in unknown])
    return body


async def _create(call: Callable[..., _T], *args: Any) -> _T:
    """Run a create call; a ConfigError from it is a bad name or origin: the client's
    mistake (422), not the server's (500)."""
    try:
        return await run_in_threadpool(call, *args)
    except ConfigError as e:
        raise ValidationError(str(e)) from e


def register(app: FastAPI, api: Api) -> None:
    """Attach the administration routes."""
    service = api.service

    @app.get("/v1/logs", tags=["admin"], responses=PROBLEMS)
    async def list_logs(request: Request) -> Response:
        """The caller's tenant's logs."""
        principal = await api.principal(request)
        logs = await run_in_threadpool(service.registry.logs, principal.tenant)
        return json_response(
            {"logs": [{"name": t.name, "capture_content": t.capture_content} for t in logs]}
        )

    @app.post(
        "/v1/logs", tags=["admin"], status_code=201, openapi_extra=_LOG_BODY, responses=PROBLEMS
    )
    async def create_log(request: Request) -> Response:
        """Create a log in the caller's tenant (admin)."""
        principal = await api.principal(request)
        body = await _body(request, {"name", "origin", "capture_content"})
        _need_manage(principal, "create logs")
        if not isinstance(body.get("name"), str):
            raise ValidationError('send {"name": "<log name>"}')
        origin = body.get("origin")
        if origin is not None and not principal.operator:
            # An origin is a log's global identity; only the operator may choose one, so a
            # tenant cannot claim (or probe) another tenant's.
            raise ForbiddenError("only an operator key may choose a log's origin")
        tlog, vkey = await _create(
            service.create_log,
            principal.tenant,
            body["name"],
            origin if isinstance(origin, str) else None,
            body.get("capture_content") is True,
        )
        return json_response({"name": tlog.name, "verifier_key": vkey}, 201)

    @app.post(
        "/v1/tenants",
        tags=["admin"],
        status_code=201,
        openapi_extra=_TENANT_BODY,
        responses=PROBLEMS,
    )
    async def create_tenant(request: Request) -> Response:
        """Create a tenant (operator keys only)."""
        principal = await api.principal(request)
        body = await _body(request, {"name"})
        if not principal.operator:
            raise ForbiddenError("only an operator key may create tenants")
        if not isinstance(body.get("name"), str):
            raise ValidationError('send {"name": "<tenant name>"}')
        await _create(service.create_tenant, body["name"])
        return json_response({"name": body["name"]}, 201)

    @app.post(
        "/v1/keys", tags=["admin"], status_code=201, openapi_extra=_KEY_BODY, responses=PROBLEMS
    )
    async def create_key(request: Request) -> Response:
        """Create an API key (admin; for another tenant, operator). Shown once."""
        principal = await api.principal(request)
        body = await _body(request, {"role", "tenant", "description"})
        _need_manage(principal, "create keys")
        role = body.get("role")
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}")
        tenant = body.get("tenant", principal.tenant)
        if tenant != principal.tenant and not principal.operator:
            raise ForbiddenError("only an operator key may create keys for another tenant")
        at = rfc3339(service.clock())
        key_id, token = await run_in_threadpool(
            lambda: service.registry.create_key(
                str(tenant), str(role), at, description=str(body.get("description", ""))
            )
        )
        return json_response(
            {"key_id": key_id, "tenant": tenant, "role": role, "token": token}, 201
        )

    @app.get("/v1/keys", tags=["admin"], responses=PROBLEMS)
    async def list_keys(request: Request) -> Response:
        """The tenant's API keys (admin); never their secrets."""
        principal = await api.principal(request)
        _need_manage(principal, "list keys")
        keys = await run_in_threadpool(service.registry.keys, principal.tenant)
        return json_response(
            {
                "keys": [
                    {
                        "key_id": k.key_id,
                        "role": k.role,
                        "operator": k.operator,
                        "description": k.description,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    }
                    for k in keys
                ]
            }
        )

    @app.delete("/v1/keys/{key_id}", tags=["admin"], status_code=204, responses=PROBLEMS)
    async def revoke_key(request: Request, key_id: Annotated[str, Path(max_length=32)]) -> Response:
        """Revoke one of the tenant's API keys (admin)."""
        principal = await api.principal(request)
        _need_manage(principal, "revoke keys")
        at = rfc3339(service.clock())
        await run_in_threadpool(service.registry.revoke_key, key_id, at, principal.tenant)
        return Response(status_code=204)
