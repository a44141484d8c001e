"""Copying a log's signer key files into another data directory (``copy-log --keys-to``).

A copied log can be verified with its verifier keys alone; appending to it needs the
signer keys too. They live only in the data directory (``keys/<log>.<key id>.key``, see
:mod:`trailseal.datadir`), never in a store, so moving a log to another store and
another data directory means copying these files as well.

Each file is read through :meth:`DataDir.load_signer` (which refuses a file others can
read, or one that is not the key the log records) and written with ``O_EXCL`` at 0600
into a ``keys/`` folder at 0700. An existing file with the same key is left alone; one
with another key is refused, never overwritten. Key material is never printed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from trailseal.core.note import NoteSigner, NoteVerifier
from trailseal.datadir import KEYS_DIR, DataDir
from trailseal.errors import ConfigError, FormatError
from trailseal.storage.base import KeyEvent, LogInfo


@dataclass(frozen=True, slots=True)
class KeyFileCopy:
    """What happened to one key file."""

    key_id: int
    active: bool
    path: Path
    """The destination file (or, when ``status`` is ``missing``, the source file)."""
    status: str  # "copied" | "already there" | "missing"


def key_file_name(log_name: str, key_id: int) -> str:
    """The file name a data directory gives a log's signer key."""
    return f"{log_name}.{key_id:08x}.key"


def _active(events: list[KeyEvent]) -> dict[str, bool]:
    states: dict[str, bool] = {}
    for ev in events:
        if ev.event == "added":
            states.setdefault(ev.verifier, True)
        elif ev.event == "retired" and ev.verifier in states:
            states[ev.verifier] = False
    return states


def _keys_dir(dest_dir: Path) -> Path:
    keys = dest_dir / KEYS_DIR
    if keys.exists():
        mode = keys.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{keys} is open to others (mode {stat.S_IMODE(mode):04o}); "
                f"run `chmod 700 {keys}` before copying signing keys into it"
            )
        return keys
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys.mkdir(mode=0o700)
    return keys


def _existing(path: Path) -> NoteSigner:
    try:
        return NoteSigner.from_string(path.read_text())
    except (OSError, UnicodeDecodeError, FormatError) as e:
        raise ConfigError(
            f"{path} already exists and is not a readable signer key ({type(e).__name__}); "
            "move it away, then run copy-log again"
        ) from e


def copy_key_files(
    data_dir: DataDir, log: LogInfo, events: list[KeyEvent], dest_dir: Path
) -> list[KeyFileCopy]:
    """Copy the signer key of every verifier key in ``events`` (the log's key history)
    from ``data_dir`` into ``dest_dir/keys``. A key whose file the data directory lacks
    (a retired key that was deleted, say) is reported as ``missing``."""
    out: list[KeyFileCopy] = []
    keys_dir: Path | None = None
    for text, active in _active(events).items():
        verifier = NoteVerifier.from_string(text)
        name = key_file_name(log.name, verifier.key_id)
        source = data_dir.path / KEYS_DIR / name
        if not source.exists():
            out.append(KeyFileCopy(verifier.key_id, active, source, "missing"))
            continue
        signer = data_dir.load_signer(log, verifier)
        keys_dir = keys_dir or _keys_dir(dest_dir)
        target = keys_dir / name
        if target.exists():
            if _existing(target).verifier != verifier:
                raise ConfigError(
                    f"{target} already exists and holds another key than log {log.name!r}'s "
                    f"key {verifier.key_id:08x}; it was not overwritten. Move it away, then "
                    "run copy-log again"
                )
            out.append(KeyFileCopy(verifier.key_id, active, target, "already there"))
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(signer.to_string() + "\n")
            f.flush()
            os.fsync(f.fileno())
        out.append(KeyFileCopy(verifier.key_id, active, target, "copied"))
    return out
