"""Creating and upgrading a PostgreSQL deployment's schema: the ledger's tables and the
service registry's, each on its own migration track (``trailseal init --storage`` and
``trailseal migrate-db`` run this as the schema's owner; ``serve`` never does)."""

from __future__ import annotations

from dataclasses import dataclass

from trailseal.storage.urls import StorageUrl


@dataclass(frozen=True, slots=True)
class Migrated:
    """What one run applied, per track, and the versions the schema is now at."""

    storage: list[int]
    registry: list[int]
    storage_version: int
    registry_version: int


def migrate_postgres(url: StorageUrl) -> Migrated:
    """Apply every missing migration of both tracks (safe to run concurrently)."""
    # PostgreSQL is an optional extra: imported only for a PostgreSQL URL.
    from trailseal.service.registry_postgres import (  # noqa: PLC0415
        REGISTRY_SCHEMA_VERSION,
        PostgresRegistryDatabase,
    )
    from trailseal.storage.postgres import SCHEMA_VERSION, PostgresStorage  # noqa: PLC0415

    assert url.dsn is not None
    storage = PostgresStorage(url.dsn, schema=url.schema, migrate=True)
    storage.close()
    registry = PostgresRegistryDatabase(url.dsn, schema=url.schema, migrate=True)
    registry.close()
    return Migrated(
        storage.applied_now, registry.applied_now, SCHEMA_VERSION, REGISTRY_SCHEMA_VERSION
    )


def grant_postgres(url: StorageUrl, role: str) -> None:
    """Let ``role`` use the ledger (append and read) and the registry (what it updates)."""
    from trailseal.service.registry_postgres import grant_registry_role  # noqa: PLC0415
    from trailseal.storage.postgres import grant_service_role  # noqa: PLC0415

    assert url.dsn is not None
    # The ledger's grant covers every table; the registry's then narrows its own.
    grant_service_role(url.dsn, role, schema=url.schema)
    grant_registry_role(url.dsn, role, schema=url.schema)


__all__ = ["Migrated", "grant_postgres", "migrate_postgres"]
