"""What Slack knows about the people, channels and apps in a report, asked once each.

A report enriches log rows with names and tells Slack Connect members from the home
organization's; that needs ``users.info`` per actor, ``conversations.info`` and
``conversations.members`` per channel, ``team.info`` and an app listing. Answers are
cached for the report's lifetime, so a million rows by a hundred people cost a hundred
calls.

Rate limits: HTTP 429 waits ``Retry-After`` (capped) through slack_sdk's retry-handler
hook, with an injected ``sleep`` so tests do not wait. A scope the token lacks is not a
failure: the report says "not available: missing scope X" (:attr:`SlackDirectory.notes`).
Authentication failures and unexpected errors raise :class:`~trailseal.errors.SlackError`
with Slack's error code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web import WebClient

from trailseal.errors import SlackError

Sleep = Callable[[float], None]

_LOGGER = logging.getLogger("trailseal.slackapp")
_NOT_FOUND = {
    "user_not_found",
    "users_not_found",
    "user_not_visible",
    "channel_not_found",
    "not_in_channel",
    "team_not_found",
    "team_access_not_granted",
}
"""Per-object answers: noted in the report, the next object is still asked for."""
_UNAVAILABLE = {
    "not_allowed_token_type",  # admin.* methods refuse bot tokens
    "feature_not_enabled",  # admin APIs need Enterprise Grid
    "not_an_admin",
    "not_allowed",
    "no_permission",
    "access_denied",
    "enterprise_is_restricted",
}
"""Answers meaning the token may never call this method: noted once, not asked again."""
_FATAL = {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired"}
MAX_MEMBERS = 100_000
"""Members listed per channel; beyond this the report says the list was cut."""


class RetryAfterHandler(RetryHandler):
    """Retry an HTTP 429 after Slack's ``Retry-After`` seconds (at most ``cap_s``).

    slack_sdk's own RateLimitErrorRetryHandler sleeps with ``time.sleep`` and adds
    jitter; this one takes the sleep function, so tests can run a 429 without waiting.
    """

    def __init__(self, sleep: Sleep, max_retry_count: int = 5, cap_s: float = 120.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep
        self.cap_s = cap_s
        self.waited_s = 0.0

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = 1.0
        if response is not None:
            for name, values in response.headers.items():
                if name.lower() == "retry-after" and values:
                    try:
                        wait = max(0.0, float(values[0]))
                    except ValueError:
                        wait = 1.0  # an HTTP date or junk: Slack sends seconds; wait a second
        wait = min(wait, self.cap_s)
        _LOGGER.info("rate limited by Slack", extra={"retry_after_s": wait})
        self.waited_s += wait
        self._sleep(wait)
        state.next_attempt_requested = True
        state.increment_current_attempt()


def client_with_retries(web: WebClient, handler: RetryHandler) -> WebClient:
    """A copy of ``web`` (same token and endpoint) that also retries 429s with ``handler``.

    A copy, so the caller's client keeps its own retry behaviour.
    """
    return WebClient(
        token=web.token,
        base_url=web.base_url,
        timeout=web.timeout,
        ssl=web.ssl,
        proxy=web.proxy,
        headers=dict(web.headers),
        retry_handlers=[*web.retry_handlers, handler],
    )


def slack_error(method: str, e: SlackApiError) -> SlackError:
    """A trailseal error naming the method and Slack's error code (never the token)."""
    code = str(e.response.get("error") or f"http_{e.response.status_code}")
    hint = ""
    if code == "missing_scope":
        hint = f"; add the scope {e.response.get('needed')} to the app and reinstall it"
    elif code in _FATAL:
        hint = "; check the Slack token (trailseal slack doctor explains)"
    elif code == "ratelimited":
        hint = "; Slack is still rate limiting after the retries, try again later"
    return SlackError(f"Slack {method} failed: {code}{hint}", code=code)


