"""The /audit app's vocabulary: a request, its scope, and the files a report is made of.

The log is the app's source of truth. Every step of a request is an event appended to the
tenant's log under the source :data:`APP_SOURCE`, with an event id derived from the
request id, so that the log's idempotency (source + id) decides races: the first
decision on a request wins and a second click, a second node or an expiry sweep running
at the same time gets the first decision back instead of writing its own.

==========================  ==============================  ===========================
step                        event id                        action
==========================  ==============================  ===========================
requested                   ``request:<rid>``               ``audit.requested``
approved / denied / expired ``decision:<rid>``              ``audit.approved`` ...
report generated            ``report:<rid>``                ``audit.report_generated``
report downloaded           ``download:<rid>:<nonce>``      ``audit.report_downloaded``
refused (no role)           ``refused:<nonce>``             ``audit.refused``
==========================  ==============================  ===========================

Every event of a request carries ``correlation.id = <rid>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

APP_SOURCE = "trailseal.slackapp"
"""Source of every event the /audit app appends (reserved: API keys cannot use it)."""

AuditKind = Literal["channel", "team", "app", "user", "query"]
AUDIT_KINDS: tuple[AuditKind, ...] = ("channel", "team", "app", "user", "query")

ACTION_REQUESTED = "audit.requested"
ACTION_APPROVED = "audit.approved"
ACTION_DENIED = "audit.denied"
ACTION_EXPIRED = "audit.expired"
ACTION_REPORT = "audit.report_generated"
ACTION_DOWNLOADED = "audit.report_downloaded"
ACTION_REFUSED = "audit.refused"
DECISION_ACTIONS = {
    "approved": ACTION_APPROVED,
    "denied": ACTION_DENIED,
    "expired": ACTION_EXPIRED,
}


def request_event_id(rid: str) -> str:
    """Event id of the request itself."""
    return f"request:{rid}"


def decision_event_id(rid: str) -> str:
    """Event id shared by approve, deny and expire: only one of them can be stored."""
    return f"decision:{rid}"


def report_event_id(rid: str) -> str:
    """Event id of the report-generated step."""
    return f"report:{rid}"


@dataclass(frozen=True, slots=True)
class AuditScope:
    """What an audit covers. Times are RFC 3339 UTC strings; ``start`` < ``end``."""

    kind: AuditKind
    start: str
    end: str
    team_id: str | None = None
    channels: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()
    query: str | None = None
    """For ``kind == "query"``: free text over the log's non-content fields."""
    include_external: bool = False
    """Include Slack Connect members from other organizations."""

    def to_json(self) -> dict[str, Any]:
        """The scope as stored in the request event."""
        return {
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "team_id": self.team_id,
            "channels": list(self.channels),
            "users": list(self.users),
            "apps": list(self.apps),
            "query": self.query,
            "include_external": self.include_external,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AuditScope:
        """The inverse of :meth:`to_json`."""
        return cls(
            kind=value["kind"],
            start=str(value["start"]),
            end=str(value["end"]),
            team_id=value.get("team_id"),
            channels=tuple(value.get("channels") or ()),
            users=tuple(value.get("users") or ()),
            apps=tuple(value.get("apps") or ()),
            query=value.get("query"),
            include_external=bool(value.get("include_external", False)),
        )


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """A request as the requester submitted it."""

    id: str
    requester: str
    """Slack user id of the requester."""
    team_id: str
    scope: AuditScope
    purpose: str
    requested_at: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """The files of one generated report, all under one directory (0700, files 0600)."""

    directory: Path
    csv: Path
    json: Path
    summary_html: Path
    bundle: Path
    rows: int
    """Rows in the CSV (and objects in the JSON)."""
    log_entries: int
    """Log entries in the evidence bundle."""
    tree_size: int
    """Size of the checkpoint the bundle proves into."""
    summary_blocks: list[dict[str, Any]] = field(default_factory=list)
    """Slack Block Kit blocks summarizing the report."""
    sha256: dict[str, str] = field(default_factory=dict)
    """SHA-256 (hex) of each file, by file name."""
