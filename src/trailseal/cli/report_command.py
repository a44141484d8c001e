"""``trailseal audit-report``: the /audit app's report, from the command line."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from trailseal.cli.app import cli
from trailseal.cli.common import Context, pass_context, progress
from trailseal.cli.service_commands import open_service
from trailseal.errors import FormatError
from trailseal.ledger import rfc3339
from trailseal.service.registry import Principal
from trailseal.service.search import normalize_time
from trailseal.settings import secret_from_env
from trailseal.slackapp.model import AUDIT_KINDS, AuditRequest, AuditScope


def _time(value: str, option: str) -> str:
    try:
        normalize_time(value)
    except FormatError as e:
        raise click.BadParameter(f"{e}; use e.g. 2025-01-31T00:00:00Z", param_hint=option) from e
    return value


@cli.command("audit-report")
@click.option("--kind", type=click.Choice(AUDIT_KINDS), required=True, help="What to audit.")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="Channel id (kind channel; narrows the others); repeatable.",
)
@click.option(
    "--user", "users", multiple=True, help="User id (kind user; narrows the others); repeatable."
)
@click.option(
    "--app", "apps", multiple=True, help="App id (kind app; narrows the others); repeatable."
)
@click.option("--team", help="Team id: the audited team (kind team) and the home organization.")
@click.option("--query", help="Free text over the log's non-content fields (kind query).")
@click.option("--since", required=True, help="Start of the time range (RFC 3339, inclusive).")
@click.option("--until", required=True, help="End of the time range (RFC 3339, exclusive).")
@click.option(
    "--include-external", is_flag=True, help="Include Slack Connect members of other orgs."
)
@click.option("--purpose", required=True, help="Why the report is needed (recorded in it).")
@click.option("--requester", default="cli", show_default=True, help="Who asks (recorded).")
@click.option("--tenant", default="default", show_default=True, help="Tenant of the log.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the report's files (created 0700).",
)
@click.option(
    "--slack-token-env",
    metavar="NAME",
    help="Environment variable holding a Slack token to enrich the report (names, "
    "channels, Slack Connect members, apps). Without it the report uses the log alone.",
)
@click.option(
    "--slack-base-url",
    default="https://slack.com/api/",
    show_default=True,
    help="Slack Web API base URL.",
)
@pass_context
def audit_report(
    ctx: Context,
    kind: str,
    channels: tuple[str, ...],
    users: tuple[str, ...],
    apps: tuple[str, ...],
    team: str | None,
    query: str | None,
    since: str,
    until: str,
    include_external: bool,
    purpose: str,
    requester: str,
    tenant: str,
    out_dir: Path,
    slack_token_env: str | None,
    slack_base_url: str,
) -> None:
    """Write an audit report (CSV, JSON, HTML summary, evidence bundle) from the log.

    The same report the /audit Slack app delivers: every log event in scope, one row
    each with its index and leaf hash, and an evidence bundle that `trailseal
    verify-bundle` checks offline. The log is --log of tenant --tenant (default: the
    default log).
    """
    # Imported here: slack_sdk loads only for this command.
    from slack_sdk.web import WebClient  # noqa: PLC0415

    from trailseal.slackapp.reports import build_report  # noqa: PLC0415

    if kind == "team" and not team:
        raise click.UsageError("--kind team needs --team")
    if not purpose.strip():
        raise click.BadParameter("state why the report is needed", param_hint="--purpose")
    scope = AuditScope(
        kind=next(k for k in AUDIT_KINDS if k == kind),  # click.Choice checked it
        start=_time(since, "--since"),
        end=_time(until, "--until"),
        team_id=team,
        channels=channels,
        users=users,
        apps=apps,
        query=query,
        include_external=include_external,
    )
    web = None
    if slack_token_env:
        token = secret_from_env(slack_token_env)
        web = WebClient(token=token.reveal(), base_url=slack_base_url, timeout=30)
    with open_service(ctx) as service:
        now = rfc3339(service.clock())
        request = AuditRequest(
            id="cli-" + secrets.token_hex(6),
            requester=requester,
            team_id=team or "",
            scope=scope,
            purpose=purpose,
            requested_at=now,
            expires_at=now,
        )
        tlog = service.registry.log(tenant, ctx.log or "default")
        # Reading tenant data is recorded in the log before the data is read, as the
        # service does for every read (the report then covers this event's checkpoint).
        operator = Principal("trailseal:cli", tenant, "admin", True, internal=True)
        service.audit_access(
            operator, tlog, "report", purpose, {"request": request.id, "scope": scope.to_json()}
        )
        size = service.ledger(tlog).tree_size()
        with progress(size, "reading the log") as bar:
            files = build_report(service, tlog, request, out_dir, web=web, progress=bar.update)
    click.echo(
        f"{files.rows} rows; {files.log_entries} log entries proven into tree size "
        f"{files.tree_size}"
    )
    for path in (files.csv, files.json, files.summary_html, files.bundle):
        click.echo(f"{path}  sha256:{files.sha256[path.name]}")
    click.echo(
        f"check the evidence with: trailseal verify-bundle {files.bundle} "
        "--key '<the log's verifier key>'"
    )
