"""Commands for the Slack integrations: ``slack poll`` reads the Audit Logs API,
``slack doctor`` checks the Slack configuration against Slack itself."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import httpx

from trailseal import __version__
from trailseal.cli.app import cli
from trailseal.cli.common import EXIT_CONFIG, Context, pass_context
from trailseal.cli.service_commands import open_service
from trailseal.datadir import CONFIG_FILE
from trailseal.errors import ConfigError, Error
from trailseal.ingest.slack_audit import LOGS_PATH
from trailseal.ingest.slack_audit_poller import HttpxFetch, PollSummary, parse_backfill
from trailseal.ingest.webhooks import check_config
from trailseal.service.core import Service
from trailseal.settings import (
    AuditAppConfig,
    Secret,
    SlackApp,
    SlackAuditConfig,
    SocketModeApp,
    WebhookConfig,
)


@cli.group("slack")
def slack_group() -> None:
    """Slack integrations: the Enterprise Audit Logs API poller and a configuration check."""


def _describe(summary: PollSummary) -> str:
    mark = (
        datetime.fromtimestamp(summary.watermark, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if summary.watermark is not None
        else "none yet"
    )
    resumed = " (resumed an interrupted cycle)" if summary.resumed else ""
    return (
        f"polled {summary.pages} pages{resumed}: {summary.entries} entries, "
        f"{summary.appended} appended, {summary.duplicates} duplicates, "
        f"{summary.conflicts} conflicts; watermark {mark}"
    )


@slack_group.command("poll")
@click.option("--once", is_flag=True, help="Run one cycle and exit (default: poll until Ctrl-C).")
@pass_context
def slack_poll(ctx: Context, once: bool) -> None:
    """Read the Slack Audit Logs API ([slack.audit] in trailseal.toml) into its log.

    Each cycle reads from a little before the newest entry already read (overlap_s) up
    to now, page by page; progress is saved after every page, so an interrupted run
    continues where it stopped and entries are never stored twice. `serve` runs the same
    poller in the background when [slack.audit] is enabled.
    """
    config = ctx.settings.slack_audit
    if config is None:
        raise ConfigError(
            f"no [slack.audit] table in {ctx.data_dir / 'trailseal.toml'}; add one with "
            "token_env (or token_file) naming an org-owner token with auditlogs:read"
        )
    # Imported here so that commands which do not poll never load the poller's wiring.
    from trailseal.service.poller import BackgroundPoller, build_audit_poller  # noqa: PLC0415

    fetch = HttpxFetch(config.token, config.base_url)
    try:
        with open_service(ctx) as service:
            if once:
                summary = build_audit_poller(service, config, fetch=fetch).poll_once()
                click.echo(_describe(summary))
                return
            from trailseal.http.observability import configure_logging  # noqa: PLC0415

            configure_logging(ctx.settings.log_level)
            runner = BackgroundPoller(
                lambda sleep: build_audit_poller(service, config, fetch=fetch, sleep=sleep),
                config.interval_s,
            )
            click.echo(f"polling every {config.interval_s:g} s; Ctrl-C stops", err=True)
            try:
                runner.run()
            except KeyboardInterrupt:
                click.echo("stopped", err=True)
    finally:
        fetch.close()


# -- slack doctor ------------------------------------------------------------------------------

_SDK_LOGGER = logging.getLogger("trailseal.slack_doctor.sdk")
"""slack_sdk's logger for the doctor, pinned at INFO: below it would print the token."""
_SLACK_SECRET = re.compile(r"^[0-9a-f]{32}$")
_INVALID_TOKEN = {
    "invalid_auth",
    "not_authed",
    "invalid_authentication",
    "account_inactive",
    "token_revoked",
    "token_expired",
}
_NEEDS_GRID = {"feature_not_enabled", "team_not_authorized", "not_an_enterprise"}
_ORG_OWNER_FIX = (
    "use an org-owner user token (xoxp-) installed at the organization level, from an app "
    "with the auditlogs:read user scope"
)
_APP_LEVEL_FIX = "use an app-level token xapp- with connections:write"


