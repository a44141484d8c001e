"""Signed webhooks: ``POST /hooks/<name>`` for each configured hook (``[[hooks]]``).

Order matters, as for Slack: the hook is looked up (an unknown name is a plain 404 that
does not list the configured ones), the raw body is read under the size limit, and the
signature is checked over those bytes before anything is parsed. A delivery that fails
gets 401 and is neither parsed, stored nor logged beyond the reason. The 200 goes out
only once the event is durable; a redelivery (same ``webhook-id``, or the same body for
the ``hmac`` scheme) is answered 200 with the first delivery's index and receipt.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from trailseal.errors import AuthError, NotFoundError
from trailseal.http.deps import PROBLEMS, Api, json_response, parse_json_body, read_body
from trailseal.http.observability import LOGGER
from trailseal.http.routes_ingest import result_json
from trailseal.ingest.webhooks import check_config, delivery_id, map_webhook, verify_delivery
from trailseal.service.registry import Principal
from trailseal.settings import WebhookConfig

_RESULT_FIELDS = ("index", "leaf_hash", "status", "receipt")


def register(app: FastAPI, api: Api, hooks: tuple[WebhookConfig, ...]) -> None:
    """Check the hooks' configuration (a :class:`ConfigError` at startup), then attach
    ``POST /hooks/{name}`` when any hook is configured."""
    check_config(hooks)
    if not hooks:
        return
    by_name = {hook.name: hook for hook in hooks}

    async def webhook(request: Request, name: str) -> Response:
        hook = by_name.get(name)
        if hook is None:
            raise NotFoundError("no such webhook")
        body = await read_body(request, api.options.max_body_bytes)
        try:
            verify_delivery(hook, request.headers, body, api.service.clock().timestamp())
        except AuthError as e:
            # The reason only: never the body, a signature or a secret.
            LOGGER.warning("webhook refused", extra={"hook": hook.name, "reason": str(e)})
            raise
        payload = parse_json_body(body)
        event = map_webhook(
            hook, payload, delivery_id(hook, request.headers, body), api.service.clock()
        )
        principal = Principal(f"webhook:{hook.name}", hook.tenant, "ingest", False, internal=True)
        (result,) = await run_in_threadpool(
            api.service.ingest, principal, hook.log, [event], f"webhook:{hook.name}"
        )
        api.metrics.events.labels(hook.log, result.status).inc()
        if result.status == "conflict":
            # Same delivery id, other content: the first is kept; answering an error
            # would only make the sender retry what can never be stored.
            LOGGER.warning(
                "webhook delivery id reused with other content",
                extra={"hook": hook.name, "index": result.index},
            )
        full: dict[str, Any] = result_json(result)
        return json_response({k: full[k] for k in _RESULT_FIELDS})

    app.add_api_route(
        "/hooks/{name}",
        webhook,
        methods=["POST"],
        tags=["webhooks"],
        name="webhook",
        summary="Signed webhook delivery",
        description="Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) "
        "or a configured HMAC-SHA256 header, verified over the raw body before parsing. "
        "Answered with the event's index, leaf hash, status and receipt once durable; "
        "redeliveries are stored once.",
        responses=PROBLEMS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {}}},
            }
        },
    )
