"""Audit reports: the log entries a request covers, enriched from Slack, as files that
an auditor can read (CSV, JSON, HTML, Slack blocks) and check (an evidence bundle).

One pass over the log writes everything: each selected entry becomes a CSV row and a
JSON row and goes into the evidence bundle (v2, chunked) as it is read, so memory stays
bounded whatever the number of rows (``benchmarks/audit_export.py`` measures a million).
Every row carries the entry's index and leaf hash; the bundle proves each of those
entries into one signed checkpoint, offline (``trailseal verify-bundle``).

Slack Connect: an actor is external when Slack says the user belongs to another
organization (``users.info`` ``team_id`` is not the request's team, or ``is_stranger``),
or, without Slack, when the event's ``actor.team`` names another team. Their events are
left out of the rows and the bundle unless the scope includes external members; the
summary counts them either way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from slack_sdk.web import WebClient

from trailseal.bundle import export_bundle
from trailseal.core.merkle import leaf_hash
from trailseal.core.note import b64encode
from trailseal.errors import NotFoundError
from trailseal.ledger import rfc3339
from trailseal.service.core import Service
from trailseal.service.registry import TenantLog
from trailseal.slackapp.directory import SlackDirectory
from trailseal.slackapp.model import AuditRequest, ReportFiles
from trailseal.slackapp.report_files import (
    RowWriter,
    summary_blocks,
    summary_html,
    write_private,
)
from trailseal.slackapp.selection import Selected, home_team, select
from trailseal.slackapp.upload import Upload, share_files, too_large
from trailseal.storage.base import StoredEntry

REPORT_FORMAT = "trailseal-audit-report/v1"
_SLACK_USER = re.compile(r"[UW][A-Z0-9]+")
MAX_MEMBER_LOOKUPS = 1000
"""users.info calls per Slack Connect channel to tell its external members apart."""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _targets_text(record: dict[str, Any]) -> str:
    targets = record.get("targets")
    if not isinstance(targets, list):
        return ""
    out = []
    for t in targets:
        if isinstance(t, dict):
            text = f"{t.get('type', '?')}:{t.get('id', '?')}"
            out.append(f"{text} ({t['name']})" if t.get("name") else text)
    return "; ".join(out)


def _channel_of(record: dict[str, Any]) -> str | None:
    channel = _dict(record.get("context")).get("channel")
    if channel:
        return str(channel)
    targets = record.get("targets")
    for t in targets if isinstance(targets, list) else []:
        if isinstance(t, dict) and t.get("type") == "channel" and t.get("id"):
            return str(t["id"])
    return None


class _Rows:
    """Turns selected entries into rows, deciding who is external (cached per actor)."""

    def __init__(self, directory: SlackDirectory, team: str) -> None:
        self.directory = directory
        self.team = team
        self._actors: dict[str, tuple[str | None, bool]] = {}

    def actor(self, actor: dict[str, Any]) -> tuple[str | None, bool]:
        """(display name, external) of an event's actor."""
        actor_id = str(actor.get("id") or "")
        known = self._actors.get(actor_id)
        if known is not None:
            return known
        name = actor.get("name")
        logged_team = actor.get("team")
        external = bool(self.team) and logged_team is not None and logged_team != self.team
        if self.directory.enabled and actor.get("type", "user") == "user":
            user = self.directory.user(actor_id) if _SLACK_USER.fullmatch(actor_id) else None
            if user is not None:
                profile = _dict(user.get("profile"))
                name = user.get("real_name") or profile.get("real_name") or user.get("name")
                external = self.directory.is_external(user)
        result = (str(name) if name else None, external)
        if len(self._actors) < 100_000:
            self._actors[actor_id] = result
        return result

    def row(self, entry: StoredEntry, leaf: bytes, record: dict[str, Any]) -> dict[str, Any]:
        """One CSV/JSON row (see :data:`~trailseal.slackapp.report_files.COLUMNS`)."""
        actor, context = _dict(record.get("actor")), _dict(record.get("context"))
        name, external = self.actor(actor)
        return {
            "index": entry.index,
            "leaf_hash": leaf.hex(),
            "time": record.get("time"),
            "action": record.get("action"),
            "class": record.get("class"),
            "source": record.get("source"),
            "event_id": record.get("id"),
            "actor_type": actor.get("type"),
            "actor_id": actor.get("id"),
            "actor_name": name,
            "actor_team": actor.get("team"),
            "external": external,
            "targets": _targets_text(record),
            "channel": _channel_of(record),
            "workspace": context.get("workspace"),
            "app": context.get("app"),
            "result": _dict(record.get("result")).get("status"),
            "correlation_id": _dict(record.get("correlation")).get("id"),
        }


