"""What ``trailseal slack doctor`` checks for ``[slack.audit_app]``, against Slack.

Each finding is a level (ok, warn, fail), a line of text and, when something is wrong,
what to do. Tokens show only their last 4 characters; nothing else of them is printed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from trailseal.settings import AuditAppConfig

NEEDED_SCOPES = (
    "commands",
    "chat:write",
    "im:write",
    "files:write",
    "usergroups:read",
    "users:read",
    "team:read",
)
"""Bot scopes the app uses (docs/slack/audit-app.md says what each is for)."""

_SDK_LOGGER = logging.getLogger("trailseal.slackapp.doctor")
_REINSTALL = "add them under OAuth & Permissions (or from docs/slack/manifest.yaml), reinstall"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's report."""

    level: str
    """``ok``, ``warn`` or ``fail``."""
    text: str
    fix: str | None = None


def _code(e: SlackApiError) -> str:
    return str(e.response.get("error", "unknown")) if e.response is not None else "unknown"


def check_audit_app(config: AuditAppConfig, timeout_s: float) -> list[Finding]:
    """Check the bot token, its scopes, the approvers' channel and the user groups."""
    what = "[slack.audit_app]"
    out: list[Finding] = []
    token = config.bot_token.reveal()
    shown = f"...{token[-4:]}" if len(token) >= 16 else "(too short to show any of it)"
    if not token.startswith("xoxb-"):
        out.append(Finding("warn", f"{what}: the bot token ({shown}) does not start with xoxb-"))
    if not config.public_url.startswith("https://"):
        out.append(
            Finding(
                "warn",
                f"{what}: public_url {config.public_url!r} is not https://; download links "
                "carry their token in the URL",
                "serve the app behind TLS and set public_url to its https:// name",
            )
        )
    _SDK_LOGGER.setLevel(logging.INFO)  # never DEBUG: slack_sdk would log the token
    web = WebClient(
        token=token, base_url=config.base_url, timeout=max(1, round(timeout_s)), logger=_SDK_LOGGER
    )
    try:
        auth = web.auth_test()
    except SlackApiError as e:
        out.append(
            Finding(
                "fail",
                f"{what}: Slack refused the bot token ({shown}): {_code(e)}",
                "copy the Bot User OAuth Token (xoxb-) from OAuth & Permissions",
            )
        )
        return out
    except OSError as e:
        out.append(Finding("fail", f"{what}: cannot reach Slack at {config.base_url}: {e}"))
        return out
    out.append(Finding("ok", f"{what}: the bot token ({shown}) is valid for {auth.get('team')}"))
    granted = str(auth.headers.get("x-oauth-scopes", "") or "")
    if not granted:
        out.append(
            Finding("warn", f"{what}: Slack did not say which scopes the token has; not checked")
        )
    else:
        missing = [s for s in NEEDED_SCOPES if s not in {g.strip() for g in granted.split(",")}]
        if missing:
            out.append(Finding("fail", f"{what}: the token lacks {', '.join(missing)}", _REINSTALL))
        else:
            out.append(Finding("ok", f"{what}: the token has every scope the app needs"))
    out.append(_check_channel(web, config, what))
    for group in (g for g in (*config.roles.requesters, *config.roles.approvers) if g[0] == "S"):
        try:
            members = web.usergroups_users_list(usergroup=group).get("users") or []
        except SlackApiError as e:
            out.append(
                Finding(
                    "fail",
                    f"{what}: user group {group} cannot be read: {_code(e)}",
                    "check the group id and the usergroups:read scope",
                )
            )
        else:
            out.append(Finding("ok", f"{what}: user group {group} has {len(members)} members"))
    return out


def _check_channel(web: WebClient, config: AuditAppConfig, what: str) -> Finding:
    channel = config.approvers_channel
    try:
        info = web.conversations_info(channel=channel).get("channel") or {}
    except SlackApiError as e:
        return Finding(
            "fail",
            f"{what}: approvers_channel {channel} cannot be read: {_code(e)}",
            "check the id, and invite the app to the channel (/invite @trailseal)",
        )
    if info.get("is_member") is False:
        return Finding(
            "fail",
            f"{what}: the app is not in approvers_channel {channel}",
            "invite it: /invite @trailseal in that channel",
        )
    return Finding("ok", f"{what}: approvers_channel {channel} is readable")
