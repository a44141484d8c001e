"""The storage protocol every backend implements, and the records it speaks in.

A store holds many logs. Per log it keeps, append-only: entries (canonical bytes, with
the optional idempotency key ``source`` + ``event_id``), hash-tile chunks (C2SP
tlog-tiles hashes, appended as the tree grows), signed checkpoints, and the history of
the log's verifier keys. Nothing is ever updated or deleted.

Writes go through :meth:`Storage.write`, a context manager that holds the log's write
lock for one transaction: the ledger reads the tree size, the edge tiles and existing
idempotency keys, then appends entries, tile chunks and a checkpoint together. If the
block raises, nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from trailseal.core.tiles import TileChunk, TileKey
from trailseal.errors import TamperError


@dataclass(frozen=True, slots=True)
class LogInfo:
    """A log: its numeric id in the store, its short name and its origin (identity)."""

    id: int
    name: str
    origin: str
    created_at: str


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A verifier key added to, or retired from, a log's signing set."""

    verifier: str
    event: str  # "added" | "retired"
    at: str


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint as stored: its row id, size, root, note bytes and signing time."""

    id: int
    tree_size: int
    root_hash: bytes
    note: bytes
    signed_at: str


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append: canonical bytes and its idempotency key, if any."""

    data: bytes
    source: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as stored."""

    index: int
    data: bytes
    source: str | None
    event_id: str | None


IdempotencyKey = tuple[str, str]


def join_tile_chunks(level: int, index: int, chunks: Iterable[tuple[int, bytes]]) -> bytes:
    """A tile from its stored ``(start, hashes)`` chunks in start order; a gap or overlap
    between chunks means the store was altered."""
    tile = b""
    for start, hashes in chunks:
        if start * 32 != len(tile):
            raise TamperError(
                f"tile {level}/{index} has a chunk at {start} after {len(tile) // 32} hashes"
            )
        tile += bytes(hashes)
    return tile


class WriteTransaction(Protocol):
    """One write transaction on one log, holding that log's write lock."""

    def tree_size(self) -> int:
        """The committed tree size (that of the latest checkpoint; 0 when there is none)."""
        ...

    def read_tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        """The stored hashes of each tile, concatenated in order."""
        ...

    def find_entries(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, StoredEntry]:
        """Entries already stored under these idempotency keys."""
        ...

    def append(
        self,
        first_index: int,
        entries: Sequence[NewEntry],
        chunks: Sequence[TileChunk],
        checkpoint: StoredCheckpoint,
    ) -> None:
        """Append entries from ``first_index``, their tile chunks and the new checkpoint.

        May be called several times in one transaction (``trailseal copy-log`` commits
        many source checkpoints together): each call sees the ones before it, through
        :meth:`tree_size`, :meth:`read_tiles` and :meth:`find_entries`, and all of them
        commit or none does. ``entries`` may be empty: a checkpoint re-signed at the
        same size.
        """
        ...


class Storage(Protocol):
    """What the ledger needs from a storage engine."""

    def create_log(self, name: str, origin: str, created_at: str) -> LogInfo:
        """Create a log.

        Raises :class:`~trailseal.errors.AlreadyExistsError` if the name or origin is taken.
        """
        ...

    def get_log(self, name: str) -> LogInfo:
        """A log by name; :class:`~trailseal.errors.NotFoundError` if there is none."""
        ...

    def list_logs(self) -> list[LogInfo]:
        """All logs, oldest first."""
        ...

    def add_key_event(self, log_id: int, event: KeyEvent) -> None:
        """Record that a verifier key was added or retired."""
        ...

    def key_events(self, log_id: int) -> list[KeyEvent]:
        """The log's key history, oldest first."""
        ...

    def write(self, log_id: int) -> AbstractContextManager[WriteTransaction]:
        """A write transaction on one log; commits when the block exits normally."""
        ...

    def latest_checkpoint(self, log_id: int) -> StoredCheckpoint | None:
        """The checkpoint with the largest tree size (latest signed, on ties)."""
        ...

    def checkpoint_at(self, log_id: int, tree_size: int) -> StoredCheckpoint | None:
        """The first checkpoint signed at exactly ``tree_size``."""
        ...

    def checkpoints(self, log_id: int) -> Iterator[StoredCheckpoint]:
        """Every stored checkpoint, in the order they were stored."""
        ...

    def read_tiles(self, log_id: int, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        """The stored hashes of each tile (missing tiles are left out)."""
        ...

    def tile_chunks(self, log_id: int) -> Iterator[TileChunk]:
        """Every stored tile chunk, by level, tile index and start (for verification)."""
        ...

    def read_entries(self, log_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        """Stored entries with ``start <= index < end``, in index order."""
        ...

    def find_entry(self, log_id: int, source: str, event_id: str) -> StoredEntry | None:
        """The entry stored under an idempotency key."""
        ...

    def entry_count(self, log_id: int) -> int:
        """How many entry rows the log holds (equal to the tree size unless tampered with)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