def fingerprint(secret: Secret) -> str:
    """What the doctor shows of a secret: its last 4 characters, or nothing if it is short."""
    value = secret.reveal()
    return f"...{value[-4:]}" if len(value) >= 16 else "(too short to show any of it)"


@dataclass
class _Report:
    """The doctor's lines, printed as they come; ``failures`` decides the exit status."""

    ok: int = 0
    warnings: int = 0
    failures: int = 0

    def _line(self, mark: str, text: str, fix: str | None) -> None:
        click.echo(f"{mark:<4} {text}")
        if fix:
            click.echo(f"     fix: {fix}")

    def good(self, text: str) -> None:
        self.ok += 1
        self._line("OK", text, None)

    def warn(self, text: str, fix: str | None = None) -> None:
        self.warnings += 1
        self._line("WARN", text, fix)

    def fail(self, text: str, fix: str | None = None) -> None:
        self.failures += 1
        self._line("FAIL", text, fix)


def _check_log(report: _Report, service: Service | None, what: str, tenant: str, log: str) -> None:
    if service is None:
        return
    try:
        service.registry.log(tenant, log)
    except Error as e:
        fix = (
            f"trailseal tenants add-log {tenant} {log}"
            if service.registry.tenant_exists(tenant)
            else f"trailseal tenants create {tenant} --log {log}"
        )
        report.fail(f"{what}: {e}", f"create it ({fix}) or change tenant/log in {CONFIG_FILE}")
    else:
        report.good(f"{what}: tenant {tenant!r} has log {log!r}")


def _slack_error(body: Any) -> tuple[str, str]:
    """Slack's ``error`` code and its ``needed`` scope (either may be empty)."""
    if not isinstance(body, dict):
        return "", ""
    needed = body.get("needed")
    return str(body.get("error") or ""), needed if isinstance(needed, str) else ""


def _check_audit(report: _Report, config: SlackAuditConfig, timeout_s: float) -> None:
    what = "[slack.audit]"
    base = config.base_url.rstrip("/")
    token = config.token.reveal()
    shown = fingerprint(config.token)
    if not token.startswith("xoxp-"):
        report.warn(
            f"{what}: the token ({shown}) does not start with xoxp-; the Audit Logs API "
            "takes only user tokens",
            _ORG_OWNER_FIX,
        )
    try:
        parse_backfill(config.backfill_from)
    except ConfigError as e:
        report.fail(f"{what}: {e}")
    # /audit/v1/schemas and /actions answer without authentication, so they prove
    # nothing about the token: ask for one entry of the logs instead.
    try:
        with httpx.Client(timeout=timeout_s) as http:
            response = http.get(
                base + LOGS_PATH,
                params={"limit": 1},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json",
                    "User-Agent": f"trailseal/{__version__}",
                },
            )
    except httpx.HTTPError as e:
        report.fail(
            f"{what}: cannot reach Slack at {base}: {e or type(e).__name__}",
            "check base_url, DNS, the proxy and the firewall (HTTPS to api.slack.com)",
        )
        return
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    status = response.status_code
    error, needed = _slack_error(body)
    if 200 <= status < 300 and isinstance(body, dict) and body.get("ok") is not False:
        report.good(
            f"{what}: the Audit Logs API at {base} accepts the token ({shown}); polling every "
            f"{config.interval_s:g} s into tenant {config.tenant!r} log {config.log!r}"
            + ("" if config.enabled else " (enabled = false: `serve` does not poll)")
        )
        return
    where = f"{what}: Slack refused the token ({shown}): {error or 'no error code'} (HTTP {status})"
    if error in _INVALID_TOKEN:
        report.fail(f"{where}: the token is invalid or revoked", _ORG_OWNER_FIX)
    elif error == "missing_scope":
        report.fail(
            f"{where}: the token lacks the scope {needed or 'auditlogs:read'}",
            "add the auditlogs:read user scope to the app, reinstall it on the organization "
            "and use the new token",
        )
    elif error == "not_allowed_token_type":
        report.fail(f"{where}: wrong kind of token", _ORG_OWNER_FIX)
    elif error in _NEEDS_GRID:
        report.fail(
            f"{where}: the Audit Logs API needs Slack Enterprise Grid",
            "without Enterprise Grid remove [slack.audit]; the Events API app still works",
        )
    elif status == 429:
        report.warn(
            f"{what}: Slack rate limited the check (HTTP 429); the token was not confirmed",
            "run the doctor again in a minute (the limit is shared by the whole organization)",
        )
    elif status >= 500:
        report.fail(
            f"{what}: Slack at {base} answered HTTP {status}; the token was not confirmed",
            "try again later (status.slack.com)",
        )
    else:
        report.fail(where, _ORG_OWNER_FIX if status in (401, 403) else "check base_url")


