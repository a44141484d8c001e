"""An in-memory store for tests and experiments; same contract as SQLite, no durability."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from trailseal.core.tiles import TileChunk, TileKey
from trailseal.errors import AlreadyExistsError, NotFoundError, StorageError
from trailseal.storage.base import (
    IdempotencyKey,
    KeyEvent,
    LogInfo,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
)


@dataclass
class _Log:
    info: LogInfo
    entries: list[StoredEntry] = field(default_factory=list)
    by_key: dict[IdempotencyKey, int] = field(default_factory=dict)
    chunks: dict[TileKey, list[TileChunk]] = field(default_factory=dict)
    checkpoints: list[StoredCheckpoint] = field(default_factory=list)
    keys: list[KeyEvent] = field(default_factory=list)


def _tiles(log: _Log, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
    return {
        k: b"".join(c.hashes for c in sorted(log.chunks[k], key=lambda c: c.start))
        for k in keys
        if k in log.chunks
    }


class _MemoryWrite:
    """Appends are staged and applied on commit; reads inside the transaction see them,
    as a database transaction sees its own writes."""

    def __init__(self, storage: MemoryStorage, log: _Log) -> None:
        self._storage = storage
        self._log = log
        self.pending: list[tuple[int, list[NewEntry], list[TileChunk], StoredCheckpoint]] = []

    def tree_size(self) -> int:
        sizes = [c.tree_size for c in self._log.checkpoints]
        sizes += [cp.tree_size for _, _, _, cp in self.pending]
        return max(sizes, default=0)

    def read_tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        tiles = _tiles(self._log, keys)
        for _, _, chunks, _ in self.pending:
            for c in chunks:
                if (c.level, c.index) in keys:
                    tiles[(c.level, c.index)] = tiles.get((c.level, c.index), b"") + c.hashes
        return tiles

    def _staged_keys(self) -> dict[IdempotencyKey, StoredEntry]:
        out: dict[IdempotencyKey, StoredEntry] = {}
        for first, entries, _, _ in self.pending:
            for i, e in enumerate(entries):
                if e.event_id is not None:
                    key = (e.source or "", e.event_id)
                    out[key] = StoredEntry(first + i, e.data, e.source, e.event_id)
        return out

    def find_entries(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, StoredEntry]:
        staged = self._staged_keys()
        out = {k: staged[k] for k in keys if k in staged}
        out.update(
            {k: self._log.entries[self._log.by_key[k]] for k in keys if k in self._log.by_key}
        )
        return out

    def append(
        self,
        first_index: int,
        entries: Sequence[NewEntry],
        chunks: Sequence[TileChunk],
        checkpoint: StoredCheckpoint,
    ) -> None:
        held = len(self._log.entries) + sum(len(e) for _, e, _, _ in self.pending)
        if first_index != held:
            raise StorageError(f"append at {first_index} but the log holds {held}")
        seen = set(self._staged_keys())
        for e in entries:
            if e.event_id is None:
                continue
            key = (e.source or "", e.event_id)
            if key in self._log.by_key or key in seen:
                raise StorageError(f"duplicate idempotency key {(e.source, e.event_id)}")
            seen.add(key)
        self.pending.append((first_index, list(entries), list(chunks), checkpoint))

    def commit(self) -> None:
        log = self._log
        for first, entries, chunks, checkpoint in self.pending:
            for i, e in enumerate(entries):
                stored = StoredEntry(first + i, e.data, e.source, e.event_id)
                log.entries.append(stored)
                if e.event_id is not None:
                    log.by_key[(e.source or "", e.event_id)] = first + i
            for c in chunks:
                log.chunks.setdefault((c.level, c.index), []).append(c)
            row = StoredCheckpoint(
                self._storage.next_id(),
                checkpoint.tree_size,
                checkpoint.root_hash,
                checkpoint.note,
                checkpoint.signed_at,
            )
            log.checkpoints.append(row)


class MemoryStorage:
    """:class:`~trailseal.storage.base.Storage` in process memory."""

    def __init__(self) -> None:
        self._logs: dict[int, _Log] = {}
        self._lock = threading.RLock()
        self._ids = 0

    def next_id(self) -> int:
        """A fresh row id for checkpoints."""
        self._ids += 1
        return self._ids

    def _log(self, log_id: int) -> _Log:
        try:
            return self._logs[log_id]
        except KeyError as e:
            raise NotFoundError(f"no log with id {log_id}") from e

    def create_log(self, name: str, origin: str, created_at: str) -> LogInfo:
        with self._lock:
            if any(lg.info.name == name or lg.info.origin == origin for lg in self._logs.values()):
                raise AlreadyExistsError(
                    f"a log named {name!r} or with origin {origin!r} already exists"
                )
            info = LogInfo(len(self._logs) + 1, name, origin, created_at)
            self._logs[info.id] = _Log(info)
            return info

    def get_log(self, name: str) -> LogInfo:
        for lg in self._logs.values():
            if lg.info.name == name:
                return lg.info
        raise NotFoundError(f"no log named {name!r}")

    def list_logs(self) -> list[LogInfo]:
        return [lg.info for lg in self._logs.values()]

    def add_key_event(self, log_id: int, event: KeyEvent) -> None:
        with self._lock:
            self._log(log_id).keys.append(event)

    def key_events(self, log_id: int) -> list[KeyEvent]:
        return list(self._log(log_id).keys)

    @contextmanager
    def write(self, log_id: int) -> Iterator[_MemoryWrite]:
        with self._lock:
            tx = _MemoryWrite(self, self._log(log_id))
            yield tx
            tx.commit()

    def latest_checkpoint(self, log_id: int) -> StoredCheckpoint | None:
        cps = self._log(log_id).checkpoints
        if not cps:
            return None
        return max(cps, key=lambda c: (c.tree_size, c.id))

    def checkpoint_at(self, log_id: int, tree_size: int) -> StoredCheckpoint | None:
        return next((c for c in self._log(log_id).checkpoints if c.tree_size == tree_size), None)

    def checkpoints(self, log_id: int) -> Iterator[StoredCheckpoint]:
        yield from list(self._log(log_id).checkpoints)

    def read_tiles(self, log_id: int, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        return _tiles(self._log(log_id), keys)

    def tile_chunks(self, log_id: int) -> Iterator[TileChunk]:
        chunks = self._log(log_id).chunks
        for key in sorted(chunks):
            yield from sorted(chunks[key], key=lambda c: c.start)

    def read_entries(self, log_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        yield from self._log(log_id).entries[max(start, 0) : end]

    def find_entry(self, log_id: int, source: str, event_id: str) -> StoredEntry | None:
        log = self._log(log_id)
        index = log.by_key.get((source, event_id))
        return None if index is None else log.entries[index]

    def entry_count(self, log_id: int) -> int:
        return len(self._log(log_id).entries)

    def close(self) -> None:
        """Nothing to release."""
