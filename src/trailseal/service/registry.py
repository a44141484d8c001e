"""Tenants, their logs, API keys, the encrypted content store and poller state; the
/audit app's public download-link keys; and, for nodes sharing one store, report files.

This database is the service's own, beside the ledger's: unlike the ledger it is
mutable (a key can be revoked), and nothing in it is needed to verify a log. It lives
where the ledger does (:func:`open_registry`): in SQLite, the file ``service.db`` of the
data directory; in PostgreSQL, tables beside the ledger's in the same schema
(:mod:`trailseal.service.registry_postgres`), shared by every node. :class:`Registry`
holds the logic once and speaks to either through a :class:`RegistryDatabase`, a thin
layer that runs SQL and maps the engine's errors to ours.

API keys read ``tsk_<key id>_<secret>``; only SHA-256 of the secret is stored and the
comparison is constant-time. A key has one role and belongs to one tenant; an
*operator* key may also manage tenants.

Report files (:meth:`Registry.put_report_file`) work on either engine, but only a shared
(PostgreSQL) store uses them: a single node keeps its reports in its data directory alone
rather than twice. Download-link keys (:meth:`Registry.add_link_key`) are public keys,
registered by every node, so that each checks the links the others sign; the private
keys stay in the nodes' data directories.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from trailseal.errors import AlreadyExistsError, ConfigError, NotFoundError, StorageError
from trailseal.policy.content import StoredBody
from trailseal.service.registry_sqlite import SqliteRegistryDatabase
from trailseal.storage.urls import StorageUrl

AUTH_CACHE_S = 5.0
"""How long a successful API-key check is remembered (see :meth:`Registry.authenticate`)."""

REPORT_CHUNK_BYTES = 1 << 20
"""Report files are stored in chunks of this size: a reader holds one chunk at a time."""

SQLITE_FILE = "service.db"
"""The registry's file in a data directory whose ledger is in SQLite."""

ROLES = ("ingest", "reader", "auditor", "approver", "admin")
"""Roles, from DESIGN §6."""

