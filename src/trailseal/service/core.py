"""The service: tenants' logs, ingest with receipts, and (from
:mod:`trailseal.service.reads`) audited reads, proofs and tiles.

Thread-safe and synchronous; the HTTP layer calls it from worker threads, so that many
requests share one group commit in the ledger.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from trailseal.core.receipt import Receipt
from trailseal.datadir import DataDir
from trailseal.errors import (
    AlreadyExistsError,
    ConfigError,
    ForbiddenError,
    KeyMissingError,
    NotFoundError,
    ReadOnlyNodeError,
    ValidationError,
)
from trailseal.ledger import AppendResult, Clock, Ledger, PreparedEntry, prepare, rfc3339, utc_now
from trailseal.policy.content import TenantKeys
from trailseal.service.ingest import BuiltRecord, build_record, same_submission
from trailseal.service.reads import ACCESS_SOURCE, AuditedReads, Hit
from trailseal.service.registry import Principal, Registry, TenantLog, check_name, open_registry
from trailseal.service.rollback import CheckpointMemory
from trailseal.service.search import SearchIndex

if TYPE_CHECKING:
    from trailseal.cluster import Node

KEY_CHECK_INTERVAL_S = 5.0
"""How often a process reads a log's key history to follow rotations and retirements."""

SEARCH_DB = "search.db"
TENANT_KEYS_DIR = "tenants"
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Tunables of the service (from :mod:`trailseal.settings`)."""

    max_batch_events: int = 1000
    max_future_skew_s: float = 300.0
    max_queue_entries: int = 200_000


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What a client gets back for one event."""

    id: str
    source: str
    index: int
    leaf_hash: bytes
    tree_size: int
    status: str  # appended | duplicate | conflict
    receipt: Receipt


