"""Everything the /audit app shows people, as Block Kit: the approvers' message, the
requester's notices, ``/audit help`` and ``/audit status``, and the App Home tab.

Pure functions of the request and its state, so ``docs/slack/audit-app.md`` can render
the very blocks the app sends (``python -m trailseal.slackapp.preview``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trailseal.slackapp.model import AuditRequest

ACTION_APPROVE = "audit_approve"
ACTION_DENY = "audit_deny"

STATE_LABELS = {
    "pending": ":hourglass_flowing_sand: pending approval",
    "approved": ":white_check_mark: approved, report being built",
    "ready": ":page_facing_up: report ready",
    "denied": ":no_entry: denied",
    "expired": ":alarm_clock: expired",
}

DECIDED_LABELS = {
    "approved": ":white_check_mark: *Approved*",
    "denied": ":no_entry: *Denied*",
    "expired": ":alarm_clock: *Expired*",
}

HELP = (
    "*/audit* opens a form to request an audit of Slack activity recorded by trailseal.\n"
    "• `/audit` — request an audit (channel, team, app, user, or a query over the log)\n"
    "• `/audit status` — your requests and where they stand\n"
    "• `/audit help` — this message\n"
    "Approvers decide in the approvers' channel; you are told every outcome, and the "
    "report arrives here in a direct message with an evidence bundle that "
    "`trailseal verify-bundle` checks offline. Your requests are also on the app's Home tab."
)


@dataclass(frozen=True, slots=True)
class Listed:
    """A request with its state and, when its report is ready, download links."""

    request: AuditRequest
    state: str
    links: Sequence[tuple[str, str]] = ()
    """(file name, URL) pairs."""


def escape(text: str) -> str:
    """Typed text made inert in mrkdwn: Slack reads ``&``, ``<`` and ``>`` as markup
    (``<!channel>``, ``<@U…>``, ``<https://…|label>``), so they become entities
    (docs.slack.dev/messaging/formatting-message-text#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_clipped(text: str, limit: int) -> str:
    """:func:`escape` ``text`` in at most ``limit`` characters, never cutting an entity
    in half (escaping can make text five times longer)."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&", len(cut) - 5)
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def section(text: str) -> dict[str, Any]:
    """A mrkdwn section block."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def scope_text(request: AuditRequest) -> str:
    """The scope in one readable paragraph."""
    s = request.scope
    parts = [f"*Type:* {s.kind}", f"*Team:* {escape(s.team_id or request.team_id)}"]
    if s.channels:
        parts.append("*Channels:* " + ", ".join(f"<#{c}>" for c in s.channels))
    if s.users:
        parts.append("*Users:* " + ", ".join(f"<@{u}>" for u in s.users))
    if s.apps:
        parts.append("*Apps:* " + escape(", ".join(s.apps)))
    if s.query:
        parts.append(f"*Query:* `{escape(s.query)}`")
    parts.append(f"*From:* {s.start}  *until:* {s.end}")
    parts.append(f"*Slack Connect members:* {'included' if s.include_external else 'left out'}")
    text = "\n".join(parts)
    # A section's text holds at most 3,000 characters; long lists are cut, the log has all.
    return text if len(text) <= 2900 else text[:2880] + "\n… (cut; see the request event)"


def approval_message(
    request: AuditRequest, outcome: tuple[str, str, str] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the approvers' message; ``outcome`` is (decision,
    decided by, when) once decided, and replaces the buttons."""
    text = f"Audit request {request.id} from <@{request.requester}>"
    blocks: list[dict[str, Any]] = [
        section(f":mag: *{text}*"),
        section(scope_text(request)),
        section(f"*Purpose:* {escape_clipped(request.purpose, 2900)}"),
        _context(f"Request `{request.id}` · expires {request.expires_at}"),
    ]
    if outcome is None:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"decide:{request.id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ACTION_APPROVE,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": request.id,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Approve this audit?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": "The report is built and sent to the requester.",
                            },
                            "confirm": {"type": "plain_text", "text": "Approve"},
                            "deny": {"type": "plain_text", "text": "Cancel"},
                        },
                    },
                    {
                        "type": "button",
                        "action_id": ACTION_DENY,
                        "text": {"type": "plain_text", "text": "Deny"},
                        "style": "danger",
                        "value": request.id,
                    },
                ],
            }
        )
    else:
        decision, by, when = outcome
        who = "expiry (nobody decided in time)" if decision == "expired" else f"<@{by}>"
        blocks.append(section(f"{DECIDED_LABELS.get(decision, decision)} by {who} at {when}"))
        text += f": {decision}"
    return text, blocks


def outcome_notice(request: AuditRequest, decision: str, by: str) -> str:
    """What the requester is told about a decision."""
    if decision == "approved":
        return (
            f":white_check_mark: Your audit request `{request.id}` was approved by <@{by}>. "
            "The report is being built; it will arrive here."
        )
    if decision == "denied":
        return f":no_entry: Your audit request `{request.id}` was denied by <@{by}>."
    return (
        f":alarm_clock: Your audit request `{request.id}` expired at {request.expires_at} "
        "without a decision. Submit it again with `/audit` if you still need it."
    )


def submitted_notice(request: AuditRequest) -> str:
    """What the requester is told once the request is recorded."""
    return (
        f":inbox_tray: Your audit request `{request.id}` is recorded and was sent to the "
        f"approvers. It expires at {request.expires_at} if nobody decides. "
        "`/audit status` shows where it stands."
    )


def undelivered_notice(request: AuditRequest, reason: str) -> str:
    """What the requester is told when the approvers' message could not be posted."""
    return (
        f":warning: Your audit request `{request.id}` is recorded, but the message to the "
        f"approvers could not be posted ({escape(reason[:200])}). Approvers can still "
        "decide on it from the app's Home tab: tell them, or an admin. It expires at "
        f"{request.expires_at} if nobody decides. `/audit status` shows where it stands."
    )


def submitted_view(request: AuditRequest) -> dict[str, Any]:
    """The modal after a successful submission (``response_action: update``)."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Request recorded"},
        "close": {"type": "plain_text", "text": "Done"},
        "blocks": [section(submitted_notice(request))],
    }


def links_blocks(links: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Download buttons (at most 5 per actions block, Block Kit's limit is 25)."""
    if not links:
        return []
    return [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": name[:75]},
                    "url": url,
                    "action_id": f"download:{i}",
                }
                for i, (name, url) in enumerate(links[:25])
            ],
        }
    ]


