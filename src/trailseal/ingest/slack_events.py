"""Slack Events API payloads → trailseal events (pure; DESIGN §4).

Every event keeps its source record in ``raw``, minus what is content (message text,
blocks, attachments, which become ``content.body`` and so leave the leaf) and minus
Slack's verification token. Unknown event types are recorded under ``slack.<type>``;
nothing Slack sends is dropped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

SOURCE = "slack.events"

ACTIONS: dict[str, str] = {
    "message": "message.posted",
    "message.message_changed": "message.changed",
    "message.message_deleted": "message.deleted",
    "message.file_share": "file.shared",
    "channel_created": "channel.created",
    "channel_rename": "channel.renamed",
    "channel_archive": "channel.archived",
    "channel_unarchive": "channel.unarchived",
    "channel_shared": "channel.shared",
    "channel_unshared": "channel.unshared",
    "channel_deleted": "channel.deleted",
    "channel_id_changed": "channel.id_changed",
    "group_rename": "channel.renamed",
    "group_archive": "channel.archived",
    "group_unarchive": "channel.unarchived",
    "group_deleted": "channel.deleted",
    "member_joined_channel": "member.joined",
    "member_left_channel": "member.left",
    "file_shared": "file.shared",
    "file_created": "file.created",
    "file_deleted": "file.deleted",
    "file_public": "file.made_public",
    "file_unshared": "file.unshared",
    "app_mention": "app.mentioned",
    "app_installed": "app.installed",
    "app_uninstalled": "app.uninstalled",
    "app_uninstalled_team": "app.uninstalled",
    "app_home_opened": "app.home_opened",
    "tokens_revoked": "app.tokens_revoked",
    "team_join": "team.member_joined",
    "team_rename": "team.renamed",
    "team_domain_change": "team.domain_changed",
    "user_change": "user.changed",
    "user_profile_changed": "user.profile_changed",
    "function_executed": "workflow.function.executed",
    "workflow_step_execute": "workflow.step.executed",
    "workflow_published": "workflow.published",
    "workflow_unpublished": "workflow.unpublished",
    "workflow_deleted": "workflow.deleted",
    "app_rate_limited": "slack.app_rate_limited",
}

_SECURITY = {
    "member_joined_channel",
    "member_left_channel",
    "app_installed",
    "app_uninstalled",
    "app_uninstalled_team",
    "tokens_revoked",
    "team_join",
    "channel_shared",
    "channel_unshared",
    "file_public",
}
_CONTENT_KEYS = ("text", "blocks", "attachments", "message", "previous_message", "files")
_SECRET_KEYS = {"token", "bot_access_token", "access_token", "bot_token", "user_token"}
_ACTION_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _time(seconds: Any) -> str | None:
    try:
        moment = datetime.fromtimestamp(float(seconds), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value[:256]
    if isinstance(value, dict):
        return _id(value.get("id"))
    return None


def _action(event: dict[str, Any]) -> str:
    kind = str(event.get("type", "unknown"))
    subtype = event.get("subtype")
    if kind == "message" and isinstance(subtype, str):
        return ACTIONS.get(f"message.{subtype}", f"message.{_ACTION_SAFE.sub('_', subtype)}")
    return ACTIONS.get(kind, f"slack.{_ACTION_SAFE.sub('_', kind) or 'unknown'}")


def _class(event: dict[str, Any]) -> str:
    kind = str(event.get("type", ""))
    if kind in ("message", "app_mention") or kind.startswith("file_"):
        return "content"
    if kind == "app_rate_limited":
        return "delivery"
    return "security" if kind in _SECURITY else "admin"


def _strip(value: Any) -> Any:
    """Remove Slack's tokens from a record (redaction by path also catches them later)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _SECRET_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _targets(event: dict[str, Any]) -> list[dict[str, str]]:
    targets: list[dict[str, str]] = []
    channel = event.get("channel")
    if (cid := _id(channel)) is not None:
        target = {"type": "channel", "id": cid}
        if isinstance(channel, dict) and isinstance(channel.get("name"), str):
            target["name"] = channel["name"][:1024]
        targets.append(target)
    for key, kind in (("file_id", "file"), ("file", "file"), ("user", "user")):
        if key == "user" and event.get("type") not in (
            "member_joined_channel",
            "member_left_channel",
            "team_join",
            "user_change",
        ):
            continue
        if (tid := _id(event.get(key))) is not None:
            targets.append({"type": kind, "id": tid})
    if isinstance(event.get("function"), dict) and (fid := _id(event["function"])):
        targets.append({"type": "function", "id": fid})
    return targets[:100]


