"""Rollback detection: every node remembers the newest checkpoint it has seen of each log.

A database restored from an old backup, or an old ``trailseal.db`` copied back, holds a
shorter history than the one clients already hold receipts for. Started on it, a
service would append new entries at indexes that were already given out and sign a
second, different tree: a fork. Clients and witnesses holding a later checkpoint detect
that (consistency proofs fail), but only after the fact.

So each node also keeps the last signed checkpoint it saw of every log in
``<data dir>/witness/<log>.checkpoint`` (0600, written at most once a second per log and
when the service closes), and ``serve`` refuses to start when the store's history is
shorter than, or inconsistent with, that checkpoint. The file is signed data, not a
secret; the check needs no trust in it beyond the log's own verifier keys.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from trailseal.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trailseal.core.merkle import verify_consistency
from trailseal.errors import FormatError, ProofError, SignatureError, TamperError
from trailseal.ledger import Ledger

WITNESS_DIR = "witness"
WRITE_INTERVAL_S = 1.0
TIMER_PREFIX = "witness-flush-"  # threads named so that leak checks can tell them apart
LOGGER = logging.getLogger("trailseal.rollback")


class CheckpointMemory:
    """The newest checkpoint this node saw, per log, on disk."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / WITNESS_DIR
        self._sizes: dict[str, int] = {}
        self._roots: dict[str, bytes] = {}  # root of the remembered checkpoint, by log
        self._written: dict[str, float] = {}
        self._dirty: dict[str, Ledger] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

    def _path(self, ledger: Ledger) -> Path:
        return self.directory / f"{ledger.log.name}.checkpoint"

    def observe(self, ledger: Ledger, tree_size: int) -> None:
        """Note that ``ledger`` reached ``tree_size``; persist at most once a second."""
        name = ledger.log.name
        with self._lock:
            if tree_size <= self._sizes.get(name, -1):
                return
            self._dirty[name] = ledger
            wait = self._written.get(name, -WRITE_INTERVAL_S) + WRITE_INTERVAL_S - time.monotonic()
            if wait > 0:
                # Written a moment ago: write again when the interval is over, so a burst
                # followed by silence (or a crash) does not leave the file behind.
                if name not in self._timers:
                    timer = threading.Timer(wait, self._save_later, (ledger,))
                    timer.name = f"{TIMER_PREFIX}{name}"
                    timer.daemon = True
                    self._timers[name] = timer
                    timer.start()
                return
            self._written[name] = time.monotonic()
        self._save(ledger)

    def _save_later(self, ledger: Ledger) -> None:
        with self._lock:
            self._timers.pop(ledger.log.name, None)
            self._written[ledger.log.name] = time.monotonic()
        try:
            self._save(ledger)
        except Exception as e:  # a timer thread has no caller to tell
            LOGGER.warning(
                "witness checkpoint not saved",
                extra={"log": ledger.log.name, "error": type(e).__name__},
            )

    def flush(self) -> None:
        """Persist what was observed since the last write (on close); never raises, so
        that closing goes on when the database is already gone."""
        with self._lock:
            dirty = list(self._dirty.values())
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
        for ledger in dirty:
            try:
                self._save(ledger)
            except Exception as e:
                LOGGER.warning(
                    "witness checkpoint not saved",
                    extra={"log": ledger.log.name, "error": type(e).__name__},
                )

    def _save(self, ledger: Ledger) -> None:
        stored = ledger.storage.latest_checkpoint(ledger.log.id)
        if stored is None:
            return
        name = ledger.log.name
        with self._lock:
            if stored.tree_size <= self._sizes.get(name, -1):
                self._dirty.pop(name, None)
                return
            old_size, old_root = self._sizes.get(name, 0), self._roots.get(name)
            if old_root is not None and not _extends(
                ledger, old_size, old_root, stored.tree_size, stored.root_hash
            ):
                # Keep the evidence: the file keeps the checkpoint the store contradicts,
                # and the next start refuses the store.
                LOGGER.error(
                    "the store is not an extension of the checkpoint this node saw: "
                    "its history was rolled back or rewritten; not overwriting the witness",
                    extra={"log": name, "seen": self._sizes.get(name), "now": stored.tree_size},
                )
                self._dirty.pop(name, None)
                return
            self.directory.mkdir(mode=0o700, exist_ok=True)
            path = self._path(ledger)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(stored.note)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
            self._sizes[name] = stored.tree_size
            self._roots[name] = stored.root_hash
            self._dirty.pop(name, None)

    def check(self, ledger: Ledger) -> SignedCheckpoint | None:
        """Refuse a store whose history is behind or forked from the remembered
        checkpoint; returns that checkpoint (None when there is none yet)."""
        path = self._path(ledger)
        try:
            saved_bytes = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            saved = verify_checkpoint(saved_bytes, ledger.verifiers(), ledger.origin)
        except (FormatError, SignatureError) as e:
            raise TamperError(
                f"{path} is not a checkpoint signed by log {ledger.log.name!r}'s keys ({e}); "
                "restore it or remove it to start without the rollback check"
            ) from e
        latest = ledger.checkpoint()
        size = latest.tree_size if latest else 0
        where = f"log {ledger.log.name!r} in the store"
        if latest is None or size < saved.tree_size:
            raise TamperError(
                f"{where} has {size} entries, but this node already saw a signed checkpoint "
                f"of {saved.tree_size} ({path}): the database was rolled back (a restored "
                "backup?). Appending now would fork the log. Restore the missing history "
                "(point-in-time recovery to the latest WAL), then start again; remove the "
                "file only if you accept the fork and will tell everyone holding receipts."
            )
        if not _extends(
            ledger,
            saved.tree_size,
            saved.checkpoint.root_hash,
            size,
            latest.checkpoint.root_hash,
        ):
            raise TamperError(
                f"{where} is not an extension of the checkpoint of size {saved.tree_size} "
                f"this node saw ({path}): its history was rewritten. Run `trailseal verify`."
            )
        with self._lock:
            self._sizes[ledger.log.name] = saved.tree_size
            self._roots[ledger.log.name] = saved.checkpoint.root_hash
        return saved


def _extends(ledger: Ledger, old_size: int, old_root: bytes, size: int, root: bytes) -> bool:
    """Whether the tree ``size``/``root`` of ``ledger`` extends the tree ``old_size``/``old_root``
    (``size`` >= ``old_size``): an empty tree is a prefix of every tree, two trees of one
    size must have one root, a larger one needs a consistency proof that verifies."""
    if old_size == 0:
        return True
    if size == old_size:
        return root == old_root
    try:
        verify_consistency(old_size, size, ledger.consistency_proof(old_size, size), old_root, root)
    except (ProofError, TamperError):
        return False
    return True


__all__ = ["WITNESS_DIR", "CheckpointMemory"]
