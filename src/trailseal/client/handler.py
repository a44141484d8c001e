"""The :class:`AuditLogHandler`, which sends Python ``logging`` records to the log as
events through a :class:`Client`, and the helpers that keep those events small."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from trailseal.client._client import Client
from trailseal.client.transport import _IN_CLIENT

_MESSAGE_BYTES = 8 << 10
_TRACE_BYTES = 16 << 10
_EVENT_BYTES = 48 << 10
"""A leaf holds at most 64 KiB; the server adds its own fields."""


class AuditLogHandler(logging.Handler):
    """Sends ``logging`` records to a trailseal log, as events, through a :class:`Client`.

    A record becomes an event with ``action`` from ``extra={"audit_action": ...}`` (else
    ``log.<level>``), ``actor`` from ``extra={"audit_actor": {...}}``, ``targets`` and
    ``result`` likewise from ``audit_targets`` and ``audit_result``, ``time`` from the
    record's creation time, and ``raw`` holding the logger name, message, level, module,
    function and line (and, for an exception, its type, message and traceback text,
    never its frames' locals).

    :meth:`emit` never raises (failures go to :meth:`logging.Handler.handleError`) and
    never blocks the application for long: it only buffers. The client's background
    flusher (started here unless ``flush_interval_s`` is None) sends the buffer every
    ``flush_interval_s`` seconds and whenever ``batch_size`` events wait;
    :meth:`flush` and :meth:`close` send what is left (``logging.shutdown`` calls them
    at exit). With ``flush_interval_s=None``, reaching ``batch_size`` flushes inside
    ``emit``, which then does block. Records of the client's own loggers (``httpx``,
    ``httpcore``, ``trailseal.client``) and records logged while the client is sending
    are ignored, so the handler cannot feed itself.
    """

    def __init__(
        self,
        client: Client,
        level: int = logging.NOTSET,
        *,
        source: str = "python.logging",
        log_class: str | None = None,
        flush_interval_s: float | None = 1.0,
        close_client: bool = False,
        ignore_loggers: Sequence[str] = ("httpx", "httpcore", "trailseal.client"),
    ) -> None:
        super().__init__(level)
        self.client = client
        self.source = source
        self.log_class = log_class
        self.close_client = close_client
        self.ignore_loggers = tuple(ignore_loggers)
        if flush_interval_s is not None:
            client.start_flusher(flush_interval_s)

    def _ignored(self, name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in self.ignore_loggers)

    def event_for(self, record: logging.LogRecord) -> dict[str, Any]:
        """The event a record becomes."""
        extra = record.__dict__
        raw: dict[str, Any] = {
            "logger": record.name,
            "message": _clip(record.getMessage(), _MESSAGE_BYTES),
            "level": record.levelname,
            "module": record.module,
            "func": record.funcName,
            "line": record.lineno,
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            raw["exception"] = {
                "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "message": _clip(_safe_str(exc), _MESSAGE_BYTES // 4),
                "traceback": _clip("".join(traceback.format_exception(exc)), _TRACE_BYTES),
            }
        if record.stack_info:
            raw["stack"] = _clip(record.stack_info, _TRACE_BYTES // 2)
        event: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "source": self.source,
            "action": extra.get("audit_action") or f"log.{record.levelname.lower()}",
            "raw": raw,
        }
        log_class = extra.get("audit_class") or self.log_class
        if log_class is None and record.levelno <= logging.DEBUG:
            log_class = "debug"
        if log_class is not None:
            event["class"] = log_class
        for key, name in (("actor", "audit_actor"), ("targets", "audit_targets")):
            if extra.get(name) is not None:
                event[key] = extra[name]
        if extra.get("audit_result") is not None:
            event["result"] = extra["audit_result"]
        if len(orjson.dumps(event)) > _EVENT_BYTES:
            raw.pop("exception", None)
            raw.pop("stack", None)
            raw["message"] = _clip(raw["message"], _MESSAGE_BYTES // 4)
            raw["truncated"] = True
        return event

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer the record's event; never raises."""
        try:
            if _IN_CLIENT.active or self._ignored(record.name):
                return
            self.client.buffer(self.event_for(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Send what is buffered; never raises (failures are reported on stderr)."""
        try:
            self.client.flush()
        except Exception:
            _report("flushing audit log records failed")

    def close(self) -> None:
        """Flush (and close the client if ``close_client``); never raises."""
        try:
            if self.close_client:
                self.client.close()
            else:
                self.client.flush()
        except Exception:
            _report("flushing audit log records on close failed")
        finally:
            super().close()


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + "…[truncated]"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _report(what: str) -> None:
    """Like :meth:`logging.Handler.handleError`, for failures without a record."""
    if logging.raiseExceptions and sys.stderr:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"--- trailseal.client: {what} ---\n")
            traceback.print_exc(file=sys.stderr)
