"""Read routes: search, entries, proofs, keys, content and the C2SP tlog-tiles API.

Every read of entries, proofs or content is audited by the service before it answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from trailseal.core.checkpoint import parse_signed_checkpoint
from trailseal.core.note import b64encode
from trailseal.http.deps import PROBLEMS, Api, LogName, PurposeHeader, json_response
from trailseal.model.schema import EVENT_SCHEMA
from trailseal.service.core import Hit
from trailseal.service.search import MAX_LIMIT, decode_cursor, encode_cursor
from trailseal.service.search import Query as SearchQuery

_TEXT = "text/plain; charset=utf-8"
MAX_INDEX = (1 << 53) - 1
"""Indexes and tree sizes are JSON-safe integers: larger ones cannot exist, nor be
recorded in the access event a read appends (RFC 8785 refuses them)."""


def _body(description: str, media_type: str) -> dict[str, Any]:
    """A documented 2xx body that is not JSON."""
    schema = (
        {"type": "string"}
        if media_type.startswith("text/")
        else {"type": "string", "format": "binary"}
    )
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {"index": hit.index, "leaf_hash": b64encode(hit.leaf_hash), "entry": hit.record}


def register(app: FastAPI, api: Api) -> None:
    """Attach the read routes."""
    service = api.service

    @app.get("/v1/logs/{log}/events", tags=["read"], responses=PROBLEMS)
    async def search(
        request: Request,
        log: LogName,
        purpose: PurposeHeader = None,
        since: Annotated[
            str | None, Query(max_length=64, description="RFC 3339, inclusive")
        ] = None,
        until: Annotated[
            str | None, Query(max_length=64, description="RFC 3339, exclusive")
        ] = None,
        actor: Annotated[str | None, Query(max_length=256)] = None,
        action: Annotated[str | None, Query(max_length=128)] = None,
        target: Annotated[str | None, Query(max_length=256)] = None,
        source: Annotated[str | None, Query(max_length=64)] = None,
        log_class: Annotated[str | None, Query(alias="class", max_length=16)] = None,
        correlation_id: Annotated[str | None, Query(max_length=256)] = None,
        q: Annotated[
            str | None, Query(max_length=256, description="Free text (not content)")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        """Search a log, newest first; each hit carries its index and leaf hash."""
        principal = await api.principal(request)
        query = SearchQuery(
            since, until, actor, action, target, source, log_class, correlation_id, q
        )
        before = decode_cursor(cursor) if cursor else None
        hits, next_index = await run_in_threadpool(
            lambda: service.search(
                principal, log, query, limit=limit, before=before, purpose=purpose
            )
        )
        return json_response(
            {
                "hits": [_hit_json(h) for h in hits],
                "next_cursor": encode_cursor(next_index) if next_index is not None else None,
            }
        )

    @app.get("/v1/logs/{log}/events/{event_id}", tags=["read"], responses=PROBLEMS)
    async def get_event(
        request: Request,
        log: LogName,
        event_id: Annotated[str, Path(max_length=256)],
        source: Annotated[str, Query(max_length=64)] = "api",
        purpose: PurposeHeader = None,
    ) -> Response:
        """An event by its id (and source), with a receipt into the latest checkpoint."""
        principal = await api.principal(request)
        hit, receipt = await run_in_threadpool(
            lambda: service.entry(principal, log, event_id=event_id, source=source, purpose=purpose)
        )
        return json_response({**_hit_json(hit), "receipt": receipt.to_text()})

    @app.get("/v1/logs/{log}/entries/{index}", tags=["read"], responses=PROBLEMS)
    async def get_entry(
        request: Request,
        log: LogName,
        index: Annotated[int, Path(ge=0, le=MAX_INDEX)],
        purpose: PurposeHeader = None,
    ) -> Response:
        """An entry by index, with a receipt into the latest checkpoint."""
        principal = await api.principal(request)
        hit, receipt = await run_in_threadpool(
            lambda: service.entry(principal, log, index=index, purpose=purpose)
        )
        return json_response({**_hit_json(hit), "receipt": receipt.to_text()})

    @app.get("/v1/logs/{log}/proof/inclusion", tags=["proofs"], responses=PROBLEMS)
    async def inclusion(
        request: Request,
        log: LogName,
        index: Annotated[int, Query(ge=0, le=MAX_INDEX)],
        tree_size: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None,
        purpose: PurposeHeader = None,
    ) -> Response:
        """A c2sp.org/tlog-proof@v1 receipt for an index."""
        principal = await api.principal(request)
        receipt = await run_in_threadpool(
            service.inclusion, principal, log, index, tree_size, purpose
        )
        size = parse_signed_checkpoint(receipt.checkpoint).tree_size
        return json_response(
            {
                "index": index,
                "tree_size": size,
                "proof": [b64encode(h) for h in receipt.proof],
                "receipt": receipt.to_text(),
            }
        )

    @app.get("/v1/logs/{log}/proof/consistency", tags=["proofs"], responses=PROBLEMS)
    async def consistency(
        request: Request,
        log: LogName,
        first: Annotated[int, Query(ge=1, le=MAX_INDEX)],
        second: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None,
        purpose: PurposeHeader = None,
    ) -> Response:
        """An RFC 9162 consistency proof from ``first`` to ``second`` (latest by default)."""
        principal = await api.principal(request)
        proof, target = await run_in_threadpool(
            service.consistency, principal, log, first, second, purpose
        )
        return json_response(
            {
                "first": first,
                "second": target.tree_size,
                "proof": [b64encode(h) for h in proof],
                "checkpoint": target.to_bytes().decode(),
            }
        )

    @app.get("/v1/logs/{log}/keys", tags=["proofs"], responses=PROBLEMS)
    async def verifier_keys(request: Request, log: LogName) -> Response:
        """The log's origin and verifier keys (every key that ever signed)."""
        principal = await api.principal(request)
        origin, verifiers = await run_in_threadpool(service.verifiers, principal, log)
        return json_response(
            {"origin": origin, "verifier_keys": [v.to_string() for v in verifiers]}
        )

    @app.get(
        "/v1/logs/{log}/content/{ref}",
        tags=["read"],
        response_class=Response,
        responses={200: _body("The stored body", "text/plain"), **PROBLEMS},
    )
    async def content(
        request: Request,
        log: LogName,
        ref: Annotated[str, Path(max_length=64)],
        purpose: PurposeHeader = None,
    ) -> Response:
        """A stored content body; needs the auditor or admin role and a declared purpose."""
        principal = await api.principal(request)
        body = await run_in_threadpool(service.content, principal, log, ref, purpose)
        return Response(body, media_type=_TEXT)

    @app.get(
        "/v1/logs/{log}/checkpoint",
        tags=["tlog-tiles"],
        response_class=Response,
        responses={
            200: _body("A signed checkpoint (C2SP tlog-checkpoint)", "text/plain"),
            **PROBLEMS,
        },
    )
    async def checkpoint(request: Request, log: LogName) -> Response:
        """The latest signed checkpoint (C2SP tlog-checkpoint)."""
        principal = await api.principal(request)
        data = await run_in_threadpool(service.checkpoint_bytes, principal, log)
        return Response(data, media_type=_TEXT, headers={"Cache-Control": "no-store"})

    @app.get(
        "/v1/logs/{log}/tile/{path:path}",
        tags=["tlog-tiles"],
        response_class=Response,
        responses={200: _body("A tile or entry bundle", "application/octet-stream"), **PROBLEMS},
    )
    async def tile(
        request: Request, log: LogName, path: Annotated[str, Path(max_length=200)]
    ) -> Response:
        """A hash tile or entry bundle (C2SP tlog-tiles)."""
        principal = await api.principal(request)
        data = await run_in_threadpool(service.tile, principal, log, "tile/" + path)
        # Private: tiles are tenant data behind a key, so no shared cache may keep them.
        cache = "no-store" if ".p/" in path else "private, max-age=31536000, immutable"
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": cache}
        )

    @app.get("/v1/schema/event.json", tags=["reference"])
    async def event_schema() -> Response:
        """The JSON Schema events are validated against."""
        return json_response(EVENT_SCHEMA)
