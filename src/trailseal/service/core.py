"""The service: tenants' logs, ingest with receipts, audited reads, proofs and tiles.

Thread-safe and synchronous; the HTTP layer calls it from worker threads, so that many
requests share one group commit in the ledger.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from trailseal.core.checkpoint import SignedCheckpoint
from trailseal.core.merkle import HASH_SIZE
from trailseal.core.note import NoteVerifier
from trailseal.core.receipt import Receipt
from trailseal.core.tiles import TILE_WIDTH, encode_entry_bundle, parse_tile_path
from trailseal.datadir import DataDir
from trailseal.errors import (
    AlreadyExistsError,
    ConfigError,
    ForbiddenError,
    KeyMissingError,
    NotFoundError,
    ProofError,
    ReadOnlyNodeError,
    ValidationError,
)
from trailseal.ledger import AppendResult, Clock, Ledger, PreparedEntry, prepare, rfc3339, utc_now
from trailseal.policy.content import TenantKeys
from trailseal.service.ingest import BuiltRecord, build_record, same_submission
from trailseal.service.registry import Principal, Registry, TenantLog, check_name, open_registry
from trailseal.service.rollback import CheckpointMemory
from trailseal.service.search import Query, SearchIndex

if TYPE_CHECKING:
    from trailseal.cluster import Node

KEY_CHECK_INTERVAL_S = 5.0
"""How often a process reads a log's key history to follow rotations and retirements."""

SEARCH_DB = "search.db"
TENANT_KEYS_DIR = "tenants"
DEFAULT_TENANT = "default"
ACCESS_SOURCE = "trailseal.access"


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


@dataclass(frozen=True, slots=True)
class Hit:
    """A search hit: index, leaf hash and the record."""

    index: int
    leaf_hash: bytes
    record: Any


