"""Full verification of a stored log (an fsck), trusting nothing but the verifier keys.

From the stored bytes alone it recomputes every leaf hash, rebuilds every hash tile and
the root at every checkpoint size, checks each checkpoint's signature, and compares:

- entry bytes against the leaf hashes the tree committed (an altered or swapped entry),
- the rebuilt tiles against the stored tiles (an altered tile hash),
- the rebuilt roots against every signed checkpoint (history rewritten under a
  checkpoint); equal roots at every size mean the checkpoints are mutually consistent,
- checkpoints of the same size against each other (a fork),
- index continuity and the latest checkpoint's size (a deleted entry, a truncated tail),
- and a consistency proof, built from the stored tiles, from each checkpoint to the
  latest (the proofs the log serves are sound).

Every problem names what and where: the index, the expected and the found hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, verify_consistency
from trailseal.core.note import NoteVerifier
from trailseal.core.tiles import TILE_WIDTH, CompactRange, TileChunk, TileKey, integrate
from trailseal.errors import Error
from trailseal.ledger import Ledger

Progress = Callable[[int], None]
"""Called with the number of entries just processed."""

BATCH = 4096

# Problem kinds, grouped by what they mean for the exit status.
TAMPERED = ("entry", "tile", "checkpoint-root", "extra")
BAD_SIGNATURE = ("signature",)
INCONSISTENT = ("fork",)
MISSING = ("missing", "truncated")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: what kind, a sentence, and the evidence."""

    kind: str
    message: str
    index: int | None = None
    expected: bytes | None = None
    found: bytes | None = None

    def describe(self) -> str:
        """The sentence with its evidence, for people."""
        parts = [self.message]
        if self.index is not None:
            parts.append(f"  index:    {self.index}")
        if self.expected is not None:
            parts.append(f"  expected: {self.expected.hex()}")
        if self.found is not None:
            parts.append(f"  found:    {self.found.hex()}")
        return "\n".join(parts)


@dataclass
class VerifyReport:
    """What :func:`verify_log` checked and found."""

    origin: str
    tree_size: int
    root_hash: bytes
    entries_checked: int = 0
    checkpoints_checked: int = 0
    tiles_checked: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems


class _TileComparer:
    """Collects rebuilt tile hashes and compares each tile with the stored one."""

    def __init__(self, ledger: Ledger, report: VerifyReport) -> None:
        self.ledger = ledger
        self.report = report
        self.building: dict[TileKey, bytes] = {}
        self.first_bad_leaf: Problem | None = None

    def add(self, chunks: Iterable[TileChunk]) -> None:
        for c in chunks:
            key = (c.level, c.index)
            self.building[key] = self.building.get(key, b"") + c.hashes
            if c.width == TILE_WIDTH:
                self.compare(key)

    def flush(self) -> None:
        for key in list(self.building):
            self.compare(key)

    def compare(self, key: TileKey) -> None:
        rebuilt = self.building.pop(key)
        stored = self.ledger.storage.read_tiles(self.ledger.log.id, [key]).get(key, b"")
        self.report.tiles_checked += 1
        if stored[: len(rebuilt)] == rebuilt:
            return
        level, tile_index = key
        for pos in range(0, len(rebuilt), HASH_SIZE):
            want, have = rebuilt[pos : pos + HASH_SIZE], stored[pos : pos + HASH_SIZE]
            if want != have:
                n = tile_index * TILE_WIDTH + pos // HASH_SIZE
                if level == 0:
                    problem = Problem(
                        "entry",
                        f"entry {n} does not match the leaf hash the tree committed to",
                        index=n,
                        expected=have or None,
                        found=want,
                    )
                    if self.first_bad_leaf is None:
                        self.first_bad_leaf = problem
                    self.report.problems.append(problem)
                else:
                    self.report.problems.append(
                        Problem(
                            "tile",
                            f"tile {level}/{tile_index} hash {pos // HASH_SIZE} differs from "
                            "the hash rebuilt from the entries",
                            expected=want,
                            found=have or None,
                        )
                    )
                return


class _Rebuilder:
    """Rebuilds the tree from leaf hashes, checking roots at every checkpoint size."""

    def __init__(
        self, comparer: _TileComparer, roots_by_size: dict[int, list[tuple[int, bytes]]]
    ) -> None:
        self.comparer = comparer
        self.report = comparer.report
        self.roots_by_size = roots_by_size
        self.stops = sorted(s for s in roots_by_size if s > 0)
        self.stop_i = 0
        self.size = 0
        self.edge: dict[TileKey, bytes] = {}
        self.compact: CompactRange = ()
        self.pending: list[bytes] = []

    def push(self, leaf: bytes) -> None:
        self.pending.append(leaf)
        end = self.size + len(self.pending)
        at_stop = self.stop_i < len(self.stops) and self.stops[self.stop_i] == end
        if len(self.pending) >= BATCH or at_stop:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        integ = integrate(self.size, self.edge, self.pending, self.compact)
        self.comparer.add(integ.chunks)
        self.size, self.edge, self.compact = integ.tree_size, integ.edge, integ.compact
        self.pending = []
        while self.stop_i < len(self.stops) and self.stops[self.stop_i] == self.size:
            forked = any(p.kind == "fork" for p in self.report.problems)
            for cp_id, root in self.roots_by_size[self.size]:
                if root != integ.root_hash and not forked:
                    self.report.problems.append(
                        Problem(
                            "checkpoint-root",
                            f"checkpoint #{cp_id} (size {self.size}) does not match the tree "
                            "rebuilt from the stored entries",
                            expected=root,
                            found=integ.root_hash,
                        )
                    )
            self.stop_i += 1