class Service(AuditedReads):
    """Everything the HTTP API does, without HTTP."""

    def __init__(
        self,
        data_dir: DataDir,
        registry: Registry,
        search: SearchIndex,
        *,
        clock: Clock = utc_now,
        options: ServiceOptions | None = None,
        origin_prefix: str = "localhost/trailseal",
    ) -> None:
        self.data_dir = data_dir
        self.registry = registry
        self.search_index = search
        self.clock = clock
        self.options = options or ServiceOptions()
        self.origin_prefix = origin_prefix
        self._ledgers: dict[str, Ledger] = {}
        self._tenant_keys: dict[str, TenantKeys] = {}
        self._lock = threading.Lock()
        self.shared = data_dir.shared
        """The store is shared with other nodes (PostgreSQL): keys are never made lazily."""
        self.node: Node | None = None
        self.read_only = False
        self._keys_checked: dict[str, float] = {}  # log -> when its key history was read
        self.memory = CheckpointMemory(data_dir.path)
        """The newest checkpoint this node saw of each log (rollback detection)."""

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        origin_prefix: str = "localhost/trailseal",
        clock: Clock = utc_now,
        options: ServiceOptions | None = None,
    ) -> tuple[Service, str | None]:
        """Open a data directory, creating it, the first tenant, log and an operator key
        on first run. Returns the service and, on first run only, the bootstrap token."""
        fresh = not (path / "trailseal.toml").exists()
        if fresh:
            data_dir, _, _ = DataDir.init(
                path, f"{origin_prefix}/{DEFAULT_TENANT}/default", "default", clock
            )
        else:
            data_dir = DataDir.open(path, clock)
        # On a shared (PostgreSQL) store the registry is shared too; serve never migrates.
        registry = open_registry(data_dir.url, data_dir=path, migrate=not data_dir.shared)
        service = cls(
            data_dir,
            registry,
            SearchIndex(path / SEARCH_DB),
            clock=clock,
            options=options,
            origin_prefix=origin_prefix,
        )
        token = None
        if not registry.tenants():
            at = rfc3339(clock())
            try:
                registry.create_tenant(DEFAULT_TENANT, at)
            except AlreadyExistsError:
                return service, None  # another node, starting at the same time, bootstrapped
            service.tenant_keys(DEFAULT_TENANT, create=True)
            default_log = data_dir.log(None)
            registry.add_log(TenantLog(DEFAULT_TENANT, "default", default_log.name, False), at)
            _, token = registry.create_key(
                DEFAULT_TENANT, "admin", at, operator=True, description="bootstrap operator key"
            )
        return service, token

    def join_cluster(
        self,
        *,
        read_only: bool = False,
        election_interval_s: float = 0.5,
        wait_timeout_s: float = 30.0,
    ) -> Node | None:
        """Take part in integrator elections (PostgreSQL stores only; ``serve`` calls this).

        A read-only node never integrates and refuses ingest; its reads are still
        audited, through the integrator of each log.
        """
        if not self.shared:
            if read_only:
                raise ConfigError("--read-only needs a PostgreSQL store shared with a writer node")
            return None
        # PostgreSQL is an optional extra: load it only when the store is one.
        from trailseal.cluster import Node  # noqa: PLC0415
        from trailseal.storage.postgres import PostgresStorage  # noqa: PLC0415

        storage = self.data_dir.storage
        assert isinstance(storage, PostgresStorage)
        self.read_only = read_only
        self.node = Node(
            storage,
            self._ledger_by_name,
            refresh_signers=self._refresh_signers,
            integrate=not read_only,
            election_interval_s=election_interval_s,
            wait_timeout_s=wait_timeout_s,
        )
        self.node.start()
        return self.node

    def close(self) -> None:
        """Release every store."""
        if self.node is not None:
            self.node.close()
        self.memory.flush()
        self.search_index.close()
        self.registry.close()
        self.data_dir.close()

    def ready(self) -> dict[str, bool]:
        """What /readyz reports: storage writable and signing keys loaded."""
        checks = {"storage": True, "keys": True}
        try:
            if self.read_only:
                self.data_dir.storage.latest_checkpoint(self.data_dir.log(None).id)
            else:
                with self.data_dir.storage.write(self.data_dir.log(None).id) as tx:
                    tx.tree_size()
        except Exception:
            checks["storage"] = False
        if not self.shared:
            # One node: it must be able to sign for every log. Many nodes: a node may
            # lack a log's key, as long as another node integrates it.
            try:
                for tlog in self.registry.logs():
                    self.ledger(tlog)
            except Exception:
                checks["keys"] = False
        return checks

    def leads(self, task: str) -> bool:
        """Whether this process should run the singleton ``task`` now: always on a store
        of its own; on a shared one, on exactly one node (elected like integrators)."""
        if self.node is None:
            return not self.read_only
        return self.node.integrate and self.node.leads(task)

    @contextmanager
    def claim(self, name: str) -> Iterator[bool]:
        """Do the work ``name`` on one node at a time: yields False when another node
        holds it now. On a store of its own the process is alone, so it always gets it."""
        if self.node is None:
            yield True
            return
        with self.node.claim(name) as mine:
            yield mine

    def check_history(self) -> None:
        """Refuse to serve a store rolled back behind, or forked from, a checkpoint this
        node already saw (``serve`` calls this before it listens)."""
        for tlog in self.registry.logs():
            self.memory.check(self.ledger(tlog))

    def node_status(self) -> dict[str, object] | None:
        """This node's part in the cluster (None when the store is not shared)."""
        return self.node.status() if self.node is not None else None

    # -- tenants, logs, keys ----------------------------------------------------------

    def create_tenant(self, name: str) -> None:
        """Add a tenant (its logs are added with :meth:`create_log`) and its content key."""
        self.registry.create_tenant(name, rfc3339(self.clock()))
        self.tenant_keys(name, create=True)

    def create_log(
        self, tenant: str, name: str, origin: str | None = None, capture_content: bool = False
    ) -> tuple[TenantLog, str]:
        """Add a log to a tenant; returns it and its verifier key."""
        check_name("log", name)
        if not self.registry.tenant_exists(tenant):
            raise NotFoundError(f"no tenant {tenant!r}")
        ledger_name = f"{tenant}.{name}"
        origin = origin or f"{self.origin_prefix}/{tenant}/{name}"
        _, signer = self.data_dir.create_log(ledger_name, origin)
        tlog = TenantLog(tenant, name, ledger_name, capture_content)
        self.registry.add_log(tlog, rfc3339(self.clock()))
        return tlog, signer.verifier.to_string()

    def resolve(self, principal: Principal, log: str, permission: str) -> TenantLog:
        """The caller's log, if its role allows ``permission``.

        Another tenant's log is reported as not found, never as forbidden, so a key
        learns nothing about other tenants.
        """
        tlog = self.registry.log(principal.tenant, log)
        if not principal.can(permission):
            raise ForbiddenError(f"role {principal.role!r} may not {permission} in this log")
        return tlog

    def ledger(self, tlog: TenantLog) -> Ledger:
        """The (cached) ledger behind a tenant's log."""
        return self._ledger_by_name(tlog.ledger_log)

    def _ledger_by_name(self, name: str) -> Ledger:
        with self._lock:
            ledger = self._ledgers.get(name)
            if ledger is None:
                try:
                    ledger = self.data_dir.ledger(name, writable=not self.read_only)
                except KeyMissingError:
                    # A key that is present but unsafe or wrong is an error on any node.
                    if not self.shared:
                        raise
                    # Many nodes: this one lacks the log's signing key. It reads, and
                    # writes through the node that has the key and integrates the log.
                    ledger = self.data_dir.ledger(name, writable=False)
                ledger.max_batch_entries = self.options.max_batch_events * 4
                ledger.max_queue_entries = self.options.max_queue_entries
                self._ledgers[name] = ledger
            return ledger

    def _refresh_signers(self, ledger: Ledger) -> None:
        """Sign with the log's active keys as its key history says now: a key rotated on
        another node joins once its file is here, a retired one stops signing."""
        if self.read_only:
            return
        active = [k.verifier for k in self.data_dir.keys(ledger.log) if k.active]
        loaded = {s.verifier.to_string(): s for s in ledger.signers}
        if [v.to_string() for v in active] == list(loaded):
            return
        signers = []
        for verifier in active:
            signer = loaded.get(verifier.to_string())
            if signer is None:
                try:
                    signer = self.data_dir.load_signer(ledger.log, verifier)
                except KeyMissingError:
                    continue  # not copied here yet: the others still sign
            signers.append(signer)
        ledger.signers = signers

    def _append(self, ledger: Ledger, entries: list[PreparedEntry]) -> list[AppendResult]:
        """Append on this node, or through the log's integrator on another node."""
        if self.node is not None:
            results = self.node.append(ledger, entries)  # its election follows key changes
        else:
            now = time.monotonic()
            last = self._keys_checked.setdefault(ledger.log.name, now)
            if now - last > KEY_CHECK_INTERVAL_S:
                # `trailseal signing-key rotate|retire` may have run beside this process.
                self._keys_checked[ledger.log.name] = now
                self._refresh_signers(ledger)
            results = ledger.append_prepared(entries)
        if results:
            self.memory.observe(ledger, max(r.tree_size for r in results))
        return results

    def tenant_keys(self, tenant: str, *, create: bool = False) -> TenantKeys:
        """The tenant's content keys, from a 0600 file made when the tenant was created
        (or, on a store of its own, on first use)."""
        with self._lock:
            keys = self._tenant_keys.get(tenant)
            if keys is not None:
                return keys
            directory = self.data_dir.path / "keys" / TENANT_KEYS_DIR
            directory.mkdir(mode=0o700, exist_ok=True)
            path = directory / f"{tenant}.key"
            if not path.exists() and self.shared and not create:
                # Another node would seal with a key of its own: refuse instead.
                raise ConfigError(
                    f"tenant key {path} is missing on this node; every node sharing a "
                    "PostgreSQL store needs the same keys/ directory: copy keys/tenants/ "
                    "from the node that created the tenant"
                )
            if path.exists():
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise ConfigError(
                        f"tenant key {path} is readable by others; run `chmod 600 {path}`"
                    )
                keys = TenantKeys.from_bytes(path.read_bytes())
            else:
                keys = TenantKeys.generate()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(keys.to_bytes())
                    f.flush()
                    os.fsync(f.fileno())
            self._tenant_keys[tenant] = keys
            return keys

    # -- ingest -----------------------------------------------------------------------

    def ingest(
        self, principal: Principal, log: str, events: list[Any], default_source: str = "api"
    ) -> list[IngestResult]:
        """Validate, seal and append events; returns once durable, with receipts.

        A batch is all or nothing: one invalid event rejects the whole batch, with the
        position of every invalid event in the error.
        """
        tlog = self.resolve(principal, log, "write")
        if self.read_only:
            raise ReadOnlyNodeError(
                "this node is read-only (serve --read-only); send writes to a writer node"
            )
        if len(events) > self.options.max_batch_events:
            raise ValidationError(
                f"a batch holds at most {self.options.max_batch_events} events",
                errors=[f"{len(events)} events were sent"],
            )
        if not principal.internal:
            _refuse_reserved_sources(events)
        keys = self.tenant_keys(tlog.tenant)
        received_at = self.clock()
        built: list[BuiltRecord] = []
        errors: list[str] = []
        for i, event in enumerate(events):
            try:
                built.append(
                    build_record(
                        event,
                        tenant=tlog.tenant,
                        log=tlog.name,
                        received_at=received_at,
                        keys=keys,
                        capture_content=tlog.capture_content,
                        max_future_skew_s=self.options.max_future_skew_s,
                        default_source=default_source,
                        ingested_by=principal.key_id,
                    )
                )
            except ValidationError as e:
                errors += [f"[{i}] {err}" for err in e.errors]
        if errors:
            raise ValidationError(
                "the batch was rejected; nothing was stored"
                if len(events) > 1
                else "the event was rejected; nothing was stored",
                errors=errors,
            )
        prepared: list[PreparedEntry] = [prepare(b.record) for b in built]
        at = rfc3339(received_at)
        bodies = [b.sealed.stored for b in built if b.sealed and b.sealed.stored]
        if bodies:
            self.registry.put_contents(tlog.tenant, tlog.name, bodies, at)
        ledger = self.ledger(tlog)
        results = self._append(ledger, prepared)
        # Every result of one call names the size of the checkpoint that covers it.
        receipts = ledger.receipts([r.index for r in results], results[0].tree_size)
        out = []
        for b, r, receipt in zip(built, results, receipts, strict=True):
            status = r.status
            if status == "conflict":
                stored = orjson.loads(ledger.entry(r.index).data)
                status = "duplicate" if same_submission(stored, b, keys) else "conflict"
            out.append(
                IngestResult(
                    str(b.record["id"]),
                    str(b.record["source"]),
                    r.index,
                    r.leaf_hash,
                    r.tree_size,
                    status,
                    receipt,
                )
            )
        return out


RESERVED_SOURCES = ("trailseal", "slack.", "webhook:")
"""Sources only the server's own adapters write; an API key may not claim them."""


def _refuse_reserved_sources(events: list[Any]) -> None:
    bad = [
        f"[{i}] event.source {e['source']!r} is reserved for trailseal's own adapters"
        for i, e in enumerate(events)
        if isinstance(e, dict)
        and isinstance(e.get("source"), str)
        and e["source"].startswith(RESERVED_SOURCES)
    ]
    if bad:
        raise ValidationError("the batch was rejected; nothing was stored", errors=bad)


__all__ = ["ACCESS_SOURCE", "Hit", "IngestResult", "Service", "ServiceOptions"]
