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
from trailseal.core.tiles import TILE_WIDTH, TileChunk, TileKey, integrate
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


def verify_log(
    ledger: Ledger, verifiers: list[NoteVerifier], progress: Progress | None = None
) -> VerifyReport:
    """Verify a whole log from storage; see the module docstring for what is checked."""
    started = time.monotonic()
    storage, log = ledger.storage, ledger.log
    report = VerifyReport(log.origin, 0, EMPTY_ROOT)

    # 1. Checkpoints: signatures, and the sizes at which roots must be compared.
    roots_by_size: dict[int, list[tuple[int, bytes]]] = {}
    for stored in storage.checkpoints(log.id):
        report.checkpoints_checked += 1
        try:
            signed = verify_checkpoint(stored.note, verifiers, log.origin)
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
        if len({r for _, r in rows}) > 1:
            (id1, r1), (id2, r2) = rows[0], next(x for x in rows if x[1] != rows[0][1])
            report.problems.append(
                Problem(
                    "fork",
                    f"checkpoints #{id1} and #{id2} are both signed for size {size} but "
                    "commit to different roots: the log forked",
                    expected=r1,
                    found=r2,
                )
            )
    sizes = sorted(roots_by_size)
    target = sizes[-1] if sizes else 0
    report.tree_size = target

    # 2. Entries: stream, hash, rebuild tiles and roots at every checkpoint size.
    comparer = _TileComparer(ledger, report)
    size, edge = 0, {}
    stops = [s for s in sizes if s > 0]
    stop_i = 0
    pending: list[bytes] = []
    missing_reported = False

    def integrate_pending() -> None:
        nonlocal size, edge, stop_i
        if not pending:
            return
        integ = integrate(size, edge, pending)
        comparer.add(integ.chunks)
        size, edge = integ.tree_size, integ.edge
        pending.clear()
        while stop_i < len(stops) and stops[stop_i] == size:
            for cp_id, root in roots_by_size[size]:
                if root != integ.root_hash and not any(
                    p.kind == "fork" for p in report.problems
                ):
                    report.problems.append(
                        Problem(
                            "checkpoint-root",
                            f"checkpoint #{cp_id} (size {size}) does not match the tree "
                            "rebuilt from the stored entries",
                            expected=root,
                            found=integ.root_hash,
                        )
                    )
            stop_i += 1

    expected_index = 0
    for entry in storage.read_entries(log.id, 0, 1 << 62):
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
        while expected_index < entry.index:
            # A hole: carry on with the hash the tree committed to, to check the rest.
            if not missing_reported:
                report.problems.append(
                    Problem("missing", f"entry {expected_index} is missing", index=expected_index)
                )
                missing_reported = True
            pending.append(ledger.leaf_hash(expected_index))
            expected_index += 1
            _maybe_integrate(pending, size, stops, stop_i, integrate_pending)
        pending.append(leaf_hash(entry.data))
        expected_index += 1
        report.entries_checked += 1
        _maybe_integrate(pending, size, stops, stop_i, integrate_pending)
        if progress and report.entries_checked % BATCH == 0:
            progress(BATCH)
    if expected_index < target:
        report.problems.append(
            Problem(
                "truncated",
                f"the latest checkpoint commits to {target} entries but storage holds "
                f"entries only up to index {expected_index - 1}: the tail was removed",
                index=expected_index,
            )
        )
    else:
        integrate_pending()
        comparer.flush()
    if progress:
        progress(report.entries_checked % BATCH)
    report.root_hash = ledger.checkpoint_at(target).root_hash if target else EMPTY_ROOT

    # 3. The proofs the log serves: each checkpoint is consistent with the latest.
    if report.ok and target:
        latest = report.root_hash
        for s in sizes:
            if 0 < s < target:
                for cp_id, root in roots_by_size[s]:
                    try:
                        verify_consistency(s, target, ledger.consistency_proof(s, target),
                                           root, latest)
                    except Error as e:
                        report.problems.append(
                            Problem("tile", f"consistency proof from checkpoint #{cp_id} "
                                    f"(size {s}) to size {target} fails: {e}")
                        )
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    report.seconds = time.monotonic() - started
    return report


def _maybe_integrate(
    pending: list[bytes], size: int, stops: list[int], stop_i: int, flush: Callable[[], None]
) -> None:
    """Integrate at every checkpoint size and every BATCH leaves."""
    end = size + len(pending)
    if len(pending) >= BATCH or (stop_i < len(stops) and stops[stop_i] == end):
        flush()
