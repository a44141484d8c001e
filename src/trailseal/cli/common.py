"""What every command shares: exit codes, opening the data directory, progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from trailseal import settings
from trailseal.core.note import NoteVerifier
from trailseal.datadir import DataDir
from trailseal.errors import (
    ConfigError,
    EntryError,
    Error,
    FormatError,
    InconsistencyError,
    NotFoundError,
    ProofError,
    SignatureError,
    StorageError,
    TamperError,
)

EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_USAGE = 2
EXIT_BAD_SIGNATURE = 3
EXIT_INCONSISTENT = 4
EXIT_MISSING = 5
EXIT_NOT_FOUND = 6
EXIT_INPUT = 7
EXIT_CONFIG = 8
EXIT_STORAGE = 9

EXIT_CODES = {
    EXIT_OK: "success; for verify commands, everything verified",
    EXIT_TAMPERED: "verification failed: an entry, tile, proof or root does not match",
    EXIT_USAGE: "the command line is wrong (see --help)",
    EXIT_BAD_SIGNATURE: "a checkpoint is not validly signed by a trusted key",
    EXIT_INCONSISTENT: "two checkpoints contradict each other (a fork or rollback)",
    EXIT_MISSING: "entries are missing (deleted, or the tail truncated)",
    EXIT_NOT_FOUND: "no such log, entry, index, checkpoint or file",
    EXIT_INPUT: "the input is malformed (JSON, entry, key, checkpoint, bundle)",
    EXIT_CONFIG: "the data directory, a key file or a setting is missing or unsafe",
    EXIT_STORAGE: "the database failed; nothing was acknowledged",
}

_BY_CLASS: list[tuple[type[Error], int]] = [
    (InconsistencyError, EXIT_INCONSISTENT),
    (SignatureError, EXIT_BAD_SIGNATURE),
    (TamperError, EXIT_TAMPERED),
    (ProofError, EXIT_TAMPERED),
    (NotFoundError, EXIT_NOT_FOUND),
    (FormatError, EXIT_INPUT),
    (EntryError, EXIT_INPUT),
    (ConfigError, EXIT_CONFIG),
    (StorageError, EXIT_STORAGE),
]


def exit_code_for(error: Error) -> int:
    """The exit status for a library error."""
    for cls, code in _BY_CLASS:
        if isinstance(error, cls):
            return code
    return EXIT_CONFIG


@dataclass
class Context:
    """Global options, resolved once."""

    data_dir: Path
    log: str | None
    settings: settings.Settings


@contextmanager
def open_data_dir(ctx: Context) -> Iterator[DataDir]:
    """Open the data directory for the length of a command."""
    data_dir = DataDir.open(ctx.data_dir)
    try:
        yield data_dir
    finally:
        data_dir.close()


def resolve_context(data_dir: Path | None, log: str | None) -> Context:
    """Command-line options win over the environment (read only in :mod:`settings`)."""
    s = settings.load(data_dir=data_dir)
    return Context(s.data_dir, log or s.log, s)


def parse_verifier_keys(keys: tuple[str, ...], key_files: tuple[Path, ...]) -> list[NoteVerifier]:
    """Verifier keys from ``--key`` strings and ``--key-file`` files (one key a line)."""
    texts = list(keys)
    for path in key_files:
        try:
            texts += [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise ConfigError(f"cannot read key file {path}: {e}") from e
    if not texts:
        raise click.UsageError("give the log's verifier key with --key or --key-file")
    return [NoteVerifier.from_string(t) for t in texts]


@contextmanager
def progress(length: int | None, label: str) -> Iterator[Any]:
    """A progress bar on stderr (only the label when stderr is not a terminal)."""
    if length is None or length <= 0:
        yield _NoBar()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar


class _NoBar:
    def update(self, n: int) -> None:
        """No total to show progress against."""
        del n


pass_context = click.make_pass_decorator(Context)
