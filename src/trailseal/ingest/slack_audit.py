"""Slack Enterprise Audit Logs API → trailseal events: the mapping (pure).

The API (``GET {base_url}/audit/v1/logs``, a Bearer org-owner user token with
``auditlogs:read``) lists audit entries newest first, filtered by ``oldest``/``latest``
(Unix seconds, inclusive) and paged with ``cursor`` = ``response_metadata.next_cursor``.

Mapping (:func:`map_audit_entry`, pure)
---------------------------------------
One entry becomes one event: ``id`` is the entry's id (the idempotency key, with
``source`` ``slack.audit``), ``time`` its ``date_create``, ``action``
``slack.audit.<action>`` (each dotted segment reduced to the schema's characters, so
new actions are recorded, never refused), the actor from ``actor.<actor.type>``, one
target from ``entity.<entity.type>`` (any entity type, known or not), the location
(enterprise or workspace) in ``context``, and ``ip_address``, ``ua`` and ``session_id``
on the actor as strings whatever type Slack sent (an invalid IP is kept as written).
``raw`` is the whole entry, minus token-like keys, so every unknown field survives.

Class: ``admin`` for configuration changes that neither grant nor use access
(``pref.*`` actions, actions naming a setting, custom emoji, renames); ``security`` for
everything else (sign-ins, sessions, roles and permissions, membership, apps and their
scopes, downloads and exports, sharing, legal holds, information barriers) and for
every action not known to be configuration: an unknown action is never filed below
security. ``result.status`` is ``failure`` when the action says so (``*_failed``,
``*_blocked``, ``*_denied``, ``*_rejected``), ``success`` otherwise.

The poll cycle that feeds it is :mod:`trailseal.ingest.slack_audit_poller`.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import orjson

from trailseal.ingest.slack_events import _ACTION_SAFE, _id, _strip, _time
from trailseal.model.schema import schema_errors

SOURCE = "slack.audit"
ACTION_PREFIX = "slack.audit."
LOGS_PATH = "/audit/v1/logs"
MAX_LIMIT = 9999
"""The API's largest ``limit``."""

# -- mapping -----------------------------------------------------------------------------

_ADMIN_ACTION = re.compile(
    r"^pref\.|setting|^emoji_|_emoji_|_renamed$|_rename$|_name_changed$|_description_changed$"
)
_FAILURE_WORDS = {"failed", "failure", "blocked", "denied", "rejected"}
_ACTOR_TYPES = {"user": "user", "bot": "bot", "app": "app", "service": "service"}
_SYSTEM_ACTORS = {"USLACKUSER", "USLACKSECURITY"}
"""Slack's placeholder actor (no user) and its security agent."""
_TARGET_NAME_KEYS = ("name", "title", "filename", "domain")


def _text(value: Any, limit: int) -> str | None:
    """A non-empty string of at most ``limit`` characters, from a string or a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | int | float):
        text = str(value)
        return text[:limit] if text else None
    return None


def _seconds(value: Any) -> int | None:
    """``date_create`` as whole Unix seconds (it may arrive as a number or a string)."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds):
        return None
    return int(seconds)


def map_action(action: Any) -> str:
    """``slack.audit.<action>``, each dotted segment reduced to ``[A-Za-z0-9_-]``."""
    segments = [_ACTION_SAFE.sub("_", s) for s in str(action or "").split(".")]
    name = ".".join(s for s in segments if s) or "unknown"
    limit = 128 - len(ACTION_PREFIX)
    return ACTION_PREFIX + (name[:limit].rstrip(".") or "unknown")


def audit_class(action: Any) -> str:
    """``admin`` for configuration changes, ``security`` otherwise (see the module doc)."""
    return "admin" if _ADMIN_ACTION.search(str(action or "")) else "security"


def _failed(action: Any) -> bool:
    words = set(re.split(r"[^a-z]+", str(action or "").lower()))
    return bool(words & _FAILURE_WORDS)


