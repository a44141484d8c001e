"""Commands for the database behind a data directory: migrate-db."""

from __future__ import annotations

import tomllib

import click

from trailseal.cli.app import cli
from trailseal.cli.common import Context, pass_context
from trailseal.datadir import CONFIG_FILE, storage_url
from trailseal.errors import ConfigError, StorageError
from trailseal.service.schema import Migrated, grant_postgres, migrate_postgres
from trailseal.storage.urls import StorageUrl, parse


def _url(ctx: Context, given: str | None) -> StorageUrl:
    if given:
        return parse(given)
    config = ctx.data_dir / CONFIG_FILE
    if not config.exists():
        raise ConfigError(
            f"{ctx.data_dir} is not a trailseal data directory; pass --storage URL or --data-dir"
        )
    try:
        table = tomllib.loads(config.read_text()).get("storage", {})
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise ConfigError(f"cannot read {config}: {e}") from e
    return storage_url(ctx.data_dir, table)


@cli.command("migrate-db")
@click.option(
    "--storage",
    "given",
    metavar="URL",
    help="The store to migrate, e.g. postgresql://owner@db:5432/trailseal?schema=trailseal "
    "[default: the data directory's].",
)
@click.option(
    "--grant",
    "grant_role",
    metavar="ROLE",
    help="Afterwards let ROLE (created NOLOGIN if missing) SELECT and INSERT, and nothing "
    "more on history: the role `serve` should connect as.",
)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if migrations are pending.")
@pass_context
def migrate_db(ctx: Context, given: str | None, grant_role: str | None, check: bool) -> None:
    """Create or upgrade the PostgreSQL schema (run as the role that owns it).

    `serve` never changes the schema: after upgrading trailseal, run this once, as the
    owner role, before starting the new version on any node. Safe to run from several
    places at once (an advisory lock serializes it) and to run again (it applies only
    what is missing). SQLite stores need no migration step.

    \b
    Example:
      PGPASSWORD=... trailseal migrate-db --storage \\
          'postgresql://trailseal_owner@db:5432/audit?schema=trailseal' --grant trailseal_svc
    """
    url = _url(ctx, given)
    if url.engine != "postgresql":
        click.echo(f"{url}: SQLite stores are created and upgraded when opened; nothing to do")
        return
    if check:
        # Opening without migrating refuses a schema behind this version, naming it.
        from trailseal.service.registry_postgres import (  # noqa: PLC0415 (optional extra)
            REGISTRY_SCHEMA_VERSION,
            PostgresRegistryDatabase,
        )
        from trailseal.storage.postgres import (  # noqa: PLC0415
            SCHEMA_VERSION,
            PostgresStorage,
        )

        assert url.dsn is not None
        try:
            PostgresStorage(url.dsn, schema=url.schema, migrate=False).close()
            PostgresRegistryDatabase(url.dsn, schema=url.schema, migrate=False).close()
        except StorageError as e:
            click.echo(f"{url}: {e}")
            raise click.exceptions.Exit(1) from e
        click.echo(
            f"{url}: up to date (log schema version {SCHEMA_VERSION}, "
            f"registry version {REGISTRY_SCHEMA_VERSION})"
        )
        return
    echo_migrated(url, migrate_postgres(url))
    if grant_role:
        grant_postgres(url, grant_role)
        click.echo(
            f"granted {grant_role!r} SELECT and INSERT on schema {url.schema!r}; UPDATE only "
            "on the work queue, key revocation and poller state; DELETE only on the work queue"
        )


def echo_migrated(url: StorageUrl, done: Migrated) -> None:
    """Say what a migration run applied."""
    for track, applied, version in (
        ("log", done.storage, done.storage_version),
        ("registry", done.registry, done.registry_version),
    ):
        if applied:
            click.echo(
                f"{url}: applied {track} migrations {', '.join(map(str, applied))}; "
                f"now at version {version}"
            )
        else:
            click.echo(f"{url}: {track} schema was already at version {version}")
