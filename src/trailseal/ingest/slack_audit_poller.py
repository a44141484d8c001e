"""Polling the Slack Enterprise Audit Logs API without gaps or duplicates.

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

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from trailseal import __version__
from trailseal.errors import ConfigError, Error
from trailseal.ingest.slack_audit import LOGS_PATH, MAX_LIMIT, SOURCE, _seconds, map_audit_entry
from trailseal.settings import Secret

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
    "AuditPoller",
    "FetchError",
    "HttpxFetch",
    "PollSummary",
    "SlackAuditError",
    "parse_backfill",
]
