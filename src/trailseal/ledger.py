"""The ledger: storage + signers + clock. Append with group commit, prove, checkpoint.

``append`` returns only after the entries, their tile hashes and a newly signed
checkpoint are committed in one storage transaction (DESIGN §1.4). Concurrent callers
are grouped: the first caller to find no commit in progress becomes the leader, takes
every queued request up to ``max_batch_entries`` / ``max_batch_bytes`` (waiting up to
``max_batch_delay_s`` for more), commits them as one batch and wakes each caller in it.
It then hands the leadership to the oldest caller still waiting, so every waiter is
woken exactly once and the commits never stop while work is queued.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from trailseal.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Node,
    build_proof,
    consistency_ranges,
    fold_right,
    inclusion_ranges,
    leaf_hash,
    proof_nodes,
    range_hash,
)
from trailseal.core.note import NoteSigner, NoteVerifier
from trailseal.core.receipt import Receipt
from trailseal.core.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    CompactRange,
    TileKey,
    compact_range,
    edge_tiles,
    integrate,
    node_tile,
    tile_pyramid,
)
from trailseal.errors import (
    EntryError,
    Error,
    NotFoundError,
    OverloadedError,
    ProofError,
    StorageError,
    TamperError,
)
from trailseal.storage.base import (
    IdempotencyKey,
    LogInfo,
    NewEntry,
    Storage,
    StoredCheckpoint,
    StoredEntry,
    WriteTransaction,
)

Clock = Callable[[], datetime]
_V = TypeVar("_V")
Status = Literal["appended", "duplicate", "conflict"]


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with microseconds and a ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """A record turned into canonical bytes, its leaf hash and idempotency key."""

    data: bytes
    leaf_hash: bytes
    key: IdempotencyKey | None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an entry is: its index, leaf hash, and the checkpoint size that commits it.

    ``status`` is ``appended`` for a new entry, ``duplicate`` when the idempotency key
    was already stored with the same bytes, ``conflict`` when it was stored with other
    bytes (the original is kept; ``index`` and ``leaf_hash`` are the original's).
    """

    index: int
    leaf_hash: bytes
    tree_size: int
    status: Status


def prepare(record: Mapping[str, Any]) -> PreparedEntry:
    """Canonicalize a record (RFC 8785) and derive its leaf hash and idempotency key.

    The idempotency key is ``(source, id)`` when the record has an ``id``: a string or an
    integer. Records without one are never deduplicated.
    """
    if not isinstance(record, Mapping):
        raise EntryError(f"an entry must be a JSON object, not {type(record).__name__}")
    data = canonicalize(record)
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryError(
            f"entry is {len(data)} bytes in canonical form; the limit is {MAX_ENTRY_SIZE} "
            "(C2SP tlog-tiles entry bundles). Move large content out of the entry."
        )
    key: IdempotencyKey | None = None
    event_id = record.get("id")
    if event_id is not None:
        if isinstance(event_id, bool) or not isinstance(event_id, str | int):
            raise EntryError("an entry's 'id' must be a string or an integer")
        source = record.get("source", "")
        if not isinstance(source, str):
            raise EntryError("an entry's 'source' must be a string")
        key = (source, str(event_id))
    return PreparedEntry(data, leaf_hash(data), key)


