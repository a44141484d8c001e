"""History cannot be rewritten unnoticed: the :class:`CheckpointTracker` keeps the latest
verified checkpoint (in memory, or in a 0600 JSON state file written atomically) and
accepts another only if it is consistent with it.

A checkpoint of a larger tree is accepted only with a verified RFC 9162 consistency proof
from the stored one; an equal size must have the same root; a smaller size must be
provably a prefix of the stored tree (a receipt may legitimately predate a concurrent
answer), and the latest checkpoint may never be smaller: that is a rollback. Any failure
raises :class:`trailseal.errors.InconsistencyError` carrying both checkpoints, and the
state is not advanced.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson

from trailseal.client.errors import BadRequest, NotFound
from trailseal.client.results import _get
from trailseal.client.verification import Pins
from trailseal.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trailseal.core.merkle import verify_consistency
from trailseal.core.note import b64decode
from trailseal.errors import (
    ConfigError,
    FormatError,
    InconsistencyError,
    ProofError,
    SignatureError,
)

STATE_FORMAT: Final = "trailseal-client-state/v1"


class CheckpointTracker:
    """The latest verified checkpoint of one log, advanced only along a consistent history.

    ``fetch_proof(first, second)`` asks the server for the consistency proof between two
    tree sizes (its JSON answer); it raises :class:`NotFound` or :class:`BadRequest` when
    the server cannot prove it. With ``track`` off, checkpoints are not checked (a state
    file is still loaded, and pins its origin).
    """

    def __init__(
        self,
        pins: Pins,
        log: str,
        state_path: Path | None,
        *,
        track: bool,
        fetch_proof: Callable[[int, int], dict[str, Any]],
    ) -> None:
        if (track or state_path is not None) and not pins.verifiers:
            raise ConfigError(
                "consistency checking (state_path, track_consistency) needs pinned "
                "verifier_keys: an unverified checkpoint proves nothing"
            )
        self.pins = pins
        self.log = log
        self.state_path = state_path
        self.track = track
        self._fetch_proof = fetch_proof
        self._lock = threading.RLock()
        self.state: SignedCheckpoint | None = self._load_state()

    def observe(self, signed: SignedCheckpoint) -> None:
        """A verified checkpoint from a receipt: check it against the state."""
        if self.track:
            with self._lock:
                self._advance(signed, latest=False)

    def check_latest(self, fetch: Callable[[], SignedCheckpoint]) -> SignedCheckpoint:
        """Fetch (and verify) the latest checkpoint, and advance the state to it."""
        # Held across the fetch: any checkpoint already stored was signed before this
        # request, so an honest latest checkpoint cannot be smaller.
        with self._lock:
            signed = fetch()
            self._advance(signed, latest=True)
            return signed

    def _advance(self, new: SignedCheckpoint, *, latest: bool) -> None:
        """Accept ``new`` only if it is consistent with the state; advance the state."""
        old = self.state
        if old is None:
            self._store(new)
            return
        if new.tree_size == old.tree_size:
            if new.root_hash != old.root_hash:
                raise InconsistencyError(
                    f"two checkpoints of size {new.tree_size} with different roots: the "
                    "server forked its history",
                    older=_text(old),
                    newer=_text(new),
                )
            return
        if new.tree_size > old.tree_size:
            self._prove(old, new)
            self._store(new)
            return
        if latest:
            raise InconsistencyError(
                f"the latest checkpoint has size {new.tree_size}, smaller than the "
                f"{old.tree_size} already seen: the server rolled its history back",
                older=_text(old),
                newer=_text(new),
            )
        # An older checkpoint (a receipt answered concurrently) must be a prefix.
        self._prove(new, old)

    def _prove(self, older: SignedCheckpoint, newer: SignedCheckpoint) -> None:
        """Fetch and verify the consistency proof from ``older`` to ``newer``."""
        older_text, newer_text = _text(older), _text(newer)
        try:
            data = self._fetch_proof(older.tree_size, newer.tree_size)
        except (NotFound, BadRequest) as e:
            raise InconsistencyError(
                f"the server cannot prove that its checkpoint of size {newer.tree_size} "
                f"extends the one of size {older.tree_size} it signed ({e.detail}): its "
                "history was rewritten or rolled back",
                older=older_text,
                newer=newer_text,
            ) from None
        try:
            proof = [b64decode(h, "consistency proof hash") for h in _get(data, "proof", list)]
            served = verify_checkpoint(
                _get(data, "checkpoint", str).encode(), self.pins.verifiers, newer.origin
            )
        except (FormatError, SignatureError) as e:
            raise InconsistencyError(
                f"the consistency proof is unusable: {e}", older=older_text, newer=newer_text
            ) from e
        if (served.tree_size, served.root_hash) != (newer.tree_size, newer.root_hash):
            raise InconsistencyError(
                f"the server signed two different checkpoints of size {newer.tree_size}: "
                "it forked its history",
                older=_text(newer),
                newer=_text(served),
            )
        try:
            verify_consistency(
                older.tree_size, newer.tree_size, proof, older.root_hash, newer.root_hash
            )
        except ProofError as e:
            raise InconsistencyError(
                f"the checkpoint of size {newer.tree_size} does not extend the one of size "
                f"{older.tree_size}: {e}. The server rewrote its history",
                proof=proof,
                older=older_text,
                newer=newer_text,
            ) from e

    def _load_state(self) -> SignedCheckpoint | None:
        path = self.state_path
        if path is None:
            return None
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"cannot read the state file {path}: {e}") from e
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise FormatError(f"it is not a {STATE_FORMAT} file")
            signed = verify_checkpoint(
                _get(data, "checkpoint", str).encode(), self.pins.verifiers, self.pins.origin
            )
        except (orjson.JSONDecodeError, FormatError, SignatureError) as e:
            raise ConfigError(
                f"the state file {path} is unusable: {e}. It must hold a checkpoint of this "
                "log signed by a pinned key (pin retired keys too); move it away only if "
                "you know why it is wrong"
            ) from e
        self.pins.origin = signed.origin
        return signed

    def _store(self, signed: SignedCheckpoint) -> None:
        """Persist (atomically, 0600) then adopt ``signed`` as the state."""
        path = self.state_path
        if path is not None:
            payload = orjson.dumps(
                {
                    "format": STATE_FORMAT,
                    "log": self.log,
                    "origin": signed.origin,
                    "tree_size": signed.tree_size,
                    "checkpoint": _text(signed),
                },
                option=orjson.OPT_INDENT_2,
            )
            _write_atomically(path, payload)
        self.state = signed


def _text(signed: SignedCheckpoint) -> str:
    return signed.to_bytes().decode()


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write via a 0600 temp file in the same directory, fsync, then ``os.replace``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o600)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
