"""Commands for the service: serve, tenants, API keys."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import click

from trailseal.cli.app import cli
from trailseal.cli.common import Context, pass_context
from trailseal.ledger import rfc3339
from trailseal.service.core import Service, ServiceOptions
from trailseal.service.registry import ROLES


def _options(ctx: Context) -> ServiceOptions:
    s = ctx.settings
    return ServiceOptions(
        max_batch_events=s.max_batch_events,
        max_future_skew_s=s.max_future_skew_s,
        max_queue_entries=s.max_queue_entries,
    )


@contextmanager
def open_service(ctx: Context) -> Iterator[Service]:
    """Open (and on first use, bootstrap) the service on the data directory."""
    service, token = Service.open(
        ctx.data_dir, origin_prefix=ctx.settings.origin_prefix, options=_options(ctx)
    )
    try:
        if token:
            _print_bootstrap(token)
        yield service
    finally:
        service.close()


def _print_bootstrap(token: str) -> None:
    click.echo(
        "bootstrap operator API key (admin of tenant 'default'; shown once, store it now):",
        err=True,
    )
    click.echo(f"  {token}", err=True)


@cli.command()
@click.option("--host", help="Listen address [env TRAILSEAL_HOST; default 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Listen port [env TRAILSEAL_PORT; default 8080]."
)
@click.option(
    "--read-only",
    is_flag=True,
    help="PostgreSQL only: serve search, proofs and tiles, refuse ingest, never integrate "
    "(needs no signing keys).",
)
@pass_context
def serve(ctx: Context, host: str | None, port: int | None, read_only: bool) -> None:
    """Run the HTTP service (ingest, search, proofs, tlog-tiles) on the data directory.

    The first run creates the data directory, the tenant 'default' with its log
    'default', and prints a bootstrap operator API key once. SIGTERM or Ctrl-C stops
    accepting requests and lets in-flight batches finish before exiting.

    On a PostgreSQL store (`trailseal init --storage postgresql://...`) run as many
    nodes as you like on one database: any node accepts writes, and for each log one
    node at a time (elected through a PostgreSQL advisory lock) sequences and signs.
    If it dies, another node holding the log's signing key takes over within a second.
    """
    # The web stack loads only for `serve`, so every other command starts fast.
    import uvicorn  # noqa: PLC0415

    from trailseal.http import HttpOptions, create_app  # noqa: PLC0415
    from trailseal.http.observability import LOGGER, configure_logging  # noqa: PLC0415
    from trailseal.ingest.socket_mode import SocketModeIngestor  # noqa: PLC0415
    from trailseal.slackapp.app import AuditApp  # noqa: PLC0415

    s = ctx.settings
    configure_logging(s.log_level)
    with open_service(ctx) as service:
        service.read_only = read_only  # a reader checks without loading signing keys
        service.check_history()
        service.join_cluster(read_only=read_only)
        audit_app = AuditApp(service, s.audit_app) if s.audit_app is not None else None
        app = create_app(
            service,
            HttpOptions(
                max_body_bytes=s.max_body_bytes,
                max_batch_body_bytes=s.max_batch_body_bytes,
                rate_limit_rps=s.rate_limit_rps,
                rate_limit_burst=s.rate_limit_burst,
                slack_apps=s.slack_apps,
                hooks=s.hooks,
                audit_app=audit_app,
            ),
        )
        bind_host, bind_port = host or s.host, s.port if port is None else port
        LOGGER.info(
            "serving", extra={"host": bind_host, "port": bind_port, "data_dir": str(ctx.data_dir)}
        )
        ingestors = [
            SocketModeIngestor(
                a,
                service,
                interactive=audit_app.dispatch_socket_mode
                if audit_app is not None and audit_app.config.socket_mode == a.name
                else None,
                home_opened=audit_app.app_home_opened
                if audit_app is not None and audit_app.config.socket_mode == a.name
                else None,
            )
            for a in s.socket_mode_apps
        ]
        poller = None
        try:
            if audit_app is not None:
                audit_app.start()  # resumes unfinished reports, starts the expiry sweeper
            for ingestor in ingestors:
                ingestor.start()
            if s.slack_audit is not None and s.slack_audit.enabled:
                from trailseal.service.poller import start_audit_poller  # noqa: PLC0415

                poller = start_audit_poller(service, s.slack_audit)
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    host=bind_host,
                    port=bind_port,
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=30,
                    server_header=False,
                )
            )
            # uvicorn stops gracefully on SIGTERM, then raises it again for the handler
            # installed before it: the default one killed the process right there (status
            # -15), before the ingestors stopped and the stores closed. This one only asks
            # the server to stop, so `serve` finishes its cleanup and exits 0.
            previous = signal.signal(
                signal.SIGTERM, lambda *_: setattr(server, "should_exit", True)
            )
            try:
                server.run()
            except KeyboardInterrupt:
                pass  # Ctrl-C: uvicorn has shut down gracefully (as uvicorn.run does)
            finally:
                signal.signal(signal.SIGTERM, previous)
            if not server.started:
                raise SystemExit(3)  # uvicorn.run's STARTUP_FAILURE; uvicorn logged why
        finally:
            if poller is not None:
                poller.stop()
            for ingestor in ingestors:
                ingestor.stop()
            if audit_app is not None:
                audit_app.stop()
        LOGGER.info("stopped", extra={"data_dir": str(ctx.data_dir)})


@cli.group("tenants")
def tenants_group() -> None:
    """Create and list tenants and their logs."""


@tenants_group.command("create")
@click.argument("name")
@click.option(
    "--log", "log_name", default="audit", show_default=True, help="Name of the tenant's first log."
)
@click.option("--origin", help="Origin of the first log [default: <prefix>/<tenant>/<log>].")
@click.option(
    "--capture-content",
    is_flag=True,
    help="Keep message bodies, encrypted, in the content store (off by default).",
)
@pass_context
def tenants_create(
    ctx: Context, name: str, log_name: str, origin: str | None, capture_content: bool
) -> None:
    """Create tenant NAME with a first log."""
    with open_service(ctx) as service:
        service.create_tenant(name)
        tlog, vkey = service.create_log(name, log_name, origin, capture_content)
    click.echo(f"created tenant {name!r} with log {tlog.name!r}")
    click.echo(f"verifier key:  {vkey}")


@tenants_group.command("add-log")
@click.argument("tenant")
@click.argument("log_name", metavar="LOG")
@click.option("--origin", help="The log's origin [default: <prefix>/<tenant>/<log>].")
@click.option(
    "--capture-content", is_flag=True, help="Keep message bodies, encrypted, in the content store."
)
@pass_context
def tenants_add_log(
    ctx: Context, tenant: str, log_name: str, origin: str | None, capture_content: bool
) -> None:
    """Add LOG to TENANT."""
    with open_service(ctx) as service:
        tlog, vkey = service.create_log(tenant, log_name, origin, capture_content)
    click.echo(f"created log {tlog.name!r} for tenant {tenant!r}")
    click.echo(f"verifier key:  {vkey}")


@tenants_group.command("list")
@pass_context
def tenants_list(ctx: Context) -> None:
    """List tenants with their logs."""
    with open_service(ctx) as service:
        for tlog in service.registry.logs():
            size = service.ledger(tlog).tree_size()
            capture = " content-capture" if tlog.capture_content else ""
            click.echo(f"{tlog.tenant}\t{tlog.name}\tsize {size}{capture}")


@cli.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys (stored hashed; shown once)."""


@keys_group.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the key may do.")
@click.option("--description", default="", help="A note for whoever lists keys later.")
@pass_context
def keys_create(ctx: Context, tenant: str, role: str, description: str) -> None:
    """Create an API key and print its token once."""
    with open_service(ctx) as service:
        key_id, token = service.registry.create_key(
            tenant, role, rfc3339(service.clock()), description=description
        )
    click.echo(f"key id: {key_id}  tenant: {tenant}  role: {role}", err=True)
    click.echo(token)


@keys_group.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
@pass_context
def keys_list(ctx: Context, tenant: str | None) -> None:
    """List API keys (never their secrets)."""
    with open_service(ctx) as service:
        for k in service.registry.keys(tenant):
            state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
            op = " operator" if k.operator else ""
            click.echo(f"{k.key_id}\t{k.tenant}\t{k.role}{op}\t{state}\t{k.description}")


@keys_group.command("revoke")
@click.argument("key_id")
@pass_context
def keys_revoke(ctx: Context, key_id: str) -> None:
    """Revoke API key KEY_ID; a running server refuses it within 5 seconds."""
    with open_service(ctx) as service:
        service.registry.revoke_key(key_id, rfc3339(service.clock()))
    click.echo(f"revoked {key_id}")
