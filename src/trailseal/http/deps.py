"""What every route shares: authentication, rate limits, media types, bodies, JSON."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import FastAPI, Header, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from trailseal.errors import AuthError, FormatError
from trailseal.http.observability import Metrics
from trailseal.http.problems import problem
from trailseal.service.core import Service
from trailseal.service.registry import Principal
from trailseal.settings import SlackApp, WebhookConfig

if TYPE_CHECKING:  # slack_bolt loads only when the /audit app is configured
    from trailseal.slackapp.app import AuditApp

JSON = "application/json"
NDJSON = "application/x-ndjson"
PURPOSE = "X-Trailseal-Purpose"

LogName = Annotated[str, Path(pattern="^[a-z0-9][a-z0-9-]{0,62}$", description="Log name")]
PurposeHeader = Annotated[
    str | None,
    Header(
        alias=PURPOSE,
        max_length=500,
        description="Why you are reading; recorded in the access event.",
    ),
]

PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/problem+json": {}}}
    for code, text in [
        (400, "Malformed request"),
        (401, "No valid API key"),
        (403, "Role does not allow it"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "Body too large"),
        (415, "Unsupported media type"),
        (422, "Invalid event"),
        (429, "Rate limited"),
        (503, "Overloaded or storage unavailable"),
    ]
}


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Edge limits (from :mod:`trailseal.settings`)."""

    max_body_bytes: int = 1 << 20
    max_batch_body_bytes: int = 16 << 20
    rate_limit_rps: float = 0.0
    """Requests per second per API key; 0 turns rate limiting off."""
    rate_limit_burst: int = 100
    slack_apps: tuple[SlackApp, ...] = ()
    """Slack apps whose Events API requests are accepted (see settings)."""
    hooks: tuple[WebhookConfig, ...] = ()
    """Signed webhooks accepted at ``/hooks/<name>`` (see settings)."""
    audit_app: AuditApp | None = None
    """The /audit Slack app, when ``[slack.audit_app]`` is configured (built by ``serve``,
    which also starts and stops it)."""


class TooLarge(Exception):
    """The body is over the limit."""


class RateLimited(Exception):
    """The key is over its rate."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s


class Unsupported(Exception):
    """The body's media type is not accepted here."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed


class RateLimiter:
    """A token bucket per API key."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """0 when the request may go; otherwise seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


@dataclass
class Api:
    """The service and the edge's own state, handed to every route module."""

    service: Service
    metrics: Metrics
    options: HttpOptions
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.options.rate_limit_rps, self.options.rate_limit_burst)

    async def principal(self, request: Request) -> Principal:
        """The caller, from ``Authorization: Bearer tsk_...``; 401 or 429 otherwise."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("send an API key as 'Authorization: Bearer tsk_...'")
        registry = self.service.registry
        # A recent check answers from memory; only a cache miss goes to a worker thread.
        found = registry.cached_principal(token.strip()) or await run_in_threadpool(
            registry.authenticate, token.strip()
        )
        if found is None:
            raise AuthError("the API key is unknown, malformed or revoked")
        request.state.principal = found
        wait = self.limiter.retry_after(found.key_id)
        if wait > 0:
            self.metrics.rejections.labels("rate_limited").inc()
            raise RateLimited(wait)
        return found


def media_type(request: Request) -> str:
    """The request's media type, lowercased, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_type(request: Request, *allowed: str) -> None:
    """415 unless the body is one of ``allowed``."""
    if media_type(request) not in allowed:
        raise Unsupported(allowed)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(body: bytes) -> Any:
    """JSON or a FormatError naming where it broke."""
    if not body:
        raise FormatError("the body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise FormatError(f"the body is not valid JSON: {e}") from e


def json_response(value: Any, status: int = 200) -> Response:
    """A JSON response serialized by orjson."""
    return Response(orjson.dumps(value), status_code=status, media_type=JSON)


def install_edge_handlers(app: FastAPI, api: Api) -> None:
    """Problem responses for the edge's own refusals (413, 415, 429)."""

    @app.exception_handler(TooLarge)
    async def on_too_large(request: Request, exc: TooLarge) -> Response:
        api.metrics.rejections.labels("too_large").inc()
        return problem(
            413,
            "too-large",
            "The body is too large",
            "the request body exceeds the configured limit; split the batch",
            instance=request.url.path,
            request_id=getattr(request.state, "request_id", None),
        )

    @app.exception_handler(RateLimited)
    async def on_rate_limited(request: Request, exc: RateLimited) -> Response:
        return problem(
            429,
            "rate-limited",
            "Too many requests",
            "this API key is over its request rate; slow down",
            instance=request.url.path,
            headers={"Retry-After": str(max(1, round(exc.wait_s + 0.5)))},
            request_id=getattr(request.state, "request_id", None),
        )

    @app.exception_handler(Unsupported)
    async def on_unsupported(request: Request, exc: Unsupported) -> Response:
        api.metrics.rejections.labels("media_type").inc()
        return problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"send Content-Type: {' or '.join(exc.allowed)}",
            instance=request.url.path,
            request_id=getattr(request.state, "request_id", None),
        )