class SlackDirectory:
    """Cached lookups for one report. ``web=None`` makes every lookup answer nothing."""

    def __init__(
        self,
        web: WebClient | None,
        home_team: str,
        *,
        sleep: Sleep = time.sleep,
        max_retry_after_s: float = 120.0,
    ) -> None:
        self.retries = RetryAfterHandler(sleep, cap_s=max_retry_after_s)
        self.web = client_with_retries(web, self.retries) if web is not None else None
        self.home_team = home_team
        self.notes: list[str] = []
        self._users: dict[str, dict[str, Any] | None] = {}
        self._unavailable: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether there is a Slack client to ask."""
        return self.web is not None

    def _call(self, method: str, what: str, **params: Any) -> dict[str, Any] | None:
        """One call; ``None`` when a scope is missing or the object is not found."""
        if self.web is None or method in self._unavailable:
            return None
        try:
            response = self.web.api_call(method, params=params)
        except SlackApiError as e:
            code = e.response.get("error")
            if code == "missing_scope" or code in _UNAVAILABLE:
                self._unavailable.add(method)
                reason = f"missing scope {e.response.get('needed') or '?'}"
                self.notes.append(
                    f"{what}: not available: {reason if code == 'missing_scope' else code}"
                )
                return None
            if code in _NOT_FOUND:
                self.notes.append(f"{what}: {code}")
                return None
            raise slack_error(method, e) from e
        data: dict[str, Any] = response.data if isinstance(response.data, dict) else {}
        return data

    def _pages(self, method: str, what: str, key: str, **params: Any) -> Iterator[Any]:
        cursor = ""
        while True:
            page = self._call(method, what, **params, **({"cursor": cursor} if cursor else {}))
            if page is None:
                return
            yield from page.get(key) or []
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                return

    def own_team(self) -> str | None:
        """The token's own team (``auth.test``): the home organization when no team was
        named."""
        found = self._call("auth.test", "token's team")
        return str(found["team_id"]) if found and found.get("team_id") else None

    def team(self, team_id: str | None = None) -> dict[str, Any] | None:
        """``team.info`` of the home team (or another)."""
        params = {"team": team_id} if team_id and team_id != self.home_team else {}
        found = self._call("team.info", f"team {team_id or self.home_team}", **params)
        return found.get("team") if found else None

    def user(self, user_id: str) -> dict[str, Any] | None:
        """``users.info``, once per user per report."""
        if user_id not in self._users:
            found = self._call("users.info", f"user {user_id}", user=user_id)
            self._users[user_id] = found.get("user") if found else None
        return self._users[user_id]

    def is_external(self, user: dict[str, Any] | None) -> bool:
        """Slack Connect: a user of another organization, or one Slack calls a stranger."""
        if not user:
            return False
        team = user.get("team_id")
        foreign = bool(self.home_team) and team is not None and team != self.home_team
        return bool(user.get("is_stranger")) or foreign

    def channel(self, channel_id: str) -> dict[str, Any] | None:
        """``conversations.info``."""
        found = self._call("conversations.info", f"channel {channel_id}", channel=channel_id)
        return found.get("channel") if found else None

    def members(self, channel_id: str) -> tuple[list[str], bool]:
        """``conversations.members`` (all pages, up to :data:`MAX_MEMBERS`); True if cut."""
        members: list[str] = []
        for member in self._pages(
            "conversations.members",
            f"members of {channel_id}",
            "members",
            channel=channel_id,
            limit=1000,
        ):
            if len(members) >= MAX_MEMBERS:
                return members, True
            members.append(str(member))
        return members, False

    def apps(self) -> list[dict[str, Any]] | None:
        """Approved apps (``admin.apps.approved.list``, an org admin scope); ``None`` if the
        token may not list them."""
        listed = list(
            self._pages("admin.apps.approved.list", "app listing", "approved_apps", limit=1000)
        )
        if "admin.apps.approved.list" in self._unavailable:
            return None
        return [a.get("app") or {} for a in listed]
