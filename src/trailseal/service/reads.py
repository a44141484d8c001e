"""Audited reads: search, entries, proofs, content and tiles, each recorded in the log.

Every read of tenant data appends an access event (who, what, why) before it is answered,
so the receipt a reader gets already includes the record of its own read; a read refused
for what it asked (no such entry, a proof that cannot exist) is recorded as a failure
with the reason. Hash tiles reveal only sizes and are not audited.

:class:`AuditedReads` is the read half of :class:`~trailseal.service.core.Service`, apart
so that each module stays one concept; the service provides what it declares below.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from trailseal.core.checkpoint import SignedCheckpoint
from trailseal.core.merkle import HASH_SIZE
from trailseal.core.note import NoteVerifier
from trailseal.core.receipt import Receipt
from trailseal.core.tiles import TILE_WIDTH, encode_entry_bundle, parse_tile_path
from trailseal.errors import ForbiddenError, NotFoundError, ProofError
from trailseal.ledger import AppendResult, Clock, Ledger, PreparedEntry, prepare
from trailseal.policy.content import TenantKeys
from trailseal.service.ingest import build_record
from trailseal.service.registry import Principal, Registry, TenantLog
from trailseal.service.search import Query, SearchIndex

ACCESS_SOURCE = "trailseal.access"


@dataclass(frozen=True, slots=True)
class Hit:
    """A search hit: index, leaf hash and the record."""

    index: int
    leaf_hash: bytes
    record: Any


class AuditedReads:
    """The service's reads; every one of tenant data is audited first."""

    if TYPE_CHECKING:  # provided by Service
        registry: Registry
        search_index: SearchIndex
        clock: Clock

        def resolve(self, principal: Principal, log: str, permission: str) -> TenantLog: ...
        def ledger(self, tlog: TenantLog) -> Ledger: ...
        def tenant_keys(self, tenant: str, *, create: bool = False) -> TenantKeys: ...
        def _append(self, ledger: Ledger, entries: list[PreparedEntry]) -> list[AppendResult]: ...

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


def _query_dict(query: Query) -> dict[str, Any]:
    return {k: getattr(query, k) for k in query.__slots__ if getattr(query, k) is not None}


__all__ = ["ACCESS_SOURCE", "AuditedReads", "Hit"]
