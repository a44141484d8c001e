"""The /audit app's state, kept in the tenant's log and nowhere else.

The app holds no database of its own: a request, its decision and its report are events
under :data:`~trailseal.slackapp.model.APP_SOURCE`, and reading the state back means
reading those events (by idempotency key, or through the search index for lists). A
second node, a restart or a double click therefore sees exactly what the log says, and
the log's idempotency on ``(source, event id)`` decides races: :meth:`Journal.append`
returns the stored event, which is the caller's own only when it was the first writer.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from trailseal.errors import NotFoundError
from trailseal.ingest.delivery import SOURCE as DELIVERY_SOURCE
from trailseal.ledger import Ledger, rfc3339
from trailseal.service.core import Service
from trailseal.service.registry import Principal, TenantLog
from trailseal.service.search import Query
from trailseal.slackapp.model import (
    ACTION_REFUSED,
    ACTION_REQUESTED,
    APP_SOURCE,
    AuditRequest,
    AuditScope,
    decision_event_id,
    report_event_id,
    request_event_id,
)

SYSTEM_ACTOR = "trailseal"
"""Actor id of steps nobody clicked (expiry)."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused a step: a Slack user (with team) and how their request was authenticated."""

    user: str
    team: str
    auth: str = "signing-secret"
    """``signing-secret`` for HTTP requests, ``token`` for Socket Mode envelopes."""

    def to_json(self) -> dict[str, Any]:
        """The event's ``actor``."""
        if self.user == SYSTEM_ACTOR:
            return {"type": "system", "id": SYSTEM_ACTOR}
        return {"type": "user", "id": self.user, "team": self.team}


SYSTEM = Actor(SYSTEM_ACTOR, "")


@dataclass(frozen=True, slots=True)
class Written:
    """What :meth:`Journal.append` stored: the event under its id, and whether the
    caller wrote it (``first``) or found an earlier one there."""

    record: dict[str, Any]
    first: bool

    @property
    def actor_id(self) -> str:
        """Who wrote the stored event."""
        return str(self.record.get("actor", {}).get("id", ""))