def _actor(envelope: dict[str, Any], event: dict[str, Any], team: str | None) -> dict[str, Any]:
    user = event.get("user")
    if (uid := _id(user)) is not None:
        actor: dict[str, Any] = {"type": "user", "id": uid}
    elif isinstance(event.get("bot_id"), str):
        actor = {"type": "bot", "id": event["bot_id"][:256]}
    else:
        actor = {"type": "system", "id": "slack"}
    if team:
        actor["team"] = team
    return actor


def _context(envelope: dict[str, Any], event: dict[str, Any], team: str | None) -> dict[str, Any]:
    found = {
        "workspace": team,
        "enterprise": _id(envelope.get("enterprise_id")),
        "channel": _id(event.get("channel")),
        "app": _id(envelope.get("api_app_id")),
    }
    return {k: v for k, v in found.items() if v is not None}


def map_event_callback(envelope: dict[str, Any]) -> dict[str, Any]:
    """One ``event_callback`` envelope → one trailseal event (the logical event)."""
    event = envelope.get("event")
    if not isinstance(event, dict):
        event = {}
    team = _id(envelope.get("team_id")) or _id(event.get("team"))
    out: dict[str, Any] = {
        "id": str(envelope.get("event_id") or f"slack-{event.get('event_ts', 'unknown')}")[:256],
        "source": SOURCE,
        "class": _class(event),
        "action": _action(event),
        "actor": _actor(envelope, event, team),
        "auth": {"method": "signing-secret"},
        "result": {"status": "success"},
    }
    when = _time(envelope.get("event_time")) or _time(event.get("event_ts"))
    if when:
        out["time"] = when
    if targets := _targets(event):
        out["targets"] = targets
    if context := _context(envelope, event, team):
        out["context"] = context
    if isinstance(event.get("workflow_execution_id"), str):
        out["correlation"] = {"id": event["workflow_execution_id"][:256]}
    content = {k: event[k] for k in _CONTENT_KEYS if k in event}
    if content:
        plain = list(content) == ["text"] and isinstance(content["text"], str)
        out["content"] = {
            "body": content["text"] if plain else orjson.dumps(content).decode(),
            "media_type": "text/plain" if plain else "application/json",
        }
    raw_event = {k: v for k, v in event.items() if k not in _CONTENT_KEYS}
    out["raw"] = _strip({**{k: v for k, v in envelope.items() if k != "event"}, "event": raw_event})
    return out


def map_rate_limited(payload: dict[str, Any]) -> dict[str, Any]:
    """Slack's ``app_rate_limited`` notice: events were dropped for a minute."""
    minute = payload.get("minute_rate_limited")
    out: dict[str, Any] = {
        "id": f"app_rate_limited-{payload.get('api_app_id', 'unknown')}-{minute}"[:256],
        "source": SOURCE,
        "class": "delivery",
        "action": "slack.app_rate_limited",
        "actor": {"type": "system", "id": "slack"},
        "result": {
            "status": "failure",
            "reason": "Slack stopped delivering events to this app for a minute",
        },
        "raw": _strip(payload),
    }
    if (when := _time(minute)) is not None:
        out["time"] = when
    if (team := _id(payload.get("team_id"))) is not None:
        out["context"] = {"workspace": team}
    return out


def map_retry(envelope: dict[str, Any], retry_num: int, retry_reason: str) -> dict[str, Any]:
    """The delivery-attempt record of a retried event (the event itself is stored once)."""
    event_id = str(envelope.get("event_id") or "unknown")[:200]
    return {
        "id": f"{event_id}/retry/{retry_num}",
        "source": SOURCE,
        "class": "delivery",
        "action": "delivery.retried",
        "actor": {"type": "system", "id": "slack"},
        "correlation": {"id": event_id, "causation_id": event_id, "retry": retry_num},
        "result": {
            "status": "attempt",
            "reason": retry_reason[:1024] or "unspecified",
            "delivery": {"attempt": retry_num, "retry_of": event_id},
        },
    }


def home_tab_opener(envelope: dict[str, Any]) -> str | None:
    """The user who opened the app's Home tab, for an ``app_home_opened`` delivery
    (the /audit app publishes the tab for them once the event is stored)."""
    event = envelope.get("event")
    if envelope.get("type") != "event_callback" or not isinstance(event, dict):
        return None
    if event.get("type") != "app_home_opened" or event.get("tab", "home") != "home":
        return None
    user = event.get("user")
    return user if isinstance(user, str) else None
