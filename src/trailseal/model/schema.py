"""The published JSON Schema of an ingested event, and its validator.

This is the shape a client sends. The server adds ``received_at``, ``tenant``, ``log``,
``source`` (when absent), ``class`` (when absent) and ``redaction``, and replaces
``content.body`` by a commitment (see :mod:`trailseal.service.ingest`). Unknown fields are
refused, except inside ``raw`` (the source record as received) and ``changes`` values.

The schema is served at ``/v1/schema/event.json`` and committed as
``docs/event.schema.json``; a test keeps the two identical.
"""

from __future__ import annotations

from typing import Any

import fastjsonschema

SCHEMA_ID = "urn:trailseal:schema:event:v1"
LOG_CLASSES = ("security", "admin", "delivery", "content", "debug")

_STR = {"type": "string", "maxLength": 1024}
_SHORT = {"type": "string", "minLength": 1, "maxLength": 256}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        out["required"] = required
    return out


EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "trailseal event (ingest form)",
    **_obj(
        {
            "id": {
                **_SHORT,
                "description": "Sender's event id, unique per source: the idempotency key.",
            },
            "time": {
                "type": "string",
                "format": "date-time",
                "maxLength": 64,
                "description": "When it happened (RFC 3339). Default: received_at.",
            },
            "source": {
                "type": "string",
                "pattern": "^[a-z][a-z0-9_.:-]{0,63}$",
                "description": "slack.events, slack.audit, webhook:<name>, api, ...",
            },
            "class": {"enum": list(LOG_CLASSES), "description": "Log class (DESIGN §5)."},
            "actor": _obj(
                {
                    "type": {"enum": ["user", "bot", "service", "app", "system"]},
                    "id": _SHORT,
                    "name": _STR,
                    "email": _STR,
                    "team": _SHORT,
                    "ip": {"type": "string", "maxLength": 64},
                    "ua": _STR,
                    "session": _SHORT,
                }
            ),
            "action": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "pattern": "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$",
                "description": "Dotted verb, e.g. channel.renamed.",
            },
            "targets": {
                "type": "array",
                "maxItems": 100,
                "items": _obj({"type": _SHORT, "id": _SHORT, "name": _STR}),
            },
            "context": _obj(
                {
                    "workspace": _SHORT,
                    "enterprise": _SHORT,
                    "channel": _SHORT,
                    "app": _SHORT,
                    "integration": _SHORT,
                    "location": _STR,
                }
            ),
            "auth": _obj(
                {
                    "method": {"enum": ["oauth", "sso", "token", "hmac", "signing-secret"]},
                    "client_id": _SHORT,
                    "scopes": {"type": "array", "maxItems": 100, "items": _SHORT},
                    "token_ref": _SHORT,
                    "policy": _obj({"decision": _SHORT, "rule": _STR}),
                }
            ),
            "result": _obj(
                {
                    "status": {"enum": ["success", "failure", "attempt"]},
                    "reason": _STR,
                    "delivery": _obj(
                        {
                            "attempt": {"type": "integer", "minimum": 0, "maximum": 1000000},
                            "retry_of": _SHORT,
                            "acknowledged_by": _SHORT,
                        }
                    ),
                }
            ),
            "correlation": _obj(
                {
                    "id": _SHORT,
                    "traceparent": {
                        "type": "string",
                        "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                    },
                    "causation_id": _SHORT,
                    "idempotency_key": _SHORT,
                    "retry": {"type": "integer", "minimum": 0, "maximum": 1000000},
                }
            ),
            "changes": {
                "type": "array",
                "maxItems": 200,
                "items": {
                    "type": "object",
                    "required": ["field"],
                    "additionalProperties": False,
                    "properties": {"field": _SHORT, "before": {}, "after": {}},
                },
            },
            "content": _obj(
                {
                    "body": {
                        "type": "string",
                        "maxLength": 1 << 20,
                        "description": "Message text or other content. Never stored in the "
                        "leaf: a salted commitment replaces it; the body goes to the "
                        "encrypted content store when capture is enabled.",
                    },
                    "media_type": {"type": "string", "maxLength": 128},
                },
                ["body"],
            ),
            "raw": {"type": "object", "description": "The source record as received."},
        },
        ["action"],
    ),
}

_validate = fastjsonschema.compile(EVENT_SCHEMA, formats={"date-time": r".+"})


def schema_errors(event: Any) -> list[str]:
    """Why ``event`` does not match the schema (empty when it does)."""
    try:
        _validate(event)
    except fastjsonschema.JsonSchemaValueException as e:
        name = e.name or "data"
        where = name.replace("data", "event", 1)
        return [f"{where}: {e.message.replace(name, where)}"]
    return []
