"""The request form: the modal ``/audit`` opens, and the checks on what comes back.

Each input sits in its own ``input`` block, so that a problem is shown next to the field
that caused it: ``view_submission`` is answered with ``response_action: errors`` and a
message per ``block_id`` (api.slack.com/surfaces/modals#displaying_errors).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from trailseal.ledger import rfc3339
from trailseal.slackapp.model import AUDIT_KINDS, AuditKind, AuditScope

CALLBACK_ID = "audit_request"
MIN_PURPOSE_CHARS = 20
MAX_PURPOSE_CHARS = 1000
MAX_QUERY_CHARS = 500

B_KIND, B_TEAM, B_CHANNELS, B_USERS, B_APPS = "kind", "team", "channels", "users", "apps"
B_EXTERNAL, B_START, B_END, B_QUERY, B_PURPOSE = "external", "start", "end", "query", "purpose"

KIND_LABELS: dict[str, str] = {
    "channel": "Channel: messages and membership of channels",
    "team": "Team: a whole workspace",
    "app": "App: what apps did and were granted",
    "user": "User: what people did",
    "query": "Query: free text over the log",
}

_LINE_BREAKS = frozenset("\n\r\t")
# Trojan Source's bidirectional controls (CVE-2021-42574): approvers would read the
# purpose in another order than the log stores it.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

_TEAM = re.compile(r"^[TE][A-Z0-9]{2,}$")
_APP = re.compile(r"^A[A-Z0-9]{2,}$")


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _input(
    block_id: str, label: str, element: dict[str, Any], *, optional: bool, hint: str | None = None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": _text(label),
        "element": {"action_id": block_id, **element},
        "optional": optional,
    }
    if hint:
        block["hint"] = _text(hint)
    return block


def _option(kind: str) -> dict[str, Any]:
    return {"text": _text(KIND_LABELS[kind][:75]), "value": kind}


def request_modal(now: datetime, max_range_days: int, private_metadata: str = "") -> dict[str, Any]:
    """The modal ``views.open`` shows for ``/audit`` (defaults: the last 30 days)."""
    start = int((now - timedelta(days=30)).timestamp())
    end = int(now.timestamp())
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": private_metadata,
        "title": _text("Request an audit"),
        "submit": _text("Submit request"),
        "close": _text("Cancel"),
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "Your request goes to the approvers. Every step, this request "
                    "included, is recorded in the tamper-evident audit log.",
                },
            },
            _input(
                B_KIND,
                "Audit type",
                {
                    "type": "static_select",
                    "options": [_option(k) for k in AUDIT_KINDS],
                    "initial_option": _option("channel"),
                },
                optional=False,
            ),
            _input(
                B_TEAM,
                "Team ID",
                {"type": "plain_text_input", "placeholder": _text("T0123ABCD")},
                optional=True,
                hint="Default: your workspace.",
            ),
            _input(
                B_CHANNELS,
                "Channels",
                {
                    "type": "multi_conversations_select",
                    "filter": {"include": ["public", "private"], "exclude_bot_users": True},
                },
                optional=True,
                hint="Needed for a channel audit; narrows the others.",
            ),
            _input(
                B_USERS,
                "Users",
                {"type": "multi_users_select"},
                optional=True,
                hint="Needed for a user audit; narrows the others.",
            ),
            _input(
                B_APPS,
                "App IDs",
                {"type": "plain_text_input", "placeholder": _text("A0123ABCD, A0456EFGH")},
                optional=True,
                hint="Needed for an app audit; narrows the others. Comma-separated.",
            ),
            _input(
                B_EXTERNAL,
                "Slack Connect",
                {
                    "type": "checkboxes",
                    "options": [
                        {
                            "text": _text("Include external members (other organizations)"),
                            "value": "include",
                        }
                    ],
                },
                optional=True,
            ),
            _input(
                B_START,
                "From",
                {"type": "datetimepicker", "initial_date_time": start},
                optional=False,
            ),
            _input(
                B_END,
                "Until",
                {"type": "datetimepicker", "initial_date_time": end},
                optional=False,
                hint=f"At most {max_range_days} days after the start.",
            ),
            _input(
                B_QUERY,
                "Query",
                {"type": "plain_text_input", "max_length": MAX_QUERY_CHARS},
                optional=True,
                hint="Needed for a query audit: words to find in the log's events.",
            ),
            _input(
                B_PURPOSE,
                "Purpose",
                {
                    "type": "plain_text_input",
                    "multiline": True,
                    "max_length": MAX_PURPOSE_CHARS,
                    "placeholder": _text("Why you need this audit (e.g. a ticket, a legal hold)"),
                },
                optional=False,
                hint=f"At least {MIN_PURPOSE_CHARS} characters. Approvers read it.",
            ),
        ],
    }


@dataclass(frozen=True, slots=True)
class Submission:
    """A valid form: the scope and the stated purpose."""

    scope: AuditScope
    purpose: str


def _value(values: dict[str, Any], block: str) -> dict[str, Any]:
    found = values.get(block, {}).get(block, {})
    return found if isinstance(found, dict) else {}


def _plain(values: dict[str, Any], block: str) -> str:
    return str(_value(values, block).get("value") or "").strip()


def _stamp(values: dict[str, Any], block: str) -> int | None:
    raw = _value(values, block).get("selected_date_time")
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def parse_submission(
    values: dict[str, Any], *, team_id: str, now: datetime, max_range_days: int
) -> Submission | dict[str, str]:
    """A :class:`Submission`, or the inline errors by block id (Slack's ``errors``)."""
    errors: dict[str, str] = {}
    selected = _value(values, B_KIND).get("selected_option") or {}
    kind = selected.get("value") if isinstance(selected, dict) else None
    if kind not in AUDIT_KINDS:
        errors[B_KIND] = "Choose an audit type."
        kind = "channel"
    team = _plain(values, B_TEAM) or team_id
    if not _TEAM.match(team):
        errors[B_TEAM] = (
            "A team ID starts with T (or E for an org) followed by capitals and digits, "
            "e.g. T0123ABCD."
        )
    channels = tuple(str(c) for c in _value(values, B_CHANNELS).get("selected_conversations") or [])
    users = tuple(str(u) for u in _value(values, B_USERS).get("selected_users") or [])
    apps = tuple(a.strip() for a in _plain(values, B_APPS).split(",") if a.strip())
    query = _plain(values, B_QUERY) or None
    errors.update(_scope_errors(str(kind), channels, users, apps, query))
    start, end = _stamp(values, B_START), _stamp(values, B_END)
    errors.update(_time_errors(start, end, now, max_range_days))
    purpose = _plain(values, B_PURPOSE)
    if len(purpose) < MIN_PURPOSE_CHARS:
        errors[B_PURPOSE] = (
            f"Say why you need this audit in at least {MIN_PURPOSE_CHARS} characters "
            f"({len(purpose)} so far)."
        )
    elif len(purpose) > MAX_PURPOSE_CHARS:
        errors[B_PURPOSE] = f"At most {MAX_PURPOSE_CHARS} characters."
    if query is not None and len(query) > MAX_QUERY_CHARS:
        errors[B_QUERY] = f"At most {MAX_QUERY_CHARS} characters."
    # What reaches the approvers, the log and the search index is checked here, not
    # trusted to the form: a NUL would fail the report after approval, a bidi override
    # would show approvers another text than the log keeps.
    for block, text in ((B_QUERY, query or ""), (B_PURPOSE, purpose)):
        bad = _control_character(text)
        if bad is not None:
            errors[block] = f"Remove the control character {bad}; only printable text is kept."
    if errors or start is None or end is None:
        return errors
    scope = AuditScope(
        kind=_kind(kind),
        start=rfc3339(datetime.fromtimestamp(start, UTC)),
        end=rfc3339(datetime.fromtimestamp(end, UTC)),
        team_id=team,
        channels=channels,
        users=users,
        apps=apps,
        query=query,
        include_external=bool(_value(values, B_EXTERNAL).get("selected_options")),
    )
    return Submission(scope, purpose)


def _control_character(text: str) -> str | None:
    """The first control or bidirectional-override character in ``text`` (as U+XXXX),
    line breaks and tabs aside; None when there is none."""
    for c in text:
        if c in _BIDI or (unicodedata.category(c) == "Cc" and c not in _LINE_BREAKS):
            return f"U+{ord(c):04X}"
    return None


def _scope_errors(
    kind: str,
    channels: tuple[str, ...],
    users: tuple[str, ...],
    apps: tuple[str, ...],
    query: str | None,
) -> dict[str, str]:
    errors: dict[str, str] = {}
    bad_apps = [a for a in apps if not _APP.match(a)]
    if bad_apps:
        errors[B_APPS] = f"Not an app ID: {', '.join(bad_apps[:3])} (app IDs look like A0123ABCD)."
    if kind == "channel" and not channels:
        errors[B_CHANNELS] = "A channel audit needs at least one channel."
    if kind == "user" and not users:
        errors[B_USERS] = "A user audit needs at least one user."
    if kind == "app" and not apps:
        errors[B_APPS] = "An app audit needs at least one app ID."
    if kind == "query" and not query:
        errors[B_QUERY] = "A query audit needs the words to search for."
    return errors


def _time_errors(
    start: int | None, end: int | None, now: datetime, max_range_days: int
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if start is None:
        errors[B_START] = "Pick when the audit starts."
    elif start > now.timestamp():
        errors[B_START] = "The start is in the future; pick a time up to now."
    if end is None:
        errors[B_END] = "Pick when the audit ends."
    elif start is not None:
        if end <= start:
            errors[B_END] = "The end must be after the start."
        elif end - start > max_range_days * 86400:
            errors[B_END] = (
                f"The range is {(end - start) / 86400:.0f} days; at most {max_range_days} "
                "days are allowed. Split it into several requests."
            )
    return errors


def _kind(value: Any) -> AuditKind:
    for k in AUDIT_KINDS:
        if k == value:
            return k
    raise ValueError(value)  # pragma: no cover - checked above