def _entry_id(entry: dict[str, Any]) -> str:
    found = _text(entry.get("id"), 256)
    if found:
        return found
    digest = hashlib.sha256(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS, default=str))
    return "sha256-" + digest.hexdigest()


def _actor(entry: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    actor = entry.get("actor")
    out: dict[str, Any] = {"type": "system", "id": "slack"}
    if isinstance(actor, dict):
        kind = _text(actor.get("type"), 256) or "user"
        who = actor.get(kind, actor.get("user"))
        if (aid := _id(who) or _text(who, 256)) is not None:
            out = {"type": _ACTOR_TYPES.get(kind, "service"), "id": aid}
            if aid in _SYSTEM_ACTORS:
                out["type"] = "system"
        if isinstance(who, dict):
            for key in ("name", "email"):
                if (value := _text(who.get(key), 1024)) is not None:
                    out[key] = value
            if (team := _id(who.get("team")) or _text(who.get("team"), 256)) is not None:
                out["team"] = team
    for key, field, limit in (("ip_address", "ip", 64), ("ua", "ua", 1024)):
        if (value := _text(context.get(key), limit)) is not None:
            out[field] = value
    if (session := _text(context.get("session_id"), 256)) is not None:
        out["session"] = session
    return out


def _target(entity: Any) -> dict[str, str] | None:
    """``{"type": entity.type, "id": entity[entity.type].id, "name": ...}``, any type."""
    if not isinstance(entity, dict):
        return None
    kind = _text(entity.get("type"), 256)
    if kind is None:
        nested = [k for k, v in entity.items() if isinstance(v, dict)]
        if len(nested) != 1:
            return None
        kind = nested[0][:256]
    thing = entity.get(kind)
    if isinstance(thing, dict):
        tid = _text(thing.get("id"), 256)
        if tid is None and thing.get("channel") is not None:  # a message: channel + ts
            channel = _id(thing["channel"]) or _text(thing["channel"], 120)
            ts = _text(thing.get("timestamp", thing.get("ts")), 120)
            tid = f"{channel}/{ts}" if channel and ts else channel
        if tid is None:
            return None
        target = {"type": kind, "id": tid}
        for key in _TARGET_NAME_KEYS:
            if (name := _text(thing.get(key), 1024)) is not None:
                target["name"] = name
                break
        return target
    if (tid := _text(thing, 256)) is not None:
        return {"type": kind, "id": tid}
    return None


def _context(context: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    location = context.get("location")
    if isinstance(location, dict):
        kind = location.get("type")
        if kind in ("enterprise", "workspace") and (lid := _text(location.get("id"), 256)):
            out[kind] = lid
        if name := _text(location.get("name"), 1024) or _text(location.get("domain"), 1024):
            out["location"] = name
    if (app := _id(context.get("app"))) is not None:
        out["app"] = app
    return out


def map_audit_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One Audit Logs API entry → one trailseal event (always valid against the schema)."""
    context = entry.get("context")
    if not isinstance(context, dict):
        context = {}
    action = entry.get("action")
    out: dict[str, Any] = {
        "id": _entry_id(entry),
        "source": SOURCE,
        "class": audit_class(action),
        "action": map_action(action),
        "actor": _actor(entry, context),
    }
    if (seconds := _seconds(entry.get("date_create"))) is not None and (when := _time(seconds)):
        out["time"] = when
    if (target := _target(entry.get("entity"))) is not None:
        out["targets"] = [target]
    if mapped := _context(context):
        out["context"] = mapped
    out["result"] = (
        {"status": "failure", "reason": str(action)[:1024]}
        if _failed(action)
        else {"status": "success"}
    )
    out["raw"] = _strip(entry)
    if schema_errors(out):  # drift beyond what the mapping foresaw: keep the entry anyway
        out = {k: out[k] for k in ("id", "source", "class", "action", "raw")} | (
            {"time": out["time"]} if "time" in out else {}
        )
    return out


__all__ = ["ACTION_PREFIX", "LOGS_PATH", "SOURCE", "audit_class", "map_action", "map_audit_entry"]
