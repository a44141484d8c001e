"""``create_app(service, settings)``: the trailseal HTTP API on FastAPI.

Service calls are blocking (durable writes, proofs) and run in worker threads, so
concurrent requests join the ledger's group commit. Every error leaves as RFC 9457
problem+json.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from trailseal import __version__
from trailseal.errors import Error, ForbiddenError
from trailseal.http import (
    routes_admin,
    routes_audit,
    routes_ingest,
    routes_read,
    routes_slack,
    routes_webhooks,
)
from trailseal.http.deps import Api, HttpOptions, install_edge_handlers
from trailseal.http.observability import LOGGER, Metrics, ObserveMiddleware
from trailseal.http.problems import problem, problem_for
from trailseal.service.core import Service


def _openapi_with_auth(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the bearer API-key scheme on every /v1 operation."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key: tsk_<key id>_<secret>",
            }
        }
        for path, operations in schema["paths"].items():
            if (path.startswith("/v1/") and path != "/v1/schema/event.json") or (
                path == "/metrics"
            ):
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(service: Service, options: HttpOptions | None = None) -> FastAPI:
    """The ASGI application."""
    opts = options or HttpOptions()
    metrics = Metrics()
    app = FastAPI(
        title="trailseal",
        version=__version__,
        description="Tamper-evident audit log: ingest with receipts, search with proofs, "
        "C2SP tlog-tiles read API. Errors are RFC 9457 problem+json.",
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.options = opts

    app.add_middleware(ObserveMiddleware, metrics=metrics)

    @app.exception_handler(Error)
    async def on_error(request: Request, exc: Error) -> Response:
        reason = type(exc).__name__
        metrics.rejections.labels(reason).inc()
        request_id = getattr(request.state, "request_id", None)
        response = problem_for(exc, request.url.path, request_id)
        if response.status_code >= 500:
            # The class name only: messages may quote data, and logs never carry it.
            LOGGER.warning("request failed", extra={"request_id": request_id, "error": reason})
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> Response:
        metrics.rejections.labels("bad_parameters").inc()
        errors = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return problem(
            400,
            "bad-parameters",
            "The request's parameters are invalid",
            "; ".join(errors),
            instance=request.url.path,
            errors=errors,
            request_id=getattr(request.state, "request_id", None),
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(
            exc.status_code,
            slug,
            str(exc.detail),
            str(exc.detail),
            instance=request.url.path,
            request_id=getattr(request.state, "request_id", None),
        )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={
            200: {"content": {"application/json": {}}},
            503: {"description": "Not ready", "content": {"application/json": {}}},
        },
    )
    async def readyz() -> Response:
        """Storage is writable and every log's signing keys are loaded."""
        checks = await run_in_threadpool(service.ready)
        ok = all(checks.values())
        body: dict[str, object] = {"ready": ok, "checks": checks}
        node = service.node_status()
        if node is not None:
            body["cluster"] = node  # which node this is and which logs it integrates
        return Response(
            orjson.dumps(body),
            status_code=200 if ok else 503,
            media_type="application/json",
        )

    api = Api(service, metrics, opts)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}},
            401: {"description": "No valid API key"},
            403: {"description": "Not an operator key"},
        },
    )
    async def prometheus(request: Request) -> Response:
        """Prometheus text format; needs an operator key (the metrics name every tenant's
        logs). Point Prometheus at it with ``authorization: {credentials: tsk_...}``."""
        principal = await api.principal(request)
        if not principal.operator:
            raise ForbiddenError("only an operator key may read /metrics")
        for tlog in service.registry.logs():
            metrics.tree_size.labels(tlog.ledger_log).set(service.ledger(tlog).tree_size())
        return Response(
            generate_latest(metrics.registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app.openapi = lambda: _openapi_with_auth(app)  # type: ignore[method-assign]
    install_edge_handlers(app, api)
    routes_ingest.register(app, api)
    routes_read.register(app, api)
    routes_admin.register(app, api)
    routes_slack.register(app, api, opts.slack_apps, opts.audit_app)
    if opts.audit_app is not None:
        routes_audit.register(app, api, opts.audit_app)
    routes_webhooks.register(app, api, opts.hooks)
    return app
