"""Copy a log from one store to another (SQLite to PostgreSQL and back), byte for byte.

A copy carries the log's name, origin and creation time, its verifier-key history, every
entry with its index and idempotency key, and every signed checkpoint in its original
order. The hash tiles are not copied but rebuilt: the source's entries are fed through
:func:`~trailseal.core.tiles.integrate` between successive checkpoints, and each
checkpoint's signature and root are checked before it is written. A source whose
entries do not match its signed checkpoints is refused at the first such checkpoint, so
a copy never launders a tampered store: what was written before the refusal is a
verified prefix of the log.

A copy is resumable. When the destination already holds the log, its checkpoints must
be the first checkpoints of the source byte for byte (and its key history a prefix of
the source's); only the rest is copied. Anything else is a destination that has diverged
and is refused before anything is written.

Memory stays bounded: entries are streamed and written in transactions of at most
:attr:`CopyLimits.max_batch_entries` entries / :attr:`CopyLimits.max_batch_bytes` bytes,
each holding whole checkpoints (a checkpoint's entries must commit with it). One
checkpoint covering more than that is written in one transaction, as the source wrote it.

:func:`trailseal.copycheck.check_copy` then verifies the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash
from trailseal.core.note import NoteVerifier
from trailseal.core.tiles import (
    TILE_WIDTH,
    CompactRange,
    TileChunk,
    TileKey,
    compact_range,
    edge_tiles,
    integrate,
    tree_root,
)
from trailseal.errors import (
    ConfigError,
    Error,
    InconsistencyError,
    NotFoundError,
    SignatureError,
    StorageError,
    TamperError,
)
from trailseal.storage.base import (
    KeyEvent,
    LogInfo,
    NewEntry,
    Storage,
    StoredCheckpoint,
    StoredEntry,
)

Progress = Callable[[int], None]
"""Called with the number of entries just copied (or verified)."""


@dataclass(frozen=True, slots=True)
class CopyLimits:
    """How much one destination transaction may hold."""

    max_batch_entries: int = 10_000
    max_batch_bytes: int = 32 << 20
    max_batch_checkpoints: int = 10_000


@dataclass
class CopyResult:
    """What :func:`copy_log` found and wrote for one log."""

    name: str
    origin: str
    tree_size: int = 0
    root_hash: bytes = EMPTY_ROOT
    resumed_at: int = 0
    """The tree size the destination already held (0 for a fresh copy)."""
    entries_copied: int = 0
    checkpoints_copied: int = 0
    checkpoints_total: int = 0
    key_events_copied: int = 0
    key_events_total: int = 0
    created: bool = False
    seconds: float = 0.0


def verifiers_of(events: list[KeyEvent]) -> list[NoteVerifier]:
    """Every verifier key in a key history, retired ones included, oldest first."""
    seen: dict[str, NoteVerifier] = {}
    for ev in events:
        if ev.verifier not in seen:
            seen[ev.verifier] = NoteVerifier.from_string(ev.verifier)
    return list(seen.values())


def _same(a: StoredCheckpoint, b: StoredCheckpoint) -> bool:
    """Byte-identical checkpoints (the row id is the store's own)."""
    return (a.tree_size, a.root_hash, a.note, a.signed_at) == (
        b.tree_size,
        b.root_hash,
        b.note,
        b.signed_at,
    )


def note_text(cp: StoredCheckpoint) -> str:
    """A checkpoint's signed note as text, for the evidence an error carries."""
    return cp.note.decode("utf-8", "replace")


@dataclass
class _Tree:
    """The tree rebuilt so far: what :func:`integrate` needs to go on."""

    size: int = 0
    root: bytes = EMPTY_ROOT
    edge: dict[TileKey, bytes] = field(default_factory=dict)
    compact: CompactRange = ()


@dataclass
class _Batch:
    """Checkpoints with their entries and tile chunks, to write in one transaction."""

    first_index: int
    items: list[tuple[int, list[NewEntry], list[TileChunk], StoredCheckpoint]] = field(
        default_factory=list
    )
    entries: int = 0
    nbytes: int = 0

    def full(self, limits: CopyLimits) -> bool:
        return (
            self.entries >= limits.max_batch_entries
            or self.nbytes >= limits.max_batch_bytes
            or len(self.items) >= limits.max_batch_checkpoints
        )


class _Copier:
    """One log's copy: the checks that must pass before writing, then the stream."""

    def __init__(
        self,
        source: Storage,
        dest: Storage,
        name: str,
        limits: CopyLimits,
        progress: Progress | None,
    ) -> None:
        self.source, self.dest, self.limits, self.progress = source, dest, limits, progress
        self.src_log = source.get_log(name)
        self.result = CopyResult(name, self.src_log.origin)
        self.events = source.key_events(self.src_log.id)
        self.verifiers = verifiers_of(self.events)
        self.dst_log: LogInfo | None = None
        self.tree = _Tree()
        self.last_copied_id = 0
        """The source row id of the last checkpoint the destination holds."""

    # -- before writing ------------------------------------------------------------

    def snapshot_source(self) -> StoredCheckpoint | None:
        """The source's latest checkpoint, refusing a store whose entry count says it was
        cut or padded (a live source may grow meanwhile: that is not an error)."""
        src, log_id = self.source, self.src_log.id
        before = src.latest_checkpoint(log_id)
        count = src.entry_count(log_id)
        after = src.latest_checkpoint(log_id)
        committed = before.tree_size if before else 0
        if count < committed:
            raise TamperError(
                f"source log {self.src_log.name!r} holds {count} entries but its latest "
                f"checkpoint commits to {committed}: entries were deleted. Nothing was copied; "
                "run `trailseal verify` on the source to see which",
                expected=before.root_hash if before else None,
            )
        if count > (after.tree_size if after else 0):
            raise TamperError(
                f"source log {self.src_log.name!r} holds {count} entries but its latest "
                f"checkpoint commits to {committed}: entries were added behind the log's "
                "back. Nothing was copied; run `trailseal verify` on the source",
            )
        return before

    def match_destination(self, src_checkpoints: Iterator[StoredCheckpoint]) -> int:
        """Check what the destination already holds of this log; return how many of the
        source's checkpoints it has. Raises before anything is written."""
        name, src = self.src_log.name, self.src_log
        try:
            dst = self.dest.get_log(name)
        except NotFoundError:
            return 0
        if (dst.origin, dst.created_at) != (src.origin, src.created_at):
            raise InconsistencyError(
                f"the destination already has a log {name!r} with origin {dst.origin} created "
                f"{dst.created_at}, not the source's {src.origin} created {src.created_at}: it "
                "is another log. Copy to another store or schema."
            )
        self.dst_log = dst
        dst_events = self.dest.key_events(dst.id)
        if dst_events != self.events[: len(dst_events)]:
            raise InconsistencyError(
                f"the destination's key history of log {name!r} is not a prefix of the "
                "source's: the destination has diverged; nothing was written"
            )
        held = 0
        for cp in self.dest.checkpoints(dst.id):
            mine = next(src_checkpoints, None)
            if mine is None:
                raise ConfigError(
                    f"the destination's log {name!r} holds more checkpoints than the source "
                    f"({held} of its checkpoints match, then it goes on to size "
                    f"{cp.tree_size}): it was written after an earlier copy. Copy in the other "
                    "direction, or to an empty store."
                )
            if not _same(mine, cp):
                raise InconsistencyError(
                    f"the destination's log {name!r} has diverged: its checkpoint number "
                    f"{held + 1} (size {cp.tree_size}) differs from the source's (size "
                    f"{mine.tree_size}); nothing was written. Copy to an empty store or schema.",
                    older=note_text(mine),
                    newer=note_text(cp),
                )
            held += 1
            self.tree.size, self.tree.root = cp.tree_size, cp.root_hash
            self.last_copied_id = mine.id
        if held:
            self._load_edge(dst)
        return held

    def _load_edge(self, dst: LogInfo) -> None:
        """Continue from the destination's stored tree, after checking that its edge
        tiles give the root its latest checkpoint signs."""
        size = self.tree.size
        keys = [(level, index) for level, index, _ in edge_tiles(size)]
        tiles = self.dest.read_tiles(dst.id, keys)
        for level, index, width in edge_tiles(size):
            tile = tiles.get((level, index), b"")
            if len(tile) < width * HASH_SIZE:
                raise TamperError(
                    f"the destination's tile {level}/{index} of log {dst.name!r} holds "
                    f"{len(tile) // HASH_SIZE} hashes; its tree of size {size} needs {width}. "
                    "Run `trailseal verify` on the destination."
                )
            self.tree.edge[(level, index)] = tile[: width * HASH_SIZE]
        found = tree_root(size, self.tree.edge)
        if found != self.tree.root:
            raise TamperError(
                f"the destination's stored tree of log {dst.name!r} (size {size}) does not "
                "match its latest checkpoint; refusing to extend it. Run `trailseal verify` "
                "on the destination.",
                expected=self.tree.root,
                found=found,
            )
        self.tree.compact = compact_range(size, self.tree.edge)

    # -- writing --------------------------------------------------------------------

    def write_log_and_keys(self) -> LogInfo:
        """Create the log if needed, then add the key events it lacks, in order."""
        if self.dst_log is None:
            src = self.src_log
            self.dst_log = self.dest.create_log(src.name, src.origin, src.created_at)
            self.result.created = True
        held = len(self.dest.key_events(self.dst_log.id))
        for ev in self.events[held:]:
            self.dest.add_key_event(self.dst_log.id, ev)
            self.result.key_events_copied += 1
        self.result.key_events_total = len(self.events)
        return self.dst_log

    def check_checkpoint(self, cp: StoredCheckpoint) -> None:
        """The checkpoint is validly signed by a key of the log and says what its row says."""
        try:
            signed = verify_checkpoint(cp.note, self.verifiers, self.src_log.origin)
        except Error as e:
            raise SignatureError(
                f"source checkpoint #{cp.id} (size {cp.tree_size}) of log "
                f"{self.src_log.name!r} is not validly signed by a key of the log: {e}. "
                "Nothing from it on was copied."
            ) from e
        if (signed.tree_size, signed.root_hash) != (cp.tree_size, cp.root_hash):
            raise TamperError(
                f"source checkpoint #{cp.id}: its stored size/root ({cp.tree_size}) differ from "
                f"its signed text (size {signed.tree_size})",
                expected=signed.root_hash,
                found=cp.root_hash,
            )
        if cp.tree_size < self.tree.size:
            raise InconsistencyError(
                f"source checkpoint #{cp.id} has size {cp.tree_size}, after one of size "
                f"{self.tree.size}: the source's history went backwards",
                newer=note_text(cp),
            )

    def take_entries(self, entries: Iterator[StoredEntry], end: int) -> list[StoredEntry]:
        """The source's entries from the current size up to ``end``, contiguous."""
        out = []
        for index in range(self.tree.size, end):
            entry = next(entries, None)
            if entry is None or entry.index != index:
                raise TamperError(
                    f"source entry {index} of log {self.src_log.name!r} is missing (a "
                    f"checkpoint commits to size {end}); nothing from it on was copied",
                    index=index,
                )
            out.append(entry)
        return out

    def first_bad_leaf(self, entries: list[StoredEntry]) -> StoredEntry | None:
        """The first entry whose leaf hash differs from the one the source's level-0
        tiles committed to (None when the tiles were altered as well)."""
        if not entries:
            return None
        first, last = entries[0].index, entries[-1].index
        keys = [(0, t) for t in range(first // TILE_WIDTH, last // TILE_WIDTH + 1)]
        tiles = self.source.read_tiles(self.src_log.id, keys)
        for e in entries:
            tile = tiles.get((0, e.index // TILE_WIDTH), b"")
            at = (e.index % TILE_WIDTH) * HASH_SIZE
            if tile[at : at + HASH_SIZE] != leaf_hash(e.data):
                return e
        return None

    def integrate(self, cp: StoredCheckpoint, entries: list[StoredEntry]) -> list[TileChunk]:
        """Extend the rebuilt tree by ``entries`` and return the tile chunks to write;
        refuse when the new root is not the one ``cp`` signs."""
        name, t = self.src_log.name, self.tree
        if not entries:
            if cp.root_hash != t.root:
                raise InconsistencyError(
                    f"source log {name!r} forked: checkpoint #{cp.id} re-signs size "
                    f"{cp.tree_size} with another root. Nothing from it on was copied.",
                    newer=note_text(cp),
                )
            return []
        integ = integrate(t.size, t.edge, [leaf_hash(e.data) for e in entries], t.compact)
        if integ.root_hash != cp.root_hash:
            bad = self.first_bad_leaf(entries)
            where = (
                f"entry {bad.index} does not match the leaf hash the tree committed to"
                if bad
                else f"entries {t.size}..{cp.tree_size - 1}"
            )
            raise TamperError(
                f"source log {name!r} is tampered: checkpoint #{cp.id} (size {cp.tree_size}) "
                f"does not match the tree rebuilt from the stored entries ({where}). Nothing "
                "from it on was copied; run `trailseal verify` on the source.",
                index=bad.index if bad else None,
                expected=cp.root_hash,
                found=integ.root_hash,
            )
        self.tree = _Tree(integ.tree_size, integ.root_hash, integ.edge, integ.compact)
        return integ.chunks

    def flush(self, batch: _Batch) -> None:
        if not batch.items:
            return
        assert self.dst_log is not None
        with self.dest.write(self.dst_log.id) as tx:
            if tx.tree_size() != batch.first_index:
                raise StorageError(
                    f"the destination's log {self.dst_log.name!r} moved to size "
                    f"{tx.tree_size()} while copying (expected {batch.first_index}): another "
                    "process writes to it. Stop it, then run copy-log again."
                )
            for first, entries, chunks, cp in batch.items:
                tx.append(first, entries, chunks, cp)
        self.result.entries_copied += batch.entries
        self.result.checkpoints_copied += len(batch.items)
        if self.progress and batch.entries:
            self.progress(batch.entries)

    def copy(self, latest: StoredCheckpoint, src_checkpoints: Iterator[StoredCheckpoint]) -> None:
        """Stream the source's checkpoints after those already copied, up to ``latest``."""
        if self.last_copied_id >= latest.id:
            return  # the destination is up to date
        entries = self.source.read_entries(self.src_log.id, self.tree.size, latest.tree_size)
        batch = _Batch(self.tree.size)
        reached = False
        for cp in src_checkpoints:
            if cp.id > latest.id:
                break
            self.check_checkpoint(cp)
            taken = self.take_entries(entries, cp.tree_size)
            first = self.tree.size
            chunks = self.integrate(cp, taken)
            new = [NewEntry(e.data, e.source, e.event_id) for e in taken]
            batch.items.append((first, new, chunks, cp))
            batch.entries += len(new)
            batch.nbytes += sum(len(e.data) for e in new) + len(cp.note)
            self.result.checkpoints_total += 1
            if cp.id == latest.id:
                reached = True
                break
            if batch.full(self.limits):
                self.flush(batch)
                batch = _Batch(self.tree.size)
        self.flush(batch)
        if not reached:
            raise StorageError(
                f"the source's checkpoints of log {self.src_log.name!r} ended before its latest "
                f"(#{latest.id}, size {latest.tree_size}); run copy-log again"
            )


def copy_log(
    source: Storage,
    dest: Storage,
    name: str,
    *,
    limits: CopyLimits | None = None,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy log ``name`` from ``source`` to ``dest`` (or its missing tail); see the module
    docstring for what is checked and in which order."""
    started = time.monotonic()
    copier = _Copier(source, dest, name, limits or CopyLimits(), progress)
    latest = copier.snapshot_source()
    src_checkpoints = iter(source.checkpoints(copier.src_log.id))
    held = copier.match_destination(src_checkpoints)
    result = copier.result
    result.resumed_at = copier.tree.size
    result.checkpoints_total = held
    copier.write_log_and_keys()
    if latest is not None:
        copier.copy(latest, src_checkpoints)
    result.tree_size, result.root_hash = copier.tree.size, copier.tree.root
    result.seconds = time.monotonic() - started
    return result
