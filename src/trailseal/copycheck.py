"""Checking a copy made by :mod:`trailseal.copylog` against its source.

The copy is verified as ``trailseal verify`` does (:func:`trailseal.verify.verify_log`),
with the *source's* verifier keys, so a key planted in the destination would not help;
then the copy's latest checkpoint is checked for consistency with the source's latest
(RFC 9162 §2.1.4): the same root at the same size, or a consistency proof when the
source grew while it was being copied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from trailseal.copylog import Progress, note_text, verifiers_of
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import verify_consistency
from trailseal.core.note import NoteVerifier
from trailseal.errors import Error, InconsistencyError
from trailseal.ledger import Ledger
from trailseal.storage.base import LogInfo, Storage
from trailseal.verify import VerifyReport, verify_log


@dataclass
class CopyCheck:
    """What :func:`check_copy` found: the copy's full verification and the consistency
    of its latest checkpoint with the source's."""

    report: VerifyReport
    source_size: int = 0
    copy_size: int = 0
    consistency: str = ""
    seconds: float = 0.0


def check_copy(
    source: Storage, dest: Storage, name: str, *, progress: Progress | None = None
) -> CopyCheck:
    """Verify the copy of log ``name`` with the source's verifier keys, as ``trailseal
    verify`` does, then check that the copy's latest checkpoint and the source's are
    consistent: equal roots at equal sizes, else a consistency proof from the smaller to
    the larger, built by the store that holds the larger tree (RFC 9162 §2.1.4.2).

    Problems of the copy are returned in the report; an inconsistency between the two
    latest checkpoints raises :class:`InconsistencyError` with both checkpoints.
    """
    started = time.monotonic()
    src_log, dst_log = source.get_log(name), dest.get_log(name)
    verifiers = verifiers_of(source.key_events(src_log.id))
    report = verify_log(Ledger(dest, dst_log), verifiers, progress)
    check = CopyCheck(report)
    if report.ok:
        _check_latest(source, src_log, dest, dst_log, verifiers, check)
    check.seconds = time.monotonic() - started
    return check


def _check_latest(
    source: Storage,
    src_log: LogInfo,
    dest: Storage,
    dst_log: LogInfo,
    verifiers: list[NoteVerifier],
    check: CopyCheck,
) -> None:
    ours, theirs = source.latest_checkpoint(src_log.id), dest.latest_checkpoint(dst_log.id)
    if ours is None or theirs is None:
        if ours is not theirs:
            raise InconsistencyError(
                f"one of the source and the copy of log {src_log.name!r} is empty and the "
                "other is not"
            )
        check.consistency = "both empty"
        return
    for cp in (ours, theirs):
        verify_checkpoint(cp.note, verifiers, src_log.origin)
    check.source_size, check.copy_size = ours.tree_size, theirs.tree_size
    if ours.tree_size == theirs.tree_size:
        if ours.root_hash != theirs.root_hash:
            raise InconsistencyError(
                f"the copy's latest checkpoint of log {src_log.name!r} and the source's have "
                f"the same size {ours.tree_size} but different roots",
                older=note_text(ours),
                newer=note_text(theirs),
            )
        check.consistency = f"same root as the source's checkpoint at size {ours.tree_size}"
        return
    grew = ours.tree_size > theirs.tree_size
    small, big = (theirs, ours) if grew else (ours, theirs)
    big_store, big_log = (source, src_log) if grew else (dest, dst_log)
    proof = Ledger(big_store, big_log).consistency_proof(small.tree_size, big.tree_size)
    try:
        verify_consistency(small.tree_size, big.tree_size, proof, small.root_hash, big.root_hash)
    except Error as e:
        raise InconsistencyError(
            f"the copy of log {src_log.name!r} is not consistent with the source: {e}",
            older=note_text(small),
            newer=note_text(big),
            proof=proof,
        ) from e
    check.consistency = (
        f"consistency proof from size {small.tree_size} to {big.tree_size} verified"
        + (" (the source is ahead of the copy)" if grew else "")
    )