def _slack_facts(directory: SlackDirectory, request: AuditRequest) -> dict[str, Any]:
    """Team, channels (with external members told apart) and apps, as the token allows."""
    if not directory.enabled:
        return {}
    scope = request.scope
    facts: dict[str, Any] = {"team": directory.team()}
    channels = []
    for channel_id in scope.channels:
        info = directory.channel(channel_id) or {"id": channel_id}
        members, cut = directory.members(channel_id)
        external: list[str] = []
        if info.get("is_ext_shared"):
            for member in members[:MAX_MEMBER_LOOKUPS]:
                if directory.is_external(directory.user(member)):
                    external.append(member)
            if len(members) > MAX_MEMBER_LOOKUPS:
                directory.notes.append(
                    f"channel {channel_id}: only the first {MAX_MEMBER_LOOKUPS} of "
                    f"{len(members)} members were checked for Slack Connect"
                )
        if cut:
            directory.notes.append(f"channel {channel_id}: the member list was cut")
        shown = members if scope.include_external else [m for m in members if m not in external]
        channels.append(
            {
                "id": channel_id,
                "name": info.get("name"),
                "is_private": info.get("is_private"),
                "is_ext_shared": bool(info.get("is_ext_shared")),
                "members": len(shown),
                "member_ids": shown,
                "external": len(external),
                "external_ids": external if scope.include_external else [],
            }
        )
    facts["channels"] = channels
    if scope.kind in ("app", "team"):
        apps = directory.apps()
        if apps is not None:
            wanted = set(scope.apps)
            facts["apps"] = [
                {"id": a.get("id"), "name": a.get("name")}
                for a in apps
                if not wanted or a.get("id") in wanted
            ]
    return facts


def _safe_name(rid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", rid)[:64] or "report"


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a report file, as the report event records it."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def build_report(
    service: Service,
    tlog: TenantLog,
    request: AuditRequest,
    out_dir: Path,
    *,
    web: WebClient | None,
    progress: Callable[[int], None] | None = None,
) -> ReportFiles:
    """Write the report of an approved request into ``out_dir`` (0700; files 0600).

    ``progress`` is called with the number of log entries examined since its last call
    (their total is the checkpoint's tree size). With ``web``, Slack enriches the report;
    a scope the token lacks is noted in it, and other Slack failures raise
    :class:`~trailseal.errors.SlackError`.
    """
    ledger = service.ledger(tlog)
    stored = ledger.storage.latest_checkpoint(ledger.log.id)
    if stored is None:
        raise NotFoundError(f"log {tlog.name!r} is empty; there is nothing to report")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    out_dir.chmod(0o700)
    base = out_dir / f"audit-{_safe_name(request.id)}"
    paths = {k: base.with_name(base.name + ext) for k, ext in _EXTENSIONS.items()}
    directory = SlackDirectory(web, home_team(request))
    if not directory.home_team:
        directory.home_team = directory.own_team() or ""
    team = directory.home_team
    if not team:
        directory.notes.append(
            "no team given: Slack Connect members cannot be told apart; every event is included"
        )
    header = {
        "format": REPORT_FORMAT,
        "request": {
            "id": request.id,
            "requester": request.requester,
            "team_id": request.team_id,
            "purpose": request.purpose,
            "requested_at": request.requested_at,
            "expires_at": request.expires_at,
            "scope": request.scope.to_json(),
        },
        "generated_at": rfc3339(service.clock()),
        "log": {
            "tenant": tlog.tenant,
            "name": tlog.name,
            "origin": ledger.origin,
            "verifier_keys": [v.to_string() for v in ledger.verifiers()],
        },
        "checkpoint": {"tree_size": stored.tree_size, "root_hash": b64encode(stored.root_hash)},
    }
    selected = select(ledger, service.search_index, request, stored.tree_size, progress)
    slack = _slack_facts(directory, request)
    rows = RowWriter(paths["csv"], paths["json"], header)
    excluded = [0]
    bundle = None
    try:
        bundle = export_bundle(
            ledger,
            paths["bundle"],
            _rows_of(selected, rows, _Rows(directory, team), request, excluded),
            selection={"audit_request": request.id, "scope": request.scope.to_json()},
            layout="chunks",
            checkpoint=stored,
        )
        paths["bundle"].chmod(0o600)
        if directory.notes:
            slack["notes"] = directory.notes
        summary = {
            "rows": rows.rows,
            "excluded_external_rows": excluded[0],
            "by_action": rows.by_action.most_common(100),
            "by_actor": rows.by_actor.most_common(100),
            "other_actors_rows": rows.other_actors,
            "external_actors": rows.external_actors.most_common(100),
            "bundle_file": paths["bundle"].name,
            "bundle_entries": bundle.entries,
            "slack": slack,
            "slack_retry_wait_s": directory.retries.waited_s,
        }
        rows.finish(summary)
    except BaseException:
        rows.abort()
        if bundle is not None:  # written by this call: no bundle without its report
            paths["bundle"].unlink(missing_ok=True)
        raise
    hashes = {p.name: file_sha256(p) for p in (paths["csv"], paths["json"], paths["bundle"])}
    write_private(paths["html"], summary_html(summary, header, hashes).encode())
    hashes[paths["html"].name] = file_sha256(paths["html"])
    return ReportFiles(
        directory=out_dir,
        csv=paths["csv"],
        json=paths["json"],
        summary_html=paths["html"],
        bundle=paths["bundle"],
        rows=rows.rows,
        log_entries=bundle.entries,
        tree_size=bundle.tree_size,
        summary_blocks=summary_blocks(summary, header),
        sha256=hashes,
    )


