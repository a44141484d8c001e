"""Slack Enterprise Audit Logs API → trailseal events: the mapping and the poll cycle.

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

Poll cycle (:class:`AuditPoller`, I/O injected)
------------------------------------------------
State (a JSON object kept durably by the caller): ``{"watermark": W}`` between cycles,
where W is the newest ``date_create`` ever read (Unix seconds; absent before the first
entry); during a cycle also ``{"phase": "paging", "oldest", "latest", "cursor",
"max_seen"}``.

1. A new cycle fixes ``latest = now`` and ``oldest = max(W - overlap_s, backfill start)``;
   before any watermark, ``oldest`` is the backfill start (``backfill_from``) or
   ``now - overlap_s``. A saved ``paging`` state is resumed instead, as it was.
2. Each request sends ``oldest``, ``latest`` and ``limit`` again, and ``cursor`` after
   the first page. Entries are mapped and appended durably; *then* the state is saved
   with the next cursor and the newest ``date_create`` seen. A crash between the two
   re-reads at most one page on resume, and the ledger's idempotency by (source, id)
   makes a re-read a duplicate, never a second entry.
3. After the last page (no ``next_cursor``) the state becomes ``{"watermark":
   max(W, max_seen)}``. The next cycle re-reads ``overlap_s`` behind it, which picks up
   entries Slack makes visible late; they are deduplicated the same way.

Errors: 429 waits ``Retry-After`` (capped) and retries; 5xx, unparseable answers and
network errors retry with exponential backoff, a bounded number of times, then raise
:class:`SlackAuditError`; ``invalid_cursor`` restarts the cycle's window from ``oldest``
with no cursor (a bounded number of times); any other refusal (``invalid_auth``,
``missing_scope``, ``not_allowed_token_type``, ...) raises
:class:`~trailseal.errors.ConfigError` saying how to fix the token. An error never
moves the state past what was appended.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from trailseal import __version__
from trailseal.errors import ConfigError, Error
from trailseal.ingest.slack_events import _ACTION_SAFE, _id, _strip, _time
from trailseal.model.schema import schema_errors
from trailseal.settings import Secret

SOURCE = "slack.audit"
ACTION_PREFIX = "slack.audit."
LOGS_PATH = "/audit/v1/logs"
MAX_LIMIT = 9999
"""The API's largest ``limit``."""

LOGGER = logging.getLogger("trailseal.poller")

Fetch = Callable[[dict[str, Any]], tuple[int, Mapping[str, str], Any]]
"""One GET of the logs endpoint with these query parameters → (status, headers, JSON)."""
Append = Callable[[list[dict[str, Any]]], Mapping[str, int] | None]
"""Appends events durably, raising on failure; may return counts by status
(``appended``, ``duplicate``, ``conflict``). None counts every event as appended."""
LoadState = Callable[[], dict[str, Any] | None]
SaveState = Callable[[dict[str, Any]], None]
Clock = Callable[[], float]
"""Unix seconds."""
Sleep = Callable[[float], None]


class SlackAuditError(Error):
    """The Audit Logs API could not be read (after retries); nothing beyond the last
    appended page was recorded as done."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def diagnostics(self) -> str:
        return str(self) if not self.hint else f"{self}\n  hint: {self.hint}"


class FetchError(Error):
    """The request did not get an HTTP answer (connection, timeout, TLS)."""


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


# -- the real fetch --------------------------------------------------------------------------


class HttpxFetch:
    """GET ``{base_url}/audit/v1/logs`` with the Bearer token; never shows the token."""

    def __init__(
        self,
        token: Secret | str,
        base_url: str = "https://api.slack.com",
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._token = token if isinstance(token, Secret) else Secret(token)
        self.url = base_url.rstrip("/") + LOGS_PATH
        self._http = httpx.Client(timeout=timeout_s, transport=transport)

    def __repr__(self) -> str:
        return f"HttpxFetch(url={self.url!r}, token=***)"

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __call__(self, params: dict[str, Any]) -> tuple[int, Mapping[str, str], Any]:
        try:
            response = self._http.get(
                self.url,
                params=params,
                headers={
                    "Authorization": f"Bearer {self._token.reveal()}",
                    "Accept": "application/json",
                    "User-Agent": f"trailseal/{__version__}",
                },
            )
        except httpx.HTTPError as e:
            raise FetchError(f"network error: {type(e).__name__}") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return response.status_code, dict(response.headers), body


# -- the poll cycle -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollSummary:
    """What one cycle did."""

    pages: int
    entries: int
    appended: int
    duplicates: int
    conflicts: int
    restarts: int
    resumed: bool
    oldest: int
    latest: int
    watermark: int | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


_CURSOR_ERRORS = {"invalid_cursor", "cursor_expired", "expired_cursor", "stale_cursor"}
_TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_TOKEN_ERRORS = {
    "invalid_auth",
    "not_authed",
    "invalid_authentication",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
    "not_allowed_token_type",
    "no_permission",
    "not_an_enterprise",
    "feature_not_enabled",
    "team_not_authorized",
    "invalid_workspace",
    "org_login_required",
}
_AUTH_FIX = (
    "use a user token (xoxp-) of an Enterprise organization *owner*, from an app with the "
    "auditlogs:read user scope installed on the organization (not on one workspace); put it "
    "in the variable or file named by token_env / token_file in [slack.audit]"
)


def parse_backfill(value: str | None) -> int | None:
    """``backfill_from`` (an RFC 3339 date or date-time; UTC when no offset) → Unix seconds."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("z", "Z"))
    except ValueError as e:
        raise ConfigError(
            f"[slack.audit] backfill_from {value!r} is not an RFC 3339 date or date-time "
            "(e.g. 2024-01-31 or 2024-01-31T00:00:00Z)"
        ) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