def report_notice(
    request: AuditRequest, rows: int, links: Sequence[tuple[str, str]]
) -> tuple[str, list[dict[str, Any]]]:
    """The requester's message when the report is ready."""
    text = (
        f":page_facing_up: The report for `{request.id}` is ready: {rows} rows. The files are "
        "attached in this conversation; the links below are yours alone and expire."
    )
    return text, [section(text), *links_blocks(links)]


def _listed_blocks(item: Listed, *, buttons: bool) -> list[dict[str, Any]]:
    r = item.request
    blocks: list[dict[str, Any]] = [
        section(
            f"*`{r.id}`* · {r.scope.kind} · {STATE_LABELS.get(item.state, item.state)}\n"
            f"{r.scope.start} → {r.scope.end}\n_{escape_clipped(r.purpose, 200)}_"
        ),
        *links_blocks(item.links),
    ]
    if buttons:
        _, message = approval_message(r)
        blocks[0]["text"]["text"] += f"\nRequested by <@{r.requester}>"
        blocks.append(message[-1])  # the Approve / Deny actions
    return blocks


def status_blocks(items: Sequence[Listed]) -> list[dict[str, Any]]:
    """``/audit status``: the user's requests and their states."""
    if not items:
        return [section("You have no audit requests. `/audit` opens the request form.")]
    blocks: list[dict[str, Any]] = [section(f"*Your audit requests* ({len(items)})")]
    for item in items[:20]:
        blocks += _listed_blocks(item, buttons=False)
    return blocks


def home_view(mine: Sequence[Listed], awaiting: Sequence[Listed] | None) -> dict[str, Any]:
    """The App Home tab; ``awaiting`` (approvers only) lists pending requests."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Audit requests"}},
        _context("Request an audit with `/audit`. Every step is recorded in the audit log."),
    ]
    if awaiting is not None:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Awaiting you"}})
        if not awaiting:
            blocks.append(section("Nothing is waiting for a decision."))
        for item in awaiting[:15]:
            blocks += [*_listed_blocks(item, buttons=True), {"type": "divider"}]
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Your requests"}})
    if not mine:
        blocks.append(section("You have not requested an audit yet."))
    for item in mine[:20]:
        blocks += [*_listed_blocks(item, buttons=False), {"type": "divider"}]
    return {"type": "home", "blocks": blocks[:100]}  # Block Kit allows 100 blocks


def refusal(role: str, hint: str) -> str:
    """What someone without the role is told."""
    what = "request audits" if role == "requester" else "approve or deny audit requests"
    return (
        f":lock: You are not allowed to {what}. Ask {hint} to give you access "
        "(an admin adds you to `[slack.audit_app.roles]` in trailseal.toml, or to a user "
        "group listed there). This refusal was recorded."
    )
