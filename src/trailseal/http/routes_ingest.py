"""Ingest routes: one event, or a batch, each answered with tlog-proof receipts."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from trailseal.core.note import b64encode
from trailseal.errors import FormatError, ValidationError
from trailseal.http.deps import (
    JSON,
    NDJSON,
    PROBLEMS,
    Api,
    LogName,
    json_response,
    media_type,
    parse_json_body,
    read_body,
    require_type,
)
from trailseal.http.problems import problem
from trailseal.model.schema import EVENT_SCHEMA
from trailseal.service.core import IngestResult
from trailseal.service.registry import Principal

_EVENT_BODY = {"requestBody": {"required": True, "content": {JSON: {"schema": EVENT_SCHEMA}}}}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": {"type": "array", "items": EVENT_SCHEMA}},
            NDJSON: {"schema": {"type": "string", "description": "One event (JSON object) a line"}},
        },
    }
}


def result_json(r: IngestResult) -> dict[str, Any]:
    """The JSON of one event's result."""
    return {
        "id": r.id,
        "source": r.source,
        "index": r.index,
        "leaf_hash": b64encode(r.leaf_hash),
        "tree_size": r.tree_size,
        "status": r.status,
        "receipt": r.receipt.to_text(),
    }


def _parse_ndjson(body: bytes) -> list[Any]:
    events = []
    for number, line in enumerate(body.splitlines(), start=1):
        if line.strip():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError as e:
                raise FormatError(f"line {number} is not valid JSON: {e}") from e
    return events


def register(app: FastAPI, api: Api) -> None:
    """Attach the ingest routes."""

    async def ingest(principal: Principal, log: str, events: list[Any]) -> list[IngestResult]:
        started = time.perf_counter()
        api.metrics.batch_size.observe(len(events))
        results = await run_in_threadpool(api.service.ingest, principal, log, events)
        api.metrics.integration_seconds.observe(time.perf_counter() - started)
        for r in results:
            api.metrics.events.labels(f"{principal.tenant}.{log}", r.status).inc()
        return results

    @app.post(
        "/v1/logs/{log}/events",
        tags=["ingest"],
        status_code=201,
        openapi_extra=_EVENT_BODY,
        responses={
            200: {"description": "A retry: the original receipt", "content": {JSON: {}}},
            **PROBLEMS,
        },
    )
    async def post_event(request: Request, log: LogName) -> Response:
        """Append one event. Answers only once it is durable, with a tlog-proof receipt.

        201 for a new event, 200 for a retry of one already stored (same source and id),
        409 when that id was stored with different content.
        """
        principal = await api.principal(request)
        require_type(request, JSON)
        event = parse_json_body(await read_body(request, api.options.max_body_bytes))
        if not isinstance(event, dict):
            raise ValidationError("the body must be one JSON object (an event)")
        (result,) = await ingest(principal, log, [event])
        if result.status == "conflict":
            return problem(
                409,
                "conflict",
                "Event id already used",
                f"an event with source {result.source!r} and id {result.id!r} is "
                f"already stored at index {result.index} with other content",
                instance=request.url.path,
                index=result.index,
                request_id=getattr(request.state, "request_id", None),
            )
        return json_response(result_json(result), 201 if result.status == "appended" else 200)

    @app.post(
        "/v1/logs/{log}/events/batch",
        tags=["ingest"],
        openapi_extra=_BATCH_BODY,
        responses=PROBLEMS,
    )
    async def post_batch(request: Request, log: LogName) -> Response:
        """Append a batch (JSON array or NDJSON), all or nothing, with a receipt per event.

        Each result has a status: appended, duplicate (a retry) or conflict (the id was
        stored with other content; the original is kept).
        """
        principal = await api.principal(request)
        require_type(request, JSON, NDJSON)
        body = await read_body(request, api.options.max_batch_body_bytes)
        if media_type(request) == NDJSON:
            events = _parse_ndjson(body)
        else:
            events = parse_json_body(body)
            if not isinstance(events, list):
                raise ValidationError("the body must be a JSON array of events")
        if not events:
            raise ValidationError("the batch is empty")
        results = await ingest(principal, log, events)
        return json_response({"results": [result_json(r) for r in results]})
