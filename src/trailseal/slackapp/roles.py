"""Who may request and who may approve: Slack users and user groups mapped to roles.

A user holds a role when their id is listed, or when they belong to a listed user group
(``usergroups.users.list``). Group membership is cached for a short TTL so a slash
command answers within Slack's 3 seconds; when Slack cannot be asked, the group counts
as empty (fail closed) and the failure is not cached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from trailseal.settings import AuditRoles

LOGGER = logging.getLogger("trailseal.slackapp")

Monotonic = Callable[[], float]


class RoleResolver:
    """Answers "is this user a requester / an approver?" from config and user groups."""

    def __init__(
        self,
        roles: AuditRoles,
        web: WebClient,
        *,
        ttl_s: float = 60.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.roles = roles
        self._web = web
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def is_requester(self, user: str) -> bool:
        """Whether ``user`` may submit audit requests."""
        return "*" in self.roles.requesters or self._holds(user, self.roles.requesters)

    def is_approver(self, user: str) -> bool:
        """Whether ``user`` may approve or deny requests."""
        return self._holds(user, self.roles.approvers)

    def approvers_hint(self) -> str:
        """Whom to ask for access, as Slack mentions."""
        return ", ".join(_mention(e) for e in self.roles.approvers)

    def _holds(self, user: str, entries: tuple[str, ...]) -> bool:
        if user in entries:
            return True
        return any(user in self.members(e) for e in entries if e.startswith("S"))

    def members(self, group: str) -> frozenset[str]:
        """Members of user group ``group`` (cached for the TTL)."""
        now = self._monotonic()
        with self._lock:
            cached = self._groups.get(group)
            if cached is not None and now - cached[0] < self._ttl_s:
                return cached[1]
        try:
            response = self._web.usergroups_users_list(usergroup=group)
        except SlackApiError as e:
            code = e.response.get("error", "unknown") if e.response is not None else "unknown"
            LOGGER.warning(
                "user group membership unavailable; treated as empty",
                extra={"usergroup": group, "error": str(code)[:64]},
            )
            return frozenset()
        except OSError as e:
            LOGGER.warning(
                "user group membership unavailable; treated as empty",
                extra={"usergroup": group, "error": type(e).__name__},
            )
            return frozenset()
        members = frozenset(str(u) for u in response.get("users") or [])
        with self._lock:
            self._groups[group] = (now, members)
        return members


def _mention(entry: str) -> str:
    if entry.startswith("S"):
        return f"<!subteam^{entry}>"
    return f"<@{entry}>"