PERMISSIONS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"write"}),
    "reader": frozenset({"read"}),
    "auditor": frozenset({"read", "content", "export"}),
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"write", "read", "content", "export", "approve", "manage"}),
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_TOKEN = re.compile(r"^tsk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


def check_name(kind: str, name: str) -> None:
    """Tenant and log names: lowercase letters, digits and '-', up to 63 characters."""
    if not _NAME.match(name):
        raise ConfigError(
            f"{kind} name {name!r} must be 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )


@dataclass(frozen=True, slots=True)
class TenantLog:
    """A log as a tenant sees it, and the ledger log behind it."""

    tenant: str
    name: str
    ledger_log: str
    capture_content: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key's id, tenant, role and whether it is an operator's."""

    key_id: str
    tenant: str
    role: str
    operator: bool
    internal: bool = False
    """An adapter of this server (Slack, webhooks, poller): may use reserved sources."""

    def can(self, permission: str) -> bool:
        """Whether the role grants ``permission``."""
        return permission in PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as listed (never its secret)."""

    key_id: str
    tenant: str
    role: str
    operator: bool
    description: str
    created_at: str
    revoked_at: str | None


# -- the database layer -------------------------------------------------------------------
#
# The registry's SQL is written once, with ``?`` placeholders, in the dialect SQLite and
# PostgreSQL share (``ON CONFLICT`` needs SQLite 3.24). Booleans are bound as Python
# bools: SQLite stores 0/1, PostgreSQL a boolean; both read back through ``bool()``.


class RegistryTransaction(Protocol):
    """Statements inside one transaction of a :class:`RegistryDatabase`."""

    def execute(self, query: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        ...

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of arguments."""
        ...


class RegistryDatabase(Protocol):
    """Where a :class:`Registry` keeps its tables: runs its SQL, raises our errors.

    A unique-constraint violation becomes :class:`AlreadyExistsError`; every other
    database failure a :class:`StorageError` that says what to do.
    """

    def transaction(self) -> AbstractContextManager[RegistryTransaction]:
        """A transaction, committed when the block ends normally, else rolled back."""
        ...

    def rows(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Registry:
    """Tenants, logs, API keys, content, poller state, and a shared store's report files
    and secrets, in a :class:`RegistryDatabase`.

    ``where`` is a SQLite file (created 0600 when missing) or an open database, such as
    :class:`~trailseal.service.registry_postgres.PostgresRegistryDatabase`; the registry
    closes it. ``monotonic`` is the clock of the authentication cache (a test seam).
    """

    def __init__(
        self,
        where: Path | RegistryDatabase,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = where if isinstance(where, Path) else None
        """The SQLite file, or None when the registry lives elsewhere."""
        self._db = SqliteRegistryDatabase(where) if isinstance(where, Path) else where
        self._monotonic = monotonic
        self._auth_cache: dict[bytes, tuple[float, Principal]] = {}
        self._auth_generation = 0
        # Found logs, by (tenant, name): asked on every request, and a row of tenant_logs
        # is only ever inserted. Kept AUTH_CACHE_S like keys, so that a row the owner
        # removed by hand is not served for longer; a miss is never kept.
        self._log_cache: dict[tuple[str, str], tuple[float, TenantLog]] = {}

    def close(self) -> None:
        """Release the database."""
        self._db.close()

    def _tx(self) -> AbstractContextManager[RegistryTransaction]:
        return self._db.transaction()

    def _rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        return self._db.rows(query, args)

    # -- tenants and logs -----------------------------------------------------------

    def create_tenant(self, name: str, at: str) -> None:
        """Add a tenant."""
        check_name("tenant", name)
        with self._tx() as tx:
            # One statement decides a race between nodes: the loser inserts nothing.
            added = tx.execute(
                "INSERT INTO tenants (name, created_at) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, at),
            )
            if not added:
                raise AlreadyExistsError(f"tenant {name!r} already exists")

    def tenants(self) -> list[str]:
        """All tenant names."""
        return [r[0] for r in self._rows("SELECT name FROM tenants ORDER BY name")]

    def tenant_exists(self, name: str) -> bool:
        """Whether the tenant exists."""
        return bool(self._rows("SELECT 1 FROM tenants WHERE name = ?", name))

    def add_log(self, log: TenantLog, at: str) -> None:
        """Attach a ledger log to a tenant under a name."""
        check_name("log", log.name)
        if not self.tenant_exists(log.tenant):
            raise NotFoundError(f"no tenant {log.tenant!r}")
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO tenant_logs (tenant, name, ledger_log, capture_content, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (log.tenant, log.name, log.ledger_log, bool(log.capture_content), at),
            )

    def logs(self, tenant: str | None = None) -> list[TenantLog]:
        """A tenant's logs (every tenant's when None)."""
        sql = "SELECT tenant, name, ledger_log, capture_content FROM tenant_logs"
        rows = (
            self._rows(sql + " WHERE tenant = ? ORDER BY name", tenant)
            if tenant
            else self._rows(sql + " ORDER BY tenant, name")
        )
        return [TenantLog(t, n, lg, bool(c)) for t, n, lg, c in rows]

    def log(self, tenant: str, name: str) -> TenantLog:
        """One of a tenant's logs; :class:`NotFoundError` otherwise (also for other tenants')."""
        hit = self._log_cache.get((tenant, name))
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        rows = self._rows(
            "SELECT tenant, name, ledger_log, capture_content FROM tenant_logs"
            " WHERE tenant = ? AND name = ?",
            tenant,
            name,
        )
        if not rows:
            raise NotFoundError(f"tenant {tenant!r} has no log {name!r}")
        t, n, lg, c = rows[0]
        found = TenantLog(t, n, lg, bool(c))
        if len(self._log_cache) > 10_000:
            self._log_cache.clear()
        self._log_cache[(tenant, name)] = (self._monotonic() + AUTH_CACHE_S, found)
        return found

    # -- API keys -------------------------------------------------------------------

    def create_key(
        self, tenant: str, role: str, at: str, *, operator: bool = False, description: str = ""
    ) -> tuple[str, str]:
        """A new API key: returns ``(key id, token)``. The token is shown once."""
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not self.tenant_exists(tenant):
            raise NotFoundError(f"no tenant {tenant!r}")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        digest = hashlib.sha256(secret.encode()).digest()
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO api_keys (key_id, tenant, role, operator, secret_sha256,"
                " description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, tenant, role, bool(operator), digest, description, at),
            )
        return key_id, f"tsk_{key_id}_{secret}"

    def cached_principal(self, token: str) -> Principal | None:
        """A recent successful check of this token, without touching the database."""
        hit = self._auth_cache.get(hashlib.sha256(token.encode()).digest())
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        return None

    def authenticate(self, token: str) -> Principal | None:
        """The principal behind a token, or None (unknown, malformed or revoked).

        A successful answer is remembered for :data:`AUTH_CACHE_S` seconds, so a key
        revoked by another process (the CLI, another node) stops working within that
        time; a key revoked through this registry stops at once.
        """
        m = _TOKEN.match(token)
        if not m:
            return None
        key_id, secret = m.groups()
        fingerprint = hashlib.sha256(token.encode()).digest()
        cached = self.cached_principal(token)
        if cached is not None:
            return cached
        generation = self._auth_generation
        rows = self._rows(
            "SELECT tenant, role, operator, secret_sha256, revoked_at FROM api_keys"
            " WHERE key_id = ?",
            key_id,
        )
        digest = hashlib.sha256(secret.encode()).digest()
        if not rows:
            hmac.compare_digest(digest, bytes(32))  # same work whether or not the key exists
            return None
        tenant, role, operator, stored, revoked = rows[0]
        if not hmac.compare_digest(digest, stored) or revoked:
            return None
        principal = Principal(key_id, tenant, role, bool(operator))
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        if generation == self._auth_generation:  # no revocation raced this check
            self._auth_cache[fingerprint] = (self._monotonic() + AUTH_CACHE_S, principal)
        return principal

    def keys(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        """API keys (of one tenant when given)."""
        sql = (
            "SELECT key_id, tenant, role, operator, description, created_at, revoked_at"
            " FROM api_keys"
        )
        rows = (
            self._rows(sql + " WHERE tenant = ? ORDER BY created_at", tenant)
            if tenant
            else self._rows(sql + " ORDER BY tenant, created_at")
        )
        return [ApiKeyInfo(k, t, r, bool(o), d, c, v) for k, t, r, o, d, c, v in rows]

    def revoke_key(self, key_id: str, at: str, tenant: str | None = None) -> None:
        """Revoke a key (only within ``tenant`` when given); it stops working at once here."""
        query = "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"
        args: list[Any] = [at, key_id]
        if tenant is not None:
            query += " AND tenant = ?"
            args.append(tenant)
        with self._tx() as tx:
            # Two nodes revoking at once: the row lock makes the second see it revoked.
            if tx.execute(query, args) == 0:
                raise NotFoundError(f"no active API key {key_id!r}")
        # After the commit; the generation stops a check that raced it from re-caching.
        self._auth_generation += 1
        self._auth_cache.clear()

    # -- content --------------------------------------------------------------------

    def put_contents(self, tenant: str, log: str, bodies: list[StoredBody], at: str) -> None:
        """Store sealed bodies, in one transaction."""
        with self._tx() as tx:
            tx.executemany(
                "INSERT INTO content (ref, tenant, log, nonce, ciphertext, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(b.ref, tenant, log, b.nonce, b.ciphertext, at) for b in bodies],
            )

    def get_content(self, tenant: str, log: str, ref: str) -> tuple[bytes, bytes]:
        """A sealed body ``(nonce, ciphertext)`` of this tenant's log."""
        rows = self._rows(
            "SELECT nonce, ciphertext FROM content WHERE ref = ? AND tenant = ? AND log = ?",
            ref,
            tenant,
            log,
        )
        if not rows:
            raise NotFoundError(f"no content {ref!r} in log {log!r}")
        return rows[0][0], rows[0][1]

    # -- poller state -----------------------------------------------------------------

    def get_state(self, name: str) -> dict[str, Any] | None:
        """A poller's persisted state (a JSON object), or None before its first run."""
        rows = self._rows("SELECT state FROM poll_state WHERE name = ?", name)
        if not rows:
            return None
        value = orjson.loads(rows[0][0])
        return value if isinstance(value, dict) else None

    def put_state(self, name: str, state: dict[str, Any], at: str) -> None:
        """Replace a poller's state durably (committed before this returns)."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO poll_state (name, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at",
                (name, orjson.dumps(state).decode(), at),
            )

    # -- report files (shared stores only) ----------------------------------------------

    def put_report_file(self, rid: str, name: str, path: Path, at: str) -> str:
        """Copy a finished report file in, in one transaction; returns its SHA-256 (hex).

        Rows are keyed by ``(rid, name, sha256, seq)``, one :data:`REPORT_CHUNK_BYTES`
        chunk each, and only ever inserted. Putting the same bytes again (another node, a
        resumed build) changes nothing; a report rebuilt after a crash, whose bytes differ
        (its ``generated_at``), is stored beside the first copy, and readers ask for the
        SHA-256 the log recorded. The file is read twice, one chunk at a time: once to
        hash it, once to store it; if it changed in between nothing is stored.
        """
        sha256 = _file_sha256(path)
        if self._rows(
            "SELECT 1 FROM report_files WHERE rid = ? AND name = ? AND sha256 = ? AND seq = 0",
            rid,
            name,
            sha256,
        ):
            return sha256
        digest = hashlib.sha256()
        with self._tx() as tx, path.open("rb") as f:
            seq, chunk = 0, f.read(REPORT_CHUNK_BYTES)
            while True:  # an empty file is one empty chunk: stored, not absent
                digest.update(chunk)
                # Two nodes putting one file at once: the second waits for the first's
                # rows, then inserts nothing.
                tx.execute(
                    "INSERT INTO report_files (rid, name, sha256, seq, data, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (rid, name, sha256, seq) DO NOTHING",
                    (rid, name, sha256, seq, chunk, at),
                )
                seq, chunk = seq + 1, f.read(REPORT_CHUNK_BYTES)
                if not chunk:
                    break
            if digest.hexdigest() != sha256:
                raise StorageError(f"{path} changed while it was stored; nothing was stored")
        return sha256

    def report_file_chunks(self, rid: str, name: str, sha256: str) -> Iterator[bytes]:
        """The chunks of a stored report file, read one query (one chunk) at a time.

        :class:`NotFoundError` at once when no file ``name`` of ``rid`` has these bytes.
        A file's rows are committed together, so once its first chunk is visible every
        chunk is. The caller checks the bytes against ``sha256``: the rows are as
        trustworthy as whoever can write to the database.
        """
        query = (
            "SELECT data FROM report_files WHERE rid = ? AND name = ? AND sha256 = ? AND seq = ?"
        )
        first = self._rows(query, rid, name, sha256, 0)
        if not first:
            raise NotFoundError(f"the registry holds no copy of {name!r} of request {rid}")

        def chunks(rows: list[tuple[Any, ...]]) -> Iterator[bytes]:
            seq = 0
            while rows:
                chunk = bytes(rows[0][0])
                del rows  # hold one chunk, not two, while the next is read
                yield chunk
                del chunk
                seq += 1
                rows = self._rows(query, rid, name, sha256, seq)

        return chunks(first)

    def add_link_key(self, key_id: str, public_key: bytes, at: str) -> None:
        """Register a node's public download-link key (:mod:`trailseal.slackapp.links`).

        Idempotent: a node registers its key each time it starts, and nodes sharing one
        key file may start together; the first insert wins and the others do nothing.
        :class:`AlreadyExistsError` if ``key_id`` already names another public key.
        Rows are only ever inserted by the service; revoking one is the schema owner's
        ``DELETE``.
        """
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO link_keys (key_id, public_key, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key_id) DO NOTHING",
                (key_id, public_key, at),
            )
        if self.link_key(key_id) != public_key:
            raise AlreadyExistsError(
                f"download-link key id {key_id} is already registered with another public "
                "key; the registry may have been tampered with"
            )

    def link_key(self, key_id: str) -> bytes | None:
        """The public download-link key registered as ``key_id``; None if there is none."""
        rows = self._rows("SELECT public_key FROM link_keys WHERE key_id = ?", key_id)
        return bytes(rows[0][0]) if rows else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(REPORT_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def open_registry(
    url: StorageUrl,
    *,
    data_dir: Path,
    migrate: bool = True,
    monotonic: Callable[[], float] = time.monotonic,
) -> Registry:
    """The registry beside the ledger that ``url`` names.

    SQLite: the file ``service.db`` in ``data_dir`` (each data directory has its own).
    PostgreSQL: the registry's tables in the ledger's schema, shared by every node on it;
    their migrations are applied when ``migrate``, otherwise a schema that is behind is
    refused with a pointer to ``trailseal migrate-db``.
    """
    if url.engine == "sqlite":
        return Registry(data_dir / SQLITE_FILE, monotonic=monotonic)
    try:
        from trailseal.service.registry_postgres import (  # noqa: PLC0415 (optional extra)
            PostgresRegistryDatabase,
        )
    except ImportError as e:  # pragma: no cover - psycopg comes with the postgres extra
        raise ConfigError(
            "a PostgreSQL registry needs psycopg: pip install 'trailseal[postgres]'"
        ) from e
    assert url.dsn is not None
    return Registry(
        PostgresRegistryDatabase(url.dsn, schema=url.schema, migrate=migrate),
        monotonic=monotonic,
    )


__all__ = [
    "AUTH_CACHE_S",
    "PERMISSIONS",
    "REPORT_CHUNK_BYTES",
    "ROLES",
    "SQLITE_FILE",
    "ApiKeyInfo",
    "Principal",
    "Registry",
    "RegistryDatabase",
    "RegistryTransaction",
    "TenantLog",
    "check_name",
    "open_registry",
]
