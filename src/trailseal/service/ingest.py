"""The ingest pipeline: validate → normalize → seal content → redact → prepare.

Pure apart from the random salt and content reference; the clock's reading is passed in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from trailseal.errors import FormatError, ValidationError
from trailseal.ledger import rfc3339
from trailseal.model.schema import schema_errors
from trailseal.policy.content import SealedContent, TenantKeys, check_commitment, seal_content
from trailseal.policy.redaction import redact
from trailseal.service.search import normalize_time

SERVER_FIELDS = ("received_at", "tenant", "log", "ingested_by", "redaction")
DEFAULT_SOURCE = "api"
DEFAULT_CLASS = "security"
MAX_DEPTH = 100
"""Deepest nesting of objects and arrays an event may have (redaction and canonical
encoding recurse; deeper JSON would exhaust the interpreter's stack, a 500)."""


def _deeper_than(value: Any, limit: int) -> bool:
    # Each object or array writes at least one "{" or "[", so a JSON with no more of them
    # than ``limit`` cannot nest deeper (brackets inside strings only raise the count);
    # one count over orjson's bytes spares walking the usual, shallow event.
    data: bytes | None
    try:
        data = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: too deep for orjson too, or not JSON
        data = None
    if data is not None and data.count(b"{") + data.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


@dataclass(frozen=True, slots=True)
class BuiltRecord:
    """A record ready for the ledger, its sealed content, and what the client gave."""

    record: dict[str, Any]
    sealed: SealedContent | None
    body: str | None
    client_time: bool


def build_record(
    event: Any,
    *,
    tenant: str,
    log: str,
    received_at: datetime,
    keys: TenantKeys,
    capture_content: bool,
    max_future_skew_s: float,
    default_source: str = DEFAULT_SOURCE,
    ingested_by: str | None = None,
) -> BuiltRecord:
    """Turn one submitted event into the record the leaf will hold."""
    if _deeper_than(event, MAX_DEPTH):
        raise ValidationError(
            "the event is nested too deeply",
            errors=[f"event: objects and arrays nest deeper than {MAX_DEPTH} levels"],
        )
    errors = schema_errors(event)
    if errors:
        raise ValidationError("the event does not match the event schema", errors=errors)
    record: dict[str, Any] = dict(event)
    client_time = "time" in record
    if client_time:
        try:
            moment = normalize_time(record["time"])
        except FormatError as e:
            raise ValidationError("event.time is not an RFC 3339 time", errors=[str(e)]) from e
        when = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        ahead = (when - received_at).total_seconds()
        if ahead > max_future_skew_s:
            raise ValidationError(
                "event.time is in the future",
                errors=[
                    f"event.time is {ahead:.0f} s ahead of the server clock; more than "
                    f"{max_future_skew_s:.0f} s of clock skew is refused. Check the "
                    "sender's clock (NTP)."
                ],
            )
    else:
        record["time"] = rfc3339(received_at)
    record.setdefault("source", default_source)
    record.setdefault("class", DEFAULT_CLASS)
    if "id" not in record:
        record["id"] = "srv_" + secrets.token_hex(12)
    redactions: list[dict[str, str]] = []
    sealed = None
    body = None
    content = record.pop("content", None)
    if content is not None:
        body, body_redactions = redact(content["body"], ["content", "body"])
        redactions += body_redactions
        sealed = seal_content(
            keys, body, content.get("media_type"), capture_content, f"{tenant}/{log}/".encode()
        )
        redactions.append(
            {
                "path": "/content/body",
                "mode": "encrypt" if capture_content else "omit",
                "detector": "content",
            }
        )
    record, found = redact(record)
    redactions = found + redactions
    if sealed is not None:
        record["content"] = sealed.leaf_content
    record["received_at"] = rfc3339(received_at)
    record["tenant"] = tenant
    record["log"] = log
    if ingested_by is not None:
        record["ingested_by"] = ingested_by  # the API key or adapter that submitted it
    if redactions:
        record["redaction"] = redactions
    return BuiltRecord(record, sealed, body, client_time)


def same_submission(stored: dict[str, Any], fresh: BuiltRecord, keys: TenantKeys) -> bool:
    """Whether a retry carries the same event as the stored one (server fields aside)."""
    volatile = {"received_at", "ingested_by", "content", "redaction"}
    if not fresh.client_time:
        volatile.add("time")
    a = {k: v for k, v in stored.items() if k not in volatile}
    b = {k: v for k, v in fresh.record.items() if k not in volatile}
    if a != b:
        return False
    stored_content = stored.get("content")
    if fresh.body is None or not isinstance(stored_content, dict):
        return fresh.body is None and stored_content is None
    try:
        return check_commitment(keys, fresh.body.encode(), stored_content)
    except FormatError:
        return False
