"""RFC 9457 problem details: the one place library errors become HTTP statuses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from trailseal.errors import (
    AlreadyExistsError,
    AuthError,
    ConfigError,
    EntryError,
    Error,
    ForbiddenError,
    FormatError,
    NotFoundError,
    OverloadedError,
    ProofError,
    ReadOnlyNodeError,
    StorageError,
    ValidationError,
    VerificationError,
)

PROBLEM_JSON = "application/problem+json"

# (class, status, slug, title); the first matching class wins.
_MAP: list[tuple[type[Error], int, str, str]] = [
    (ValidationError, 422, "invalid-event", "The event does not match the event schema"),
    (EntryError, 422, "invalid-entry", "The entry cannot be stored"),
    (ReadOnlyNodeError, 403, "read-only-node", "This node serves reads only"),
    (ForbiddenError, 403, "forbidden", "The API key's role does not allow this"),
    (AuthError, 401, "unauthorized", "A valid API key is required"),
    (NotFoundError, 404, "not-found", "Not found"),
    (AlreadyExistsError, 409, "already-exists", "It already exists"),
    (ProofError, 400, "bad-proof-request", "No such proof"),
    (FormatError, 400, "bad-request", "The request is malformed"),
    (OverloadedError, 503, "overloaded", "The server is overloaded; retry later"),
    (StorageError, 503, "storage-unavailable", "Storage is unavailable; nothing was stored"),
    (VerificationError, 500, "integrity", "The stored log failed an integrity check"),
    (ConfigError, 500, "configuration", "The server is misconfigured"),
]


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"urn:trailseal:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def problem_for(error: Error, instance: str, request_id: str | None) -> Response:
    """The problem response for a library error."""
    status, slug, title = next(
        ((st, sl, ti) for cls, st, sl, ti in _MAP if isinstance(error, cls)),
        (500, "internal", "Internal error"),
    )
    headers: dict[str, str] = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    elif isinstance(error, StorageError):
        headers["Retry-After"] = "5"
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="trailseal"'
    errors = error.errors if isinstance(error, ValidationError) else None
    detail = str(error) if status < 500 or status == 503 else title
    return problem(
        status,
        slug,
        title,
        detail,
        instance=instance,
        headers=headers,
        errors=errors,
        request_id=request_id,
    )
