"""Structured JSON logs and Prometheus metrics. Never a body, token or secret."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOGGER = logging.getLogger("trailseal.http")

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "info") -> None:
    """Send trailseal's logs, as JSON lines, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("trailseal")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Metrics:
    """The service's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "trailseal_ingest_events",
            "Events ingested, by log and status",
            ["log", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "trailseal_ingest_batch_events",
            "Events per ingest request",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000),
            registry=self.registry,
        )
        self.integration_seconds = Histogram(
            "trailseal_integration_seconds",
            "Time from a request's arrival to its events being durable and proven",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.tree_size = Gauge(
            "trailseal_tree_size", "Tree size of each log", ["log"], registry=self.registry
        )
        self.rejections = Counter(
            "trailseal_rejections",
            "Requests rejected, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "trailseal_http_request_seconds",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )


class ObserveMiddleware:
    """Request ids, a duration metric and one JSON log line per request (pure ASGI).

    A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which runs
    the endpoint in a separate task and costs a noticeable share of a small request.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
        if not request_id or len(request_id) > 64 or not request_id.replace("-", "").isalnum():
            request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route_path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route_path, str(status)).observe(elapsed)
            principal = state.get("principal")
            LOGGER.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "route": route_path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "tenant": getattr(principal, "tenant", None),
                    "key_id": getattr(principal, "key_id", None),
                },
            )