def new_request_id() -> str:
    """A request id: short enough to read aloud, long enough not to collide."""
    return "ar_" + secrets.token_hex(6)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time stored by this app."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Journal:
    """Appends the app's events to one log and reads the app's state back from it."""

    def __init__(self, service: Service, tenant: str, log: str) -> None:
        self.service = service
        self.tenant = tenant
        self.log = log
        self.principal = Principal("slackapp", tenant, "ingest", False, internal=True)
        # Requests not yet known to be finished, and the newest request entry read: the
        # sweep (every minute, and before every click) reads only what is new, and a
        # finished request never becomes unfinished again (the log only grows).
        self._open: dict[str, AuditRequest] = {}
        self._seen = -1
        self._open_lock = threading.Lock()

    def tlog(self) -> TenantLog:
        """The log (NotFoundError when the configured log does not exist)."""
        return self.service.registry.log(self.tenant, self.log)

    def ledger(self) -> Ledger:
        """The ledger behind the log."""
        return self.service.ledger(self.tlog())

    def now(self) -> datetime:
        """The service clock (tests inject a fake one)."""
        return self.service.clock()

    # -- writing ------------------------------------------------------------------------

    def append(
        self,
        action: str,
        event_id: str,
        actor: Actor,
        *,
        rid: str | None,
        status: str = "success",
        reason: str | None = None,
        raw: dict[str, Any] | None = None,
        targets: list[dict[str, str]] | None = None,
    ) -> Written:
        """Append one step; returns the event stored under ``event_id`` (ours or not)."""
        event: dict[str, Any] = {
            "id": event_id,
            "source": APP_SOURCE,
            "class": "security",
            "action": action,
            "actor": actor.to_json(),
            "targets": targets or ([{"type": "audit_request", "id": rid}] if rid else []),
            "result": {"status": status},
            "raw": raw or {},
        }
        if actor.user != SYSTEM_ACTOR:  # the app's own steps (expiry, report) have no caller
            event["auth"] = {"method": actor.auth}
        if actor.team:
            event["context"] = {"workspace": actor.team}
        if rid:
            event["correlation"] = {"id": rid}
        if reason:
            event["result"]["reason"] = reason[:1024]
        result = self.service.ingest(self.principal, self.log, [event], APP_SOURCE)[0]
        if result.status == "appended":
            stored = orjson.loads(self.ledger().entry(result.index).data)
            return Written(stored, True)
        return Written(self._find(event_id) or {}, False)

    def refused(self, actor: Actor, attempted: str, reason: str, rid: str | None = None) -> None:
        """Log a refusal (no role, self-approval, expired, no such request):
        ``audit.refused``."""
        self.append(
            ACTION_REFUSED,
            f"refused:{secrets.token_hex(8)}",
            actor,
            rid=rid,
            status="failure",
            reason=reason,
            raw={"attempted": attempted},
        )

    # -- reading ------------------------------------------------------------------------

    def _find(self, event_id: str, source: str = APP_SOURCE) -> dict[str, Any] | None:
        try:
            entry = self.ledger().find(event_id, source)
        except NotFoundError:
            return None
        record: dict[str, Any] = orjson.loads(entry.data)
        return record

    def request(self, rid: str) -> AuditRequest | None:
        """The request ``rid`` as it was submitted, or None."""
        record = self._find(request_event_id(rid))
        return None if record is None else request_from_record(record)

    def decision(self, rid: str) -> dict[str, Any] | None:
        """The stored decision event of ``rid`` (approved, denied or expired), or None."""
        return self._find(decision_event_id(rid))

    def report(self, rid: str) -> dict[str, Any] | None:
        """The stored report-generated event of ``rid``, or None."""
        return self._find(report_event_id(rid))

    def approval_message(self, rid: str, max_attempts: int = 8) -> tuple[str, str] | None:
        """(channel, ts) of the approvers' message, from its ``delivery.acknowledged``
        event (SlackPoster used ``rid`` as the delivery id)."""
        for attempt in range(1, max_attempts + 1):
            record = self._find(f"{rid}/acknowledged/{attempt}", DELIVERY_SOURCE)
            if record is not None:
                by = str(record["result"]["delivery"].get("acknowledged_by", ""))
                channel = str(record["targets"][0]["id"])
                return channel, by.removeprefix("slack:")
        return None

    def state(self, rid: str, request: AuditRequest | None = None) -> str:
        """pending, approved, denied, expired or ready (approved with a report)."""
        decision = self.decision(rid)
        if decision is None:
            request = request or self.request(rid)
            if request is not None and parse_time(request.expires_at) <= self.now():
                return "expired"  # the sweeper will write it; show the truth meanwhile
            return "pending"
        kind = str(decision["raw"].get("decision", ""))
        if kind == "approved" and self.report(rid) is not None:
            return "ready"
        return kind

    def requests(self, *, requester: str | None = None, limit: int = 1000) -> list[AuditRequest]:
        """Requests, newest first (only ``requester``'s when given)."""
        ledger = self.ledger()
        index = self.service.search_index
        index.catch_up(ledger)
        query = Query(source=APP_SOURCE, action=ACTION_REQUESTED, actor=requester)
        out: list[AuditRequest] = []
        before: int | None = None
        while len(out) < limit:
            page = index.search(ledger.log.name, query, min(1000, limit - len(out)), before)
            if not page:
                break
            for i in page:
                out.append(request_from_record(orjson.loads(ledger.entry(i).data)))
            before = page[-1]
        return out

    def pending(self) -> list[AuditRequest]:
        """Requests without a decision, oldest first."""
        return [request for request, decision in self._unfinished() if decision is None]

    def approved_without_report(self) -> list[AuditRequest]:
        """Approved requests whose report was never recorded (e.g. a crash mid-report)."""
        return [request for request, decision in self._unfinished() if decision is not None]

    def _unfinished(self) -> list[tuple[AuditRequest, dict[str, Any] | None]]:
        """Requests still waiting for a decision or a report, oldest first, with their
        decision (None while pending).

        Reads the request entries appended since the last call (newest first from the
        search index, down to the last one seen), then asks the log about each request
        still unfinished; a denied or expired one, or an approved one with its report,
        is dropped for good (the log only grows). So the sweep costs what is unfinished
        and new, not every request ever made.
        """
        ledger = self.ledger()
        index = self.service.search_index
        query = Query(source=APP_SOURCE, action=ACTION_REQUESTED)
        with self._open_lock:
            index.catch_up(ledger)
            fresh: list[int] = []
            before: int | None = None
            while True:
                page = index.search(ledger.log.name, query, 1000, before)
                new = [i for i in page if i > self._seen]
                fresh += new
                if not page or len(new) < len(page):
                    break
                before = page[-1]
            for i in reversed(fresh):
                request = request_from_record(orjson.loads(ledger.entry(i).data))
                self._open[request.id] = request
            if fresh:
                self._seen = fresh[0]
            out: list[tuple[AuditRequest, dict[str, Any] | None]] = []
            for rid, request in list(self._open.items()):
                decision = self.decision(rid)
                if decision is not None and (
                    decision["raw"].get("decision") != "approved" or self.report(rid) is not None
                ):
                    del self._open[rid]
                    continue
                out.append((request, decision))
            return out


def request_record_raw(request: AuditRequest) -> dict[str, Any]:
    """What ``audit.requested`` keeps in ``raw``: everything needed to rebuild it."""
    return {
        "request_id": request.id,
        "scope": request.scope.to_json(),
        "purpose": request.purpose,
        "requested_at": request.requested_at,
        "expires_at": request.expires_at,
    }


def request_from_record(record: dict[str, Any]) -> AuditRequest:
    """The inverse of :func:`request_record_raw`, from a stored ``audit.requested``."""
    raw = record["raw"]
    return AuditRequest(
        id=str(raw["request_id"]),
        requester=str(record["actor"]["id"]),
        team_id=str(record["actor"].get("team", "")),
        scope=AuditScope.from_json(raw["scope"]),
        purpose=str(raw["purpose"]),
        requested_at=str(raw["requested_at"]),
        expires_at=str(raw["expires_at"]),
    )


def at(moment: datetime) -> str:
    """RFC 3339 UTC, as the log writes times."""
    return rfc3339(moment)
