"""Commands for the Slack integrations: ``slack poll`` reads the Audit Logs API."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from trailseal.cli.app import cli
from trailseal.cli.common import Context, pass_context
from trailseal.cli.service_commands import open_service
from trailseal.errors import ConfigError
from trailseal.ingest.slack_audit import HttpxFetch, PollSummary


@cli.group("slack")
def slack_group() -> None:
    """Slack integrations: the Enterprise Audit Logs API poller."""


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