def _check_checkpoints(
    ledger: Ledger, verifiers: list[NoteVerifier], report: VerifyReport
) -> dict[int, list[tuple[int, bytes]]]:
    """Signatures of every checkpoint; forks; returns the valid roots by size."""
    roots_by_size: dict[int, list[tuple[int, bytes]]] = {}
    for stored in ledger.storage.checkpoints(ledger.log.id):
        report.checkpoints_checked += 1
        try:
            signed = verify_checkpoint(stored.note, verifiers, ledger.origin)
        except Error as e:
            report.problems.append(
                Problem(
                    "signature",
                    f"checkpoint #{stored.id} (size {stored.tree_size}) is not validly signed "
                    f"by a key of this log: {e}",
                )
            )
            continue
        if (signed.tree_size, signed.root_hash) != (stored.tree_size, stored.root_hash):
            report.problems.append(
                Problem(
                    "checkpoint-root",
                    f"checkpoint #{stored.id}: the stored size/root columns differ from its "
                    "signed text",
                    expected=signed.root_hash,
                    found=stored.root_hash,
                )
            )
        roots_by_size.setdefault(signed.tree_size, []).append((stored.id, signed.root_hash))
    for size, rows in sorted(roots_by_size.items()):
        first_id, first_root = rows[0]
        other = next((r for r in rows if r[1] != first_root), None)
        if other is not None:
            report.problems.append(
                Problem(
                    "fork",
                    f"checkpoints #{first_id} and #{other[0]} are both signed for size {size} "
                    "but commit to different roots: the log forked",
                    expected=first_root,
                    found=other[1],
                )
            )
    return roots_by_size


def _check_entries(
    ledger: Ledger, rebuilder: _Rebuilder, target: int, progress: Progress | None
) -> None:
    """Stream every entry in index order into the rebuilder, noting holes and extras."""
    report = rebuilder.report
    expected_index = 0
    for entry in ledger.storage.read_entries(ledger.log.id, 0, 1 << 62):
        if entry.index >= target:
            report.problems.append(
                Problem(
                    "extra",
                    f"storage holds entries from index {entry.index} on that no checkpoint "
                    f"commits to (latest checkpoint size {target})",
                    index=entry.index,
                )
            )
            break
        if expected_index < entry.index:
            report.problems.append(
                Problem("missing", f"entry {expected_index} is missing", index=expected_index)
            )
            # Carry on with the hashes the tree committed to, to check everything else.
            while expected_index < entry.index:
                rebuilder.push(ledger.leaf_hash(expected_index))
                expected_index += 1
        rebuilder.push(leaf_hash(entry.data))
        expected_index += 1
        report.entries_checked += 1
        if progress and report.entries_checked % BATCH == 0:
            progress(BATCH)
    if progress:
        progress(report.entries_checked % BATCH)
    if expected_index < target:
        report.problems.append(
            Problem(
                "truncated",
                f"the latest checkpoint commits to {target} entries but storage holds "
                f"entries only up to index {expected_index - 1}: the tail was removed",
                index=expected_index,
            )
        )
        return
    rebuilder.flush()
    rebuilder.comparer.flush()


def _check_served_proofs(
    ledger: Ledger, roots_by_size: dict[int, list[tuple[int, bytes]]], report: VerifyReport
) -> None:
    """Consistency proofs built from the stored tiles, from every checkpoint to the latest."""
    target, latest = report.tree_size, report.root_hash
    for size in sorted(roots_by_size):
        if not 0 < size < target:
            continue
        for cp_id, root in roots_by_size[size]:
            try:
                proof = ledger.consistency_proof(size, target)
                verify_consistency(size, target, proof, root, latest)
            except Error as e:
                report.problems.append(
                    Problem(
                        "tile",
                        f"consistency proof from checkpoint #{cp_id} (size {size}) to size "
                        f"{target} fails: {e}",
                    )
                )


def verify_log(
    ledger: Ledger, verifiers: list[NoteVerifier], progress: Progress | None = None
) -> VerifyReport:
    """Verify a whole log from storage; see the module docstring for what is checked."""
    started = time.monotonic()
    report = VerifyReport(ledger.origin, 0, EMPTY_ROOT)
    roots_by_size = _check_checkpoints(ledger, verifiers, report)
    report.tree_size = target = max(roots_by_size, default=0)
    if target:
        report.root_hash = roots_by_size[target][0][1]
    rebuilder = _Rebuilder(_TileComparer(ledger, report), roots_by_size)
    _check_entries(ledger, rebuilder, target, progress)
    if report.ok and target:
        _check_served_proofs(ledger, roots_by_size, report)
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    report.seconds = time.monotonic() - started
    return report
