"""The SDK's errors (:class:`ClientError` and its subclasses) and how an HTTP error
response becomes one: the status mapping, the problem+json fields, ``Retry-After``.

Every error is a :class:`trailseal.errors.Error`, so ``.diagnostics()`` works, and carries
the server's problem+json fields, never the request body.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from trailseal.errors import Error


class ClientError(Error):
    """Something went wrong talking to the server; carries its problem+json fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        errors: list[str] | None = None,
        instance: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.instance = instance
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    def diagnostics(self) -> str:
        parts = [str(self)]
        parts += [f"  - {e}" for e in self.errors if e != self.detail]
        if self.type:
            parts.append(f"problem type: {self.type}")
        if self.request_id:
            parts.append(f"request id: {self.request_id} (quote it to the server's operator)")
        if self.retry_after_s is not None:
            parts.append(f"the server asked to retry after {self.retry_after_s:g} s")
        return "\n".join(parts)


class ClientConnectionError(ClientError):
    """No answer from the server after every retry: refused, reset or timed out."""


class ClientProtocolError(ClientError):
    """The server answered something the API does not promise (not JSON, missing fields)."""


class BufferFull(ClientError):
    """The buffer already holds ``max_buffer_events``; flush (is the server reachable?)."""


class BadRequest(ClientError):
    """400 (and 413, 415, other 4xx): the request is malformed or too large."""


class Unauthorized(ClientError):
    """401: the API key is unknown, malformed or revoked."""


class Forbidden(ClientError):
    """403: the API key's role does not allow this."""


class NotFound(ClientError):
    """404: no such log, entry, event or checkpoint."""


class Conflict(ClientError):
    """409: the event's (source, id) was already stored with other content."""


class InvalidEvent(ClientError):
    """422, or refused locally: the event does not match the event schema."""


class RateLimited(ClientError):
    """429 after every retry: the API key is over its request rate."""


class ServerError(ClientError):
    """5xx: the server failed."""


class ServiceUnavailable(ServerError):
    """503 after every retry: the server is overloaded or its storage is unavailable."""


_STATUS_ERRORS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidEvent,
    429: RateLimited,
    503: ServiceUnavailable,
}


def _retry_after(response: httpx.Response, clock: Callable[[], float]) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass  # not delay-seconds: it may be an HTTP date
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - clock())


def _error_from(
    response: httpx.Response,
    method: str,
    path: str,
    clock: Callable[[], float],
    *,
    attempts: int = 1,
) -> ClientError:
    """The ClientError for a problem+json (or any error) response."""
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}

    def text(name: str) -> str | None:
        value = problem.get(name)
        return value if isinstance(value, str) else None

    errors = problem.get("errors")
    title = text("title") or response.reason_phrase or f"HTTP {status}"
    detail = text("detail")
    cls = _STATUS_ERRORS.get(status) or (ServerError if status >= 500 else BadRequest)
    message = f"{method} {path}: {status} {title}"
    if detail and detail != title:
        message += f": {detail}"
    if attempts > 1:
        message += f" (after {attempts} attempts)"
    return cls(
        message,
        status=status,
        type=text("type"),
        title=title,
        detail=detail,
        errors=[e for e in errors if isinstance(e, str)] if isinstance(errors, list) else None,
        instance=text("instance"),
        request_id=text("request_id") or response.headers.get("x-request-id"),
        retry_after_s=_retry_after(response, clock),
    )
