"""Structured JSON logs and Prometheus metrics. Never a body, token or secret."""

from __future__ import annotations

import logging
import sys
import time
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