_EXTENSIONS = {"csv": ".csv", "json": ".json", "html": ".html", "bundle": ".evidence.zip"}


def _rows_of(
    selected: Iterator[Selected],
    rows: RowWriter,
    builder: _Rows,
    request: AuditRequest,
    excluded: list[int],
) -> Iterator[StoredEntry]:
    """Write each selected entry's row and hand the entry on to the bundle."""
    for entry, record in selected:
        row = builder.row(entry, leaf_hash(entry.data), record)
        if row["external"] and not request.scope.include_external:
            excluded[0] += 1
            continue
        rows.write(row)
        yield entry


def upload_report(
    web: WebClient,
    channel: str,
    thread_ts: str | None,
    request: AuditRequest,
    files: ReportFiles,
) -> list[str]:
    """Share CSV, JSON, HTML and the evidence bundle in one message, streamed from disk
    (:mod:`trailseal.slackapp.upload`); returns Slack's file ids. A file over Slack's
    1 GB limit is left out and the comment says where to get it. Slack errors raise
    :class:`~trailseal.errors.SlackError`."""
    kind = request.scope.kind
    uploads = [
        Upload(files.csv, f"Audit {kind}: rows (CSV)"),
        Upload(files.json, "Rows and summary (JSON)"),
        Upload(files.summary_html, "Summary"),
        Upload(files.bundle, "Evidence bundle"),
    ]
    comment = (
        f"Audit report for request {request.id}: {files.rows:,} events, "
        f"{files.log_entries:,} log entries proven into tree size {files.tree_size:,}. "
        f"Verify offline: trailseal verify-bundle {files.bundle.name} --key '&lt;verifier key&gt;'"
    )
    left_out = too_large(uploads)
    if left_out:
        names = ", ".join(f"{u.path.name} ({u.path.stat().st_size / 1e9:.1f} GB)" for u in left_out)
        comment += (
            f"\n{names}: over Slack's 1 GB file limit, not uploaded here; the requester's "
            "download links (in their direct message and the app's Home tab) serve it."
        )
    sent = [u for u in uploads if u not in left_out]
    return share_files(web, sent, channel, thread_ts, comment)


__all__ = ["REPORT_FORMAT", "build_report", "file_sha256", "upload_report"]