class Service:
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

    # -- audited reads ----------------------------------------------------------------

    def audit_access(
        self,
        principal: Principal,
        tlog: TenantLog,
        action: str,
        purpose: str | None,
        details: dict[str, Any],
        failure: str | None = None,
    ) -> None:
        """Append the access event a read causes, before the read is answered; a read
        refused for what it asked (no such entry, a proof that cannot exist) is recorded
        as a failure with the reason."""
        result: dict[str, Any] = (
            {"status": "success"} if failure is None else {"status": "failure", "reason": failure}
        )
        event: dict[str, Any] = {
            "id": "acc_" + secrets.token_hex(12),
            "source": ACCESS_SOURCE,
            "class": "security",
            "action": f"access.{action}",
            "actor": {"type": "service", "id": principal.key_id},
            "auth": {"method": "token", "token_ref": principal.key_id, "scopes": [principal.role]},
            "targets": [{"type": "log", "id": tlog.name}],
            "result": result,
            "raw": {"purpose": purpose, **details},
        }
        built = build_record(
            event,
            tenant=tlog.tenant,
            log=tlog.name,
            received_at=self.clock(),
            keys=self.tenant_keys(tlog.tenant),
            capture_content=False,
            max_future_skew_s=0,
            default_source=ACCESS_SOURCE,
            ingested_by="trailseal",
        )
        self._append(self.ledger(tlog), [prepare(built.record)])

    @contextmanager
    def _failed_read(
        self,
        principal: Principal,
        tlog: TenantLog,
        action: str,
        purpose: str | None,
        details: dict[str, Any],
    ) -> Iterator[None]:
        """Record a read that fails on what it asked for (then re-raise)."""
        try:
            yield
        except (NotFoundError, ProofError) as e:
            self.audit_access(principal, tlog, action, purpose, details, failure=str(e)[:1024])
            raise

    def search(
        self,
        principal: Principal,
        log: str,
        query: Query,
        *,
        limit: int,
        before: int | None,
        purpose: str | None,
    ) -> tuple[list[Hit], int | None]:
        """Search a log; returns hits (newest first) and the cursor index for the next page."""
        tlog = self.resolve(principal, log, "read")
        ledger = self.ledger(tlog)
        self.audit_access(principal, tlog, "search", purpose, {"query": _query_dict(query)})
        self.search_index.catch_up(ledger)
        indexes = self.search_index.search(tlog.ledger_log, query, limit + 1, before)
        more = len(indexes) > limit
        hits = []
        for index in indexes[:limit]:
            entry = ledger.entry(index)
            hits.append(Hit(index, ledger.leaf_hash(index), orjson.loads(entry.data)))
        return hits, (indexes[limit - 1] if more else None)

    def entry(
        self,
        principal: Principal,
        log: str,
        *,
        index: int | None = None,
        event_id: str | None = None,
        source: str = "api",
        purpose: str | None = None,
    ) -> tuple[Hit, Receipt]:
        """One entry with its receipt, by index or by event id."""
        tlog = self.resolve(principal, log, "read")
        ledger = self.ledger(tlog)
        details = {"index": index, "event_id": event_id, "source": source}
        with self._failed_read(principal, tlog, "fetch", purpose, details):
            stored = (
                ledger.find(event_id, source)
                if event_id is not None
                else ledger.entry(index if index is not None else -1)
            )
        # Recorded before the answer is made: the receipt's checkpoint includes it.
        self.audit_access(principal, tlog, "fetch", purpose, details)
        return (
            Hit(stored.index, ledger.leaf_hash(stored.index), orjson.loads(stored.data)),
            ledger.receipt(stored.index),
        )

    def inclusion(
        self, principal: Principal, log: str, index: int, tree_size: int | None, purpose: str | None
    ) -> Receipt:
        """A receipt for ``index`` into the checkpoint of ``tree_size`` (latest by default)."""
        tlog = self.resolve(principal, log, "read")
        ledger = self.ledger(tlog)
        details = {"kind": "inclusion", "index": index, "tree_size": tree_size}
        with self._failed_read(principal, tlog, "proof", purpose, details):
            size = (
                ledger.tree_size()
                if tree_size is None
                else ledger.checkpoint_at(tree_size).tree_size
            )
            if not 0 <= index < size:
                raise NotFoundError(f"index {index} is not in a tree of size {size}")
        self.audit_access(principal, tlog, "proof", purpose, details)
        return ledger.receipt(index, tree_size)

    def consistency(
        self, principal: Principal, log: str, first: int, second: int | None, purpose: str | None
    ) -> tuple[list[bytes], SignedCheckpoint]:
        """A consistency proof and the checkpoint it leads to."""
        tlog = self.resolve(principal, log, "read")
        ledger = self.ledger(tlog)
        details: dict[str, Any] = {"kind": "consistency", "first": first, "second": second}
        with self._failed_read(principal, tlog, "proof", purpose, details):
            target = ledger.checkpoint_at(second) if second else ledger.checkpoint()
            if target is None:
                raise NotFoundError("the log is empty")
            if not 0 < first <= target.tree_size:
                raise ProofError(
                    f"no consistency proof from size {first} to size {target.tree_size}"
                )
        details["second"] = target.tree_size
        self.audit_access(principal, tlog, "proof", purpose, details)
        return ledger.consistency_proof_to(first, target), target

    def content(self, principal: Principal, log: str, ref: str, purpose: str | None) -> bytes:
        """A stored body, decrypted; needs a role with content access and a purpose."""
        tlog = self.resolve(principal, log, "content")
        if not purpose or not purpose.strip():
            raise ForbiddenError(
                "reading content needs a declared purpose (X-Trailseal-Purpose header)"
            )
        with self._failed_read(principal, tlog, "content", purpose, {"ref": ref}):
            nonce, ciphertext = self.registry.get_content(tlog.tenant, tlog.name, ref)
        self.audit_access(principal, tlog, "content", purpose, {"ref": ref})
        aad = f"{tlog.tenant}/{tlog.name}/{ref}".encode()
        return self.tenant_keys(tlog.tenant).open(nonce, ciphertext, aad)

    def verifiers(self, principal: Principal, log: str) -> tuple[str, list[NoteVerifier]]:
        """The log's origin and verifier keys (public; any role of the tenant)."""
        tlog = self.registry.log(principal.tenant, log)
        ledger = self.ledger(tlog)
        return ledger.origin, ledger.verifiers()

    # -- C2SP tlog-tiles read API -----------------------------------------------------

    def checkpoint_bytes(self, principal: Principal, log: str) -> bytes:
        """The latest signed checkpoint."""
        tlog = self.resolve(principal, log, "read")
        signed = self.ledger(tlog).checkpoint()
        if signed is None:
            raise NotFoundError("the log is empty")
        return signed.to_bytes()

    def tile(self, principal: Principal, log: str, path: str) -> bytes:
        """A hash tile or entry bundle at a C2SP tlog-tiles path (``tile/...``).

        Entry bundles are tenant data and their reads are audited; hash tiles reveal
        only sizes and are not.
        """
        tlog = self.resolve(principal, log, "read")
        ledger = self.ledger(tlog)
        level, index, width = parse_tile_path(path)
        size = ledger.tree_size()
        if level == "entries":
            first = index * TILE_WIDTH
            with self._failed_read(principal, tlog, "tiles", None, {"path": path}):
                if first + width > size:
                    raise NotFoundError(f"{path} is beyond the log's size {size}")
            self.audit_access(principal, tlog, "tiles", None, {"path": path})
            entries = ledger.storage.read_entries(ledger.log.id, first, first + width)
            return encode_entry_bundle(e.data for e in entries)
        assert isinstance(level, int)
        available = size >> (8 * level)
        if index * TILE_WIDTH + width > available:
            raise NotFoundError(f"{path} is beyond the log's size {size}")
        tile = ledger.storage.read_tiles(ledger.log.id, [(level, index)]).get((level, index), b"")
        if len(tile) < width * HASH_SIZE:
            raise NotFoundError(f"{path} is not stored")
        return tile[: width * HASH_SIZE]


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


def _query_dict(query: Query) -> dict[str, Any]:
    return {k: getattr(query, k) for k in query.__slots__ if getattr(query, k) is not None}


__all__ = ["Hit", "IngestResult", "Service", "ServiceOptions"]
