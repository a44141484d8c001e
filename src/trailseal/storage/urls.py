"""Storage URLs: one string names a store, whichever engine holds it.

- ``sqlite:///abs/path/trailseal.db``, ``sqlite:relative.db`` or a plain file path: SQLite.
- ``postgresql://user[:password]@host[:port]/database[?schema=name&...]``: PostgreSQL; the
  ``schema`` parameter picks the PostgreSQL schema (``trailseal`` by default) and every
  other parameter goes to libpq unchanged. ``postgres://`` is accepted too.

:func:`redact` is what may be printed or logged: the password is never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from trailseal.errors import ConfigError
from trailseal.storage.base import Storage

DEFAULT_SCHEMA = "trailseal"


@dataclass(frozen=True, slots=True)
class StorageUrl:
    """A parsed storage URL."""

    engine: str  # "sqlite" | "postgresql"
    path: Path | None = None
    dsn: str | None = None
    schema: str = DEFAULT_SCHEMA

    def __str__(self) -> str:
        if self.engine == "sqlite":
            return f"sqlite:{self.path}"
        return redact(self.dsn or "") + (
            "" if self.schema == DEFAULT_SCHEMA else f" (schema {self.schema})"
        )


def parse(url: str, *, base: Path | None = None) -> StorageUrl:
    """Parse a storage URL; relative SQLite paths are taken relative to ``base``."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [v for k, v in params if k == "schema"]
        rest = [(k, v) for k, v in params if k != "schema"]
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        return StorageUrl("postgresql", dsn=dsn, schema=schemas[-1] if schemas else DEFAULT_SCHEMA)
    if "://" in url and not url.startswith("sqlite://"):
        raise ConfigError(
            f"storage URL {redact(url)!r} is neither sqlite: nor postgresql://; "
            "write sqlite:///path/to/trailseal.db or postgresql://user@host/db?schema=trailseal"
        )
    raw = (
        url.removeprefix("sqlite://").removeprefix("sqlite:") if url.startswith("sqlite:") else url
    )
    if not raw:
        raise ConfigError("a sqlite: storage URL needs a file path")
    path = Path(raw)
    if not path.is_absolute() and base is not None:
        path = base / path
    return StorageUrl("sqlite", path=path)


SECRET_PARAMS = frozenset({"password", "sslpassword"})
"""libpq URL parameters that carry secrets."""


def has_password(url: str) -> bool:
    """Whether a URL carries a password, in its user part or as a parameter."""
    if "://" not in url:
        return False
    rest = url.split("://", 1)[1]
    netloc = rest.split("/", 1)[0]
    query = rest.split("?", 1)[1] if "?" in rest else ""
    user_part = netloc.rsplit("@", 1)[0] if "@" in netloc else ""
    return ":" in user_part or any(
        k in SECRET_PARAMS for k, _ in parse_qsl(query, keep_blank_values=True)
    )


def redact(url: str) -> str:
    """The URL with any password (user part or parameter) replaced by ``***``."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:  # also for multi-host and IPv6 URLs, which urlsplit cannot parse
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    path, qsep, query = tail.partition("?")
    if qsep:
        params = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k in SECRET_PARAMS else v) for k, v in params], safe="*")
    return f"{scheme}://{netloc}{sep}{path}{qsep}{query}"


def open_storage(
    url: str | StorageUrl, *, migrate: bool = True, base: Path | None = None
) -> Storage:
    """Open the store a URL names. PostgreSQL migrations are applied when ``migrate``;
    otherwise a store whose schema is behind this version is refused (run ``trailseal
    migrate-db``)."""
    parsed = url if isinstance(url, StorageUrl) else parse(url, base=base)
    if parsed.engine == "sqlite":
        from trailseal.storage.sqlite import SqliteStorage  # noqa: PLC0415

        assert parsed.path is not None
        return SqliteStorage(parsed.path)
    try:
        from trailseal.storage.postgres import PostgresStorage  # noqa: PLC0415 (optional extra)
    except ImportError as e:  # pragma: no cover - psycopg is a dependency of the package
        raise ConfigError(
            "PostgreSQL storage needs psycopg: pip install 'trailseal[postgres]'"
        ) from e
    assert parsed.dsn is not None
    return PostgresStorage(parsed.dsn, schema=parsed.schema, migrate=migrate)


__all__ = ["DEFAULT_SCHEMA", "StorageUrl", "has_password", "open_storage", "parse", "redact"]