def _check_socket_mode(report: _Report, app: SocketModeApp, timeout_s: float) -> None:
    # slack_sdk loads only when a Socket Mode app is configured.
    from slack_sdk.errors import SlackApiError  # noqa: PLC0415
    from slack_sdk.web import WebClient  # noqa: PLC0415

    what = f"[[slack.socket_mode]] {app.name!r}"
    shown = fingerprint(app.app_token)
    if not app.app_token.reveal().startswith("xapp-"):
        report.warn(f"{what}: the app token ({shown}) does not start with xapp-", _APP_LEVEL_FIX)
    _SDK_LOGGER.setLevel(logging.INFO)
    web = WebClient(base_url=app.base_url, timeout=max(1, round(timeout_s)), logger=_SDK_LOGGER)
    try:
        # Asks for a WebSocket URL and does not connect to it (the URL's ticket is a
        # credential: it is neither used nor shown).
        web.apps_connections_open(app_token=app.app_token.reveal())
    except SlackApiError as e:
        error, needed = _slack_error(e.response.data if e.response is not None else None)
        where = f"{what}: apps.connections.open refused the app token ({shown}): {error}"
        if error in _INVALID_TOKEN:
            report.fail(f"{where}: the token is invalid or revoked", _APP_LEVEL_FIX)
        elif error in ("not_allowed_token_type", "missing_scope"):
            scope = f" (needed: {needed})" if needed else ""
            report.fail(f"{where}{scope}", _APP_LEVEL_FIX)
        else:
            report.fail(
                where,
                f"{_APP_LEVEL_FIX}, and turn Socket Mode on in the app's settings",
            )
        return
    except OSError as e:
        reason = getattr(e, "reason", None) or e.strerror or type(e).__name__
        report.fail(
            f"{what}: cannot reach Slack at {app.base_url}: {reason}",
            "check base_url, DNS, the proxy and the firewall (HTTPS to slack.com)",
        )
        return
    report.good(
        f"{what}: apps.connections.open accepts the app token ({shown}); Socket Mode is on "
        "(the WebSocket was not opened)"
    )


def _check_slack_app(report: _Report, service: Service, app: SlackApp) -> None:
    what = f"[[slack.apps]] {app.name!r}"
    for label, secret in zip(
        ("signing secret", "previous signing secret"), app.signing_secrets, strict=False
    ):
        value = secret.reveal()
        if not value:
            report.fail(f"{what}: the {label} is empty", "set it to the app's Signing Secret")
        elif _SLACK_SECRET.match(value):
            report.good(f"{what}: {label} present ({fingerprint(secret)}), 32 hex characters")
        else:
            report.warn(
                f"{what}: the {label} ({fingerprint(secret)}) is not 32 lowercase hex "
                "characters, unlike Slack's signing secrets",
                "copy Basic Information → App Credentials → Signing Secret (not the "
                "Client Secret, the Verification Token or a token)",
            )
    _check_log(report, service, what, app.tenant, app.log)
    if app.path.startswith("/"):
        report.good(
            f"{what}: answers POST {app.path}; its Event Subscriptions Request URL is "
            f"https://<your public host>{app.path}"
        )
    else:
        report.fail(f"{what}: path {app.path!r} does not start with /", "e.g. /slack/events")