@dataclass(slots=True)
class _Cycle:
    """A cycle in progress: its fixed window, where paging is, and what it did."""

    watermark: int | None
    oldest: int
    latest: int
    cursor: str | None
    max_seen: int | None
    resumed: bool = False
    pages: int = 0
    entries: int = 0
    appended: int = 0
    duplicates: int = 0
    conflicts: int = 0
    restarts: int = 0

    def paging_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "phase": "paging",
            "oldest": self.oldest,
            "latest": self.latest,
            "cursor": self.cursor,
            "max_seen": self.max_seen,
        }
        if self.watermark is not None:
            state["watermark"] = self.watermark
        return state

    def summary(self) -> PollSummary:
        return PollSummary(
            self.pages,
            self.entries,
            self.appended,
            self.duplicates,
            self.conflicts,
            self.restarts,
            self.resumed,
            self.oldest,
            self.latest,
            self.watermark,
        )


class AuditPoller:
    """Reads the Audit Logs API into a log, one cycle per :meth:`poll_once`."""

    def __init__(
        self,
        fetch: Fetch,
        append: Append,
        load_state: LoadState,
        save_state: SaveState,
        *,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        limit: int = 200,
        overlap_s: int = 300,
        backfill_from: str | int | None = None,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_rate_limit_waits: int = 10,
        max_retry_after_s: float = 120.0,
        max_cursor_restarts: int = 3,
    ) -> None:
        self._fetch = fetch
        self._append = append
        self._load_state = load_state
        self._save_state = save_state
        self._clock = clock
        self._sleep = sleep
        self.limit = max(1, min(int(limit), MAX_LIMIT))
        self.overlap_s = max(0, int(overlap_s))
        self.backfill_start = (
            backfill_from if isinstance(backfill_from, int) else parse_backfill(backfill_from)
        )
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_rate_limit_waits = max_rate_limit_waits
        self.max_retry_after_s = max_retry_after_s
        self.max_cursor_restarts = max_cursor_restarts

    def __repr__(self) -> str:
        return f"AuditPoller(limit={self.limit}, overlap_s={self.overlap_s})"

    def _new_window(self, watermark: int | None) -> tuple[int, int]:
        now = int(self._clock())
        if watermark is None:
            oldest = (
                self.backfill_start if self.backfill_start is not None else now - self.overlap_s
            )
        else:
            oldest = watermark - self.overlap_s
            if self.backfill_start is not None:
                oldest = max(oldest, self.backfill_start)
        return min(max(oldest, 0), now), now

    def _begin(self) -> _Cycle:
        """The cycle a crash interrupted, or a new one."""
        state = self._load_state() or {}
        watermark = _seconds(state.get("watermark"))
        if state.get("phase") == "paging":
            oldest, latest = _seconds(state.get("oldest")), _seconds(state.get("latest"))
            if oldest is not None and latest is not None:
                cursor = state.get("cursor")
                return _Cycle(
                    watermark,
                    oldest,
                    latest,
                    cursor if isinstance(cursor, str) and cursor else None,
                    _seconds(state.get("max_seen")),
                    resumed=True,
                )
        oldest, latest = self._new_window(watermark)
        return _Cycle(watermark, oldest, latest, None, None)

    def poll_once(self) -> PollSummary:
        """Run one full cycle (or finish the one a crash interrupted); see the module doc."""
        cycle = self._begin()
        while True:
            params: dict[str, Any] = {
                "oldest": cycle.oldest,
                "latest": cycle.latest,
                "limit": self.limit,
            }
            if cycle.cursor:
                params["cursor"] = cycle.cursor
            body = self._request(params)
            if body is None:  # the cursor is no longer valid: read the window again
                self._restart(cycle)
                continue
            self._take_page(cycle, body.get("entries"))
            metadata = body.get("response_metadata")
            next_cursor = metadata.get("next_cursor") if isinstance(metadata, dict) else None
            if not (isinstance(next_cursor, str) and next_cursor):
                break
            cycle.cursor = next_cursor
            self._save_state(cycle.paging_state())
        if cycle.max_seen is not None and (
            cycle.watermark is None or cycle.max_seen > cycle.watermark
        ):
            cycle.watermark = cycle.max_seen
        self._save_state({} if cycle.watermark is None else {"watermark": cycle.watermark})
        summary = cycle.summary()
        LOGGER.info("audit poll cycle done", extra={"poller": SOURCE, **summary.as_dict()})
        return summary

    def _restart(self, cycle: _Cycle) -> None:
        cycle.restarts += 1
        if cycle.restarts > self.max_cursor_restarts:
            raise SlackAuditError(
                f"Slack refused the paging cursor {cycle.restarts} times in one cycle",
                hint="the next run starts the window again; if this repeats, lower "
                "[slack.audit] limit or interval_s",
            )
        LOGGER.warning(
            "audit cursor refused; re-reading the window",
            extra={"poller": SOURCE, "oldest": cycle.oldest, "latest": cycle.latest},
        )
        cycle.cursor = None

    def _take_page(self, cycle: _Cycle, raw_entries: Any) -> None:
        """Map and append one page durably, then account for it."""
        page = (
            [e for e in raw_entries if isinstance(e, dict)] if isinstance(raw_entries, list) else []
        )
        events = [map_audit_entry(e) for e in page]
        counts = self._append(events) if events else {}
        cycle.pages += 1
        cycle.entries += len(events)
        if counts is None:
            cycle.appended += len(events)
        else:
            cycle.appended += int(counts.get("appended", 0))
            cycle.duplicates += int(counts.get("duplicate", 0))
            cycle.conflicts += int(counts.get("conflict", 0))
        for e in page:
            seen = _seconds(e.get("date_create"))
            if seen is not None and (cycle.max_seen is None or seen > cycle.max_seen):
                cycle.max_seen = seen

    def _request(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """One page: the JSON body, or None when the cursor must be dropped."""
        failures = waits = 0
        while True:
            reason: str
            try:
                status, headers, body = self._fetch(params)
            except (FetchError, OSError) as e:
                reason = (
                    str(e) if isinstance(e, FetchError) else f"network error: {type(e).__name__}"
                )
            else:
                error = body.get("error") if isinstance(body, dict) else None
                error_code = str(error) if error else ""
                if status == 429:
                    waits += 1
                    if waits > self.max_rate_limit_waits:
                        raise SlackAuditError(
                            f"still rate limited by Slack after {waits - 1} waits",
                            hint="the Audit Logs API allows about 50 calls a minute for the "
                            "whole organization; raise [slack.audit] limit or interval_s",
                        )
                    wait = _retry_after(headers, self.max_retry_after_s)
                    LOGGER.warning(
                        "rate limited by Slack", extra={"poller": SOURCE, "retry_after_s": wait}
                    )
                    self._sleep(wait)
                    continue
                if 200 <= status < 300 and isinstance(body, dict) and body.get("ok") is not False:
                    return body
                if (
                    status >= 500
                    or status == 408
                    or error_code in _TRANSIENT_ERRORS
                    or (200 <= status < 300 and not isinstance(body, dict))
                ):
                    reason = f"HTTP {status}" + (f" ({error_code})" if error_code else "")
                elif error_code in _CURSOR_ERRORS and "cursor" in params:
                    return None
                else:
                    raise _refusal(status, error_code, body)
            failures += 1
            if failures >= self.max_attempts:
                raise SlackAuditError(
                    f"could not read the Slack Audit Logs API after {failures} attempts: {reason}",
                    hint="nothing after the last appended page was marked as read; the next "
                    "run continues from there",
                )
            wait = min(self.backoff_s * 2 ** (failures - 1), self.max_backoff_s)
            LOGGER.warning(
                "Slack Audit Logs API request failed; retrying",
                extra={"poller": SOURCE, "reason": reason, "attempt": failures, "wait_s": wait},
            )
            self._sleep(wait)


def _retry_after(headers: Mapping[str, str], cap: float) -> float:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        wait = float(value) if value is not None else 1.0
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), cap)


def _refusal(status: int, error: str, body: Any) -> ConfigError:
    code = error or f"HTTP {status}"
    details = ""
    if isinstance(body, dict):
        extra = {k: body[k] for k in ("needed", "provided") if isinstance(body.get(k), str)}
        details = "".join(f"; {k}: {v}" for k, v in extra.items())
    if error in _TOKEN_ERRORS or status in (401, 403):
        return ConfigError(
            f"Slack refused the Audit Logs token: {code} (HTTP {status}{details}). Fix: {_AUTH_FIX}"
        )
    return ConfigError(
        f"Slack refused the Audit Logs request: {code} (HTTP {status}{details}); check "
        "[slack.audit] (limit is 1-9999, backfill_from not before March 2018)"
    )


__all__ = [
    "SOURCE",
    "AuditPoller",
    "FetchError",
    "HttpxFetch",
    "PollSummary",
    "SlackAuditError",
    "audit_class",
    "map_action",
    "map_audit_entry",
    "parse_backfill",
]