@dataclass
class _Request:
    entries: list[PreparedEntry]
    nbytes: int
    results: list[AppendResult] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when the request is done, or when it is handed the leadership."""


class _LRU(Generic[_V]):
    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[Any, _V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: Any) -> _V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: _V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)


class Ledger:
    """One log: append entries, sign checkpoints, build proofs and receipts."""

    def __init__(
        self,
        storage: Storage,
        log: LogInfo,
        signers: Sequence[NoteSigner] = (),
        *,
        clock: Clock = utc_now,
        max_batch_entries: int = 10_000,
        max_batch_bytes: int = 32 << 20,
        max_batch_delay_s: float = 0.0,
        max_queue_entries: int = 200_000,
    ) -> None:
        self.storage = storage
        self.log = log
        self.signers = list(signers)
        self.clock = clock
        self.max_batch_entries = max_batch_entries
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_entries = max_queue_entries
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._queued_entries = 0
        self._leader = False
        # The tree as of the last batch this process committed (None: read it first).
        self._size: int | None = None
        self._edge: dict[TileKey, bytes] = {}
        self._compact: CompactRange = ()
        self._pyramids: _LRU[list[bytes]] = _LRU(4096)  # about 16 KiB each
        self._edge_nodes: _LRU[bytes] = _LRU(1 << 14)
        # The right edge this process last committed, as one object (read without a
        # lock), and the checkpoints it signed last: a batch's receipts are answered
        # from them, not from the store, which they were just written to.
        self._edge_seen: dict[TileKey, bytes] = {}
        self._signed: _LRU[StoredCheckpoint] = _LRU(64)

    @property
    def origin(self) -> str:
        """The log's identity, the first line of its checkpoints."""
        return self.log.origin

    # -- keys -----------------------------------------------------------------------

    def verifiers(self) -> list[NoteVerifier]:
        """Every key that has ever signed for this log, retired ones included."""
        seen: dict[str, NoteVerifier] = {}
        for ev in self.storage.key_events(self.log.id):
            if ev.verifier not in seen:
                seen[ev.verifier] = NoteVerifier.from_string(ev.verifier)
        for s in self.signers:
            seen.setdefault(s.verifier.to_string(), s.verifier)
        return list(seen.values())

    # -- appending ------------------------------------------------------------------

    def append(self, records: Sequence[Mapping[str, Any]]) -> list[AppendResult]:
        """Append records; returns once they are durable and under a signed checkpoint."""
        return self.append_prepared([prepare(r) for r in records])

    def append_prepared(self, entries: Sequence[PreparedEntry]) -> list[AppendResult]:
        """Append already prepared entries (see :func:`prepare`)."""
        if not entries:
            return []
        if not self.signers:
            raise StorageError(
                f"log {self.log.name!r} has no signing key loaded; it can be read, not written"
            )
        req = _Request(list(entries), sum(len(e.data) for e in entries))
        with self._cond:
            if self._queued_entries + len(entries) > self.max_queue_entries:
                raise OverloadedError(
                    f"{self._queued_entries} entries are already waiting to be committed",
                    retry_after_s=1.0,
                )
            self._queue.append(req)
            self._queued_entries += len(entries)
            self._cond.notify_all()  # a leader waiting for a fuller batch watches the queue
            leading = not self._leader
            self._leader = True
        if not leading:
            # Sleep on our own event: woken once, either done or handed the leadership,
            # instead of every waiter waking after every batch.
            req.wake.wait()
        while not req.done:
            with self._cond:
                batch = self._take_batch()
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    if req.done:
                        if self._queue:
                            self._queue[0].wake.set()  # the oldest waiter leads next
                        else:
                            self._leader = False
        if req.error is not None:
            raise req.error
        return req.results

    def _take_batch(self) -> list[_Request]:
        """Called with the condition held, as leader."""
        if self.max_batch_delay_s > 0 and self._queued_entries < self.max_batch_entries:
            deadline = self.max_batch_delay_s
            self._cond.wait_for(
                lambda: self._queued_entries >= self.max_batch_entries, timeout=deadline
            )
        batch: list[_Request] = []
        count = nbytes = 0
        while self._queue:
            req = self._queue[0]
            if batch and (
                count + len(req.entries) > self.max_batch_entries
                or nbytes + req.nbytes > self.max_batch_bytes
            ):
                break
            batch.append(self._queue.pop(0))
            count += len(req.entries)
            nbytes += req.nbytes
        self._queued_entries -= count
        return batch

    def _commit(self, batch: list[_Request]) -> None:
        try:
            results = self._integrate([e for r in batch for e in r.entries])
        except BaseException as e:
            # Nothing of the batch was committed; every caller sees the error.
            for r in batch:
                r.error, r.done = e, True
                r.wake.set()
            return
        pos = 0
        for r in batch:
            r.results = results[pos : pos + len(r.entries)]
            pos += len(r.entries)
            r.done = True
            r.wake.set()

    def _load_edge(self, tx: WriteTransaction) -> int:
        size = tx.tree_size()
        if self._size is not None and size < self._size:
            # A log never shrinks: the database was rolled back under a running process
            # (a failover to a replica that lacks the last commits, a restore). Appending
            # now would sign a second tree of sizes already signed: a fork.
            raise TamperError(
                f"log {self.log.name!r} holds {size} entries, but this process already "
                f"committed a tree of {self._size}: the database was rolled back. Refusing "
                "to append (it would fork the log); restore the missing history."
            )
        if size != self._size:
            keys = [(level, index) for level, index, _ in edge_tiles(size)]
            tiles = tx.read_tiles(keys)
            edge = {}
            for level, index, width in edge_tiles(size):
                tile = tiles.get((level, index), b"")
                if len(tile) < width * 32:
                    raise TamperError(
                        f"tile {level}/{index} holds {len(tile) // 32} hashes; "
                        f"the tree of size {size} needs {width}"
                    )
                edge[(level, index)] = tile[: width * 32]
            compact = self._check_edge(size, edge)
            self._size, self._edge, self._compact = size, edge, compact
        return size

    def _check_edge(self, size: int, edge: Mapping[TileKey, bytes]) -> CompactRange:
        """Refuse to extend a tree whose stored edge disagrees with its last checkpoint;
        return the tree's compact range."""
        latest = self.storage.latest_checkpoint(self.log.id)
        expected = latest.root_hash if latest else EMPTY_ROOT
        compact = compact_range(size, edge)
        found = fold_right([h for _, h in compact]) if compact else EMPTY_ROOT
        if found != expected:
            raise TamperError(
                f"the stored tree of size {size} does not match its signed checkpoint; "
                "refusing to sign a checkpoint that would contradict it. Run `trailseal verify`.",
                expected=expected,
                found=found,
            )
        return compact

    def _integrate(self, entries: list[PreparedEntry]) -> list[AppendResult]:
        with self.storage.write(self.log.id) as tx:
            size = self._load_edge(tx)
            keys = list({e.key: None for e in entries if e.key is not None})
            existing = tx.find_entries(keys) if keys else {}
            fresh: list[PreparedEntry] = []
            placed: dict[IdempotencyKey, tuple[int, bytes]] = {
                k: (s.index, leaf_hash(s.data)) for k, s in existing.items()
            }
            slots: list[tuple[int, bytes, Status]] = []
            for e in entries:
                if e.key is not None and e.key in placed:
                    index, leaf = placed[e.key]
                    slots.append((index, leaf, "duplicate" if leaf == e.leaf_hash else "conflict"))
                    continue
                index = size + len(fresh)
                fresh.append(e)
                if e.key is not None:
                    placed[e.key] = (index, e.leaf_hash)
                slots.append((index, e.leaf_hash, "appended"))
            if not fresh:
                return [AppendResult(i, h, size, s) for i, h, s in slots]
            integ = integrate(size, self._edge, [e.leaf_hash for e in fresh], self._compact)
            signed = sign_checkpoint(
                Checkpoint(self.log.origin, integ.tree_size, integ.root_hash), self.signers
            )
            checkpoint = StoredCheckpoint(
                0, integ.tree_size, integ.root_hash, signed.to_bytes(), rfc3339(self.clock())
            )
            tx.append(
                size,
                [NewEntry(e.data, *(e.key if e.key else (None, None))) for e in fresh],
                integ.chunks,
                checkpoint,
            )
        self._size, self._edge, self._compact = integ.tree_size, integ.edge, integ.compact
        self._edge_seen = integ.edge  # committed: its tiles are now the store's too
        self._signed.put(integ.tree_size, checkpoint)
        return [AppendResult(i, h, integ.tree_size, s) for i, h, s in slots]

    # -- reading --------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint | None:
        """The latest signed checkpoint, or None for an empty log."""
        stored = self.storage.latest_checkpoint(self.log.id)
        return parse_signed_checkpoint(stored.note) if stored else None

    def tree_size(self) -> int:
        """The size of the latest signed checkpoint."""
        stored = self.storage.latest_checkpoint(self.log.id)
        return stored.tree_size if stored else 0

    def checkpoint_at(self, tree_size: int) -> SignedCheckpoint:
        """The signed checkpoint at exactly ``tree_size``."""
        stored = self.storage.checkpoint_at(self.log.id, tree_size)
        if stored is None:
            raise NotFoundError(f"log {self.log.name!r} has no checkpoint at size {tree_size}")
        return parse_signed_checkpoint(stored.note)

    def entry(self, index: int) -> StoredEntry:
        """The stored entry at ``index``."""
        for e in self.storage.read_entries(self.log.id, index, index + 1):
            return e
        raise NotFoundError(f"log {self.log.name!r} has no entry at index {index}")

    def find(self, event_id: str, source: str = "") -> StoredEntry:
        """The entry stored under the idempotency key ``(source, event_id)``."""
        found = self.storage.find_entry(self.log.id, source, event_id)
        if found is None:
            raise NotFoundError(
                f"log {self.log.name!r} has no entry with id {event_id!r} from source {source!r}"
            )
        return found

    def read_nodes(self, nodes: list[Node]) -> dict[Node, bytes]:
        """Hashes of complete subtrees, from the tiles that hold them.

        A full tile never changes, so its whole subtree (its "pyramid" of 511 hashes)
        is computed once and cached; a node inside it is then a slice. A node inside a
        partial tile is a complete subtree too, so it never changes either: it is cached
        on its own, and the next proofs on the growing edge reuse it.
        """
        out: dict[Node, bytes] = {}
        todo = []
        for node in nodes:
            cached = self._edge_nodes.get(node)
            if cached is None:
                todo.append(node)
            else:
                out[node] = cached
        placed = [(node, *node_tile(node)) for node in todo]
        need: dict[TileKey, int] = {}
        for _, key, first, span in placed:
            need[key] = max(need.get(key, 0), first + span)
        pyramids, partial = self._tiles_for(need)
        for node, key, first, span in placed:
            sub = span.bit_length() - 1
            pyramid = pyramids.get(key)
            if pyramid is not None:
                at = (first >> sub) * HASH_SIZE
                out[node] = pyramid[sub][at : at + HASH_SIZE]
                continue
            part = partial.get(key, b"")[first * HASH_SIZE : (first + span) * HASH_SIZE]
            if len(part) != span * HASH_SIZE:
                raise TamperError(f"tile {key[0]}/{key[1]} is too short to hold node {node}")
            out[node] = tile_pyramid(part)[-1]
            self._edge_nodes.put(node, out[node])
        return out

    def _tiles_for(
        self, need: Mapping[TileKey, int]
    ) -> tuple[dict[TileKey, list[bytes]], dict[TileKey, bytes]]:
        """Pyramids of the full tiles among ``need``'s keys (cached) and the partial tiles'
        bytes; ``need`` says how many hashes of each tile are wanted.

        A partial tile this process just committed is taken from memory when it holds
        that many (a tile only ever grows, so its first hashes are the store's); else,
        and on another node's newer edge, from the store.
        """
        pyramids: dict[TileKey, list[bytes]] = {}
        partial: dict[TileKey, bytes] = {}
        edge = self._edge_seen
        missing = []
        for key, wanted in need.items():
            pyramid = self._pyramids.get(key)
            if pyramid is not None:
                pyramids[key] = pyramid
                continue
            tile = edge.get(key)
            if tile is not None and len(tile) >= wanted * HASH_SIZE:
                partial[key] = tile
            else:
                missing.append(key)
        if missing:
            for key, tile in self.storage.read_tiles(self.log.id, missing).items():
                if len(tile) >= TILE_WIDTH * HASH_SIZE:
                    pyramids[key] = tile_pyramid(tile[: TILE_WIDTH * HASH_SIZE])
                    self._pyramids.put(key, pyramids[key])
                else:
                    partial[key] = tile
        return pyramids, partial

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash the tree holds for ``index``."""
        return self.read_nodes([(0, index)])[(0, index)]

    def _size_or_latest(self, tree_size: int | None) -> int:
        latest = self.tree_size()
        if tree_size is None:
            return latest
        if tree_size > latest:
            raise NotFoundError(f"tree size {tree_size} is beyond the log's size {latest}")
        return tree_size

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof for ``index`` in the tree of ``tree_size`` (default: latest)."""
        return self._inclusion_proof(index, self._size_or_latest(tree_size))

    def _inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """``size`` is known not to exceed the stored tree (the caller read it)."""
        if not 0 <= index < size:
            raise NotFoundError(f"index {index} is not in a tree of size {size}")
        return build_proof(inclusion_ranges(index, size), self.read_nodes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``size1`` to ``size2`` (default: latest)."""
        return self._consistency_proof(size1, self._size_or_latest(size2))

    def consistency_proof_to(self, size1: int, checkpoint: SignedCheckpoint) -> list[bytes]:
        """RFC 9162 consistency proof from ``size1`` to ``checkpoint``, one this ledger
        returned (:meth:`checkpoint`, :meth:`checkpoint_at`).

        Its size is a signed size of this tree, so the latest checkpoint is not read
        again to bound it: one database round trip less per proof on PostgreSQL.
        """
        return self._consistency_proof(size1, checkpoint.tree_size)

    def _consistency_proof(self, size1: int, size: int) -> list[bytes]:
        if not 0 < size1 <= size:
            raise ProofError(f"no consistency proof from size {size1} to size {size}")
        if size1 == size:
            return []
        return build_proof(consistency_ranges(size1, size), self.read_nodes)

    def receipt(self, index: int, tree_size: int | None = None) -> Receipt:
        """A ``c2sp.org/tlog-proof@v1`` receipt for ``index`` (latest checkpoint by default)."""
        if tree_size is None:
            stored = self.storage.latest_checkpoint(self.log.id)
            if stored is None:
                raise NotFoundError(f"log {self.log.name!r} is empty")
        else:
            stored = self.storage.checkpoint_at(self.log.id, tree_size)
            if stored is None:
                raise NotFoundError(f"log {self.log.name!r} has no checkpoint at size {tree_size}")
        # A stored checkpoint's size is within the tree: no second read of the latest.
        proof = self._inclusion_proof(index, stored.tree_size)
        return Receipt(index, tuple(proof), stored.note)

    def receipts(self, indexes: Sequence[int], tree_size: int) -> list[Receipt]:
        """Receipts for many indexes into one checkpoint: one checkpoint read, one node read.

        This is what answering a batch costs: the proofs of neighbouring entries share
        most of their nodes, so they are read and hashed once.
        """
        stored = self._signed.get(tree_size) or self.storage.checkpoint_at(self.log.id, tree_size)
        if stored is None:
            raise NotFoundError(f"log {self.log.name!r} has no checkpoint at size {tree_size}")
        for index in indexes:
            if not 0 <= index < tree_size:
                raise NotFoundError(f"index {index} is not in a tree of size {tree_size}")
        ranges = {index: inclusion_ranges(index, tree_size) for index in set(indexes)}
        # A batch's proofs are mostly the same ranges (the siblings of shared ancestors):
        # each distinct range is decomposed and hashed once.
        distinct = {r for rs in ranges.values() for r in rs}
        nodes = self.read_nodes(proof_nodes(distinct))
        hashes = {r: range_hash(r[0], r[1], nodes) for r in distinct}
        return [Receipt(i, tuple(hashes[r] for r in ranges[i]), stored.note) for i in indexes]


__all__ = ["AppendResult", "Clock", "Error", "Ledger", "PreparedEntry", "prepare", "rfc3339"]