def _check_hook(report: _Report, service: Service, hook: WebhookConfig) -> None:
    what = f"[[hooks]] {hook.name!r}"
    try:
        check_config([hook])
    except ConfigError as e:
        report.fail(f"{what}: {e}", f"fix [[hooks]] name = {hook.name!r} in {CONFIG_FILE}")
    else:
        report.good(
            f"{what}: {hook.scheme} signatures, {len(hook.mapping)} mapped fields; "
            f"answers POST /hooks/{hook.name}"
        )
    _check_log(report, service, what, hook.tenant, hook.log)


def _doctor(ctx: Context, report: _Report, timeout_s: float) -> None:
    config_file = ctx.data_dir / CONFIG_FILE
    s = ctx.settings
    if not config_file.exists():
        report.fail(
            f"no {config_file}: nothing is configured",
            f"run `trailseal --data-dir {ctx.data_dir} serve` once (or `init`), then add "
            "[[slack.apps]], [slack.audit], [[slack.socket_mode]] or [[hooks]] to it",
        )
        return
    # Reaching this line means settings.load read the file: a TOML error, an unknown
    # key or an unset secret variable stops every command, this one included, earlier.
    count = len(s.slack_apps) + len(s.socket_mode_apps) + len(s.hooks) + bool(s.slack_audit)
    count += bool(s.audit_app)
    summary = (
        f"{len(s.slack_apps)} Events API apps, {len(s.socket_mode_apps)} Socket Mode apps, "
        f"{'an' if s.slack_audit else 'no'} Audit Logs poller, {len(s.hooks)} webhooks, "
        f"{'the' if s.audit_app else 'no'} /audit app"
    )
    if count == 0:
        report.fail(
            f"{config_file} parses but configures nothing to check ({summary})",
            "add [[slack.apps]], [slack.audit], [[slack.socket_mode]] or [[hooks]] "
            "(docs/slack/guide.md)",
        )
        return
    report.good(f"{config_file} parses: {summary}")
    with open_service(ctx) as service:
        for app in s.slack_apps:
            _check_slack_app(report, service, app)
        if s.slack_audit is not None:
            _check_log(report, service, "[slack.audit]", s.slack_audit.tenant, s.slack_audit.log)
            _check_audit(report, s.slack_audit, timeout_s)
        for sm in s.socket_mode_apps:
            _check_log(report, service, f"[[slack.socket_mode]] {sm.name!r}", sm.tenant, sm.log)
            _check_socket_mode(report, sm, timeout_s)
        for hook in s.hooks:
            _check_hook(report, service, hook)
        if s.audit_app is not None:
            what = "[slack.audit_app]"
            _check_log(report, service, what, s.audit_app.tenant, s.audit_app.log)
            _check_audit_app(report, s.audit_app, timeout_s)


def _check_audit_app(report: _Report, config: AuditAppConfig, timeout_s: float) -> None:
    # slack_sdk and the app load only when the /audit app is configured.
    from trailseal.slackapp.checks import check_audit_app  # noqa: PLC0415

    for finding in check_audit_app(config, timeout_s):
        if finding.level == "ok":
            report.good(finding.text)
        elif finding.level == "warn":
            report.warn(finding.text, finding.fix)
        else:
            report.fail(finding.text, finding.fix)


@slack_group.command("doctor")
@click.option(
    "--timeout",
    "timeout_s",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 300),
    help="Seconds to wait for each answer from Slack.",
)
@pass_context
def slack_doctor(ctx: Context, timeout_s: float) -> None:
    """Check the Slack configuration in trailseal.toml against Slack, line by line.

    For each [[slack.apps]]: the signing secret, the tenant and log, the route. For
    [slack.audit]: asks the Audit Logs API for one entry with the token. For each
    [[slack.socket_mode]]: calls apps.connections.open with the app token (without
    connecting). For each [[hooks]]: the scheme, secret and mapping, the tenant and log.
    For [slack.audit_app]: the bot token (auth.test), its scopes, the approvers' channel
    and the user groups named in the roles.
    Tokens and secrets are shown only by their last 4 characters. Exits 0 when nothing
    failed (warnings allowed), 8 otherwise.
    """
    report = _Report()
    _doctor(ctx, report, timeout_s)
    click.echo(f"{report.ok} OK, {report.warnings} warnings, {report.failures} failed")
    if report.failures:
        raise click.exceptions.Exit(EXIT_CONFIG)
