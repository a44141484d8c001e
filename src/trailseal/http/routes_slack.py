"""The Slack Events API endpoint, one per configured Slack app.

Order matters: the signature is checked over the raw bytes before anything is parsed;
a request that fails gets 401 and its body is neither parsed, stored nor logged. The 200
that tells Slack to stop retrying goes out only after the event is durable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from trailseal.errors import FormatError
from trailseal.http.deps import PROBLEMS, Api, json_response, parse_json_body, read_body
from trailseal.ingest.slack_events import (
    home_tab_opener,
    map_event_callback,
    map_rate_limited,
    map_retry,
)
from trailseal.ingest.slack_signature import verify_slack_request
from trailseal.service.registry import Principal
from trailseal.settings import SlackApp

if TYPE_CHECKING:  # slack_bolt loads only when the /audit app is configured
    from trailseal.slackapp.app import AuditApp

_ENVELOPE_TYPES = {"url_verification", "event_callback", "app_rate_limited"}


def events_for(
    envelope: dict[str, Any], retry_num: str | None, retry_reason: str | None
) -> list[dict[str, Any]]:
    """The trailseal events one Slack delivery becomes."""
    kind = envelope.get("type")
    if kind == "app_rate_limited":
        return [map_rate_limited(envelope)]
    events = [map_event_callback(envelope)]
    if retry_num is not None and retry_num.isdigit() and int(retry_num) > 0:
        events.append(map_retry(envelope, int(retry_num), retry_reason or ""))
    return events


def register(
    app: FastAPI, api: Api, slack_apps: tuple[SlackApp, ...], audit: AuditApp | None = None
) -> None:
    """Attach one POST route per configured Slack app."""
    for slack_app in slack_apps:
        home = audit if audit is not None and audit.config.app == slack_app.name else None
        _register_one(app, api, slack_app, home)


def _register_one(app: FastAPI, api: Api, slack_app: SlackApp, audit: AuditApp | None) -> None:
    secrets = [s.reveal().encode() for s in slack_app.signing_secrets]
    principal = Principal(
        f"slack:{slack_app.name}", slack_app.tenant, "ingest", False, internal=True
    )

    async def slack_events(request: Request) -> Response:
        body = await read_body(request, api.options.max_body_bytes)
        verify_slack_request(
            secrets,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            body,
            api.service.clock().timestamp(),
        )
        if request.headers.get("content-type", "").startswith("application/x-www-form"):
            return Response(status_code=200)  # ssl_check and other form pings
        envelope = parse_json_body(body)
        if not isinstance(envelope, dict):
            raise FormatError("a Slack event envelope is a JSON object")
        if envelope.get("type") == "url_verification":
            return json_response({"challenge": str(envelope.get("challenge", ""))})
        events = events_for(
            envelope,
            request.headers.get("x-slack-retry-num"),
            request.headers.get("x-slack-retry-reason"),
        )
        results = await run_in_threadpool(
            api.service.ingest, principal, slack_app.log, events, "slack.events"
        )
        for r in results:
            api.metrics.events.labels(f"{slack_app.tenant}.{slack_app.log}", r.status).inc()
        opener = home_tab_opener(envelope) if audit is not None else None
        if audit is not None and opener and results[0].status == "appended":
            # Durable already; publishing the tab is background work after the 200.
            audit.app_home_opened(opener)
        return Response(status_code=200)

    app.add_api_route(
        slack_app.path,
        slack_events,
        methods=["POST"],
        tags=["slack"],
        name=f"slack_events_{slack_app.name}",
        summary=f"Slack Events API for app {slack_app.name!r}",
        description="Signed with the app's signing secret (v0, 5-minute window). "
        "Acknowledged with 200 only after the event is durable; retries are deduplicated "
        "by event_id and recorded as delivery attempts.",
        responses=PROBLEMS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
