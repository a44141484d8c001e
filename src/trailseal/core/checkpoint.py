"""C2SP tlog-checkpoint: the signed statement of a log's size and root hash.

The note text is ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` followed by optional
non-empty extension lines (c2sp.org/tlog-checkpoint). The signatures are a C2SP signed
note (:mod:`trailseal.core.note`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trailseal.core.merkle import HASH_SIZE
from trailseal.core.note import (
    Note,
    NoteSigner,
    NoteVerifier,
    b64decode,
    b64encode,
    open_note,
    parse_note,
    sign_note,
)
from trailseal.errors import FormatError, SignatureError


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The body of a checkpoint: origin, tree size, root hash and extension lines."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        """The exact note text."""
        lines = [self.origin, str(self.tree_size), b64encode(self.root_hash), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body, strictly."""
        if not text.endswith("\n"):
            raise FormatError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError("checkpoint needs origin, tree size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise FormatError("checkpoint origin is empty")
        if (
            not size_text.isascii()
            or not size_text.isdigit()
            or (size_text != "0" and size_text.startswith("0"))
        ):
            raise FormatError(f"checkpoint tree size {size_text!r} is not a plain decimal")
        root = b64decode(root_text, "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise FormatError(f"checkpoint root hash is {len(root)} bytes, not {HASH_SIZE}")
        if any(not line for line in extensions):
            raise FormatError("checkpoint extension lines must not be empty")
        return cls(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with the signed note that carries it."""

    checkpoint: Checkpoint
    note: Note

    def to_bytes(self) -> bytes:
        """The signed note bytes, as served at ``/checkpoint``."""
        return self.note.to_bytes()

    @property
    def origin(self) -> str:
        """The log's identity."""
        return self.checkpoint.origin

    @property
    def tree_size(self) -> int:
        """How many leaves the checkpoint commits to."""
        return self.checkpoint.tree_size

    @property
    def root_hash(self) -> bytes:
        """The RFC 9162 root hash at ``tree_size``."""
        return self.checkpoint.root_hash


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> SignedCheckpoint:
    """Sign a checkpoint with every signer (key rotation: old and new co-sign)."""
    return SignedCheckpoint(checkpoint, sign_note(checkpoint.to_text(), signers))


def parse_signed_checkpoint(data: bytes) -> SignedCheckpoint:
    """Parse a signed checkpoint without checking its signatures."""
    note = parse_note(data)
    return SignedCheckpoint(Checkpoint.from_text(note.text), note)


def verify_checkpoint(
    data: bytes, verifiers: Iterable[NoteVerifier], origin: str | None = None
) -> SignedCheckpoint:
    """Parse a checkpoint, check a trusted key signed it and, if given, its origin."""
    note, _ = open_note(data, verifiers)
    checkpoint = Checkpoint.from_text(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise SignatureError(f"checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}")
    return SignedCheckpoint(checkpoint, note)
