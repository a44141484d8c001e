"""Offline receipts in the ``c2sp.org/tlog-proof@v1`` format.

::

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <decimal>
    <base64 proof hash>...

    <signed checkpoint, verbatim>

Everything needed to check, years later and offline, that an entry is in a log: the
index, the RFC 9162 inclusion proof and the signed checkpoint it proves into.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trailseal.core.checkpoint import SignedCheckpoint, verify_checkpoint
from trailseal.core.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from trailseal.core.note import NoteVerifier, b64decode, b64encode
from trailseal.errors import FormatError

RECEIPT_HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True, slots=True)
class Receipt:
    """An index, its inclusion proof and the signed checkpoint it proves into."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def to_text(self) -> str:
        """The receipt text (store it with the ``.tlog-proof`` extension)."""
        lines = [RECEIPT_HEADER]
        if self.extra is not None:
            lines.append("extra " + b64encode(self.extra))
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint.decode()

    @classmethod
    def from_text(cls, text: str) -> Receipt:
        """Parse a receipt, strictly; signatures are checked by :func:`verify_receipt`."""
        head, sep, checkpoint = text.partition("\n\n")
        if not sep:
            raise FormatError("receipt has no blank line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != RECEIPT_HEADER:
            raise FormatError(f"receipt does not start with {RECEIPT_HEADER!r}")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = b64decode(lines[pos][6:], "receipt extra data")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise FormatError("receipt has no index line")
        index_text = lines[pos][6:]
        if (
            not index_text.isascii()
            or not index_text.isdigit()
            or (index_text != "0" and index_text.startswith("0"))
        ):
            raise FormatError(f"receipt index {index_text!r} is not a plain decimal")
        proof = []
        for i, line in enumerate(lines[pos + 1 :]):
            h = b64decode(line, f"receipt proof hash {i}")
            if len(h) != HASH_SIZE:
                raise FormatError(f"receipt proof hash {i} is {len(h)} bytes, not {HASH_SIZE}")
            proof.append(h)
        if not checkpoint:
            raise FormatError("receipt has no checkpoint")
        return cls(int(index_text), tuple(proof), checkpoint.encode(), extra)


def verify_receipt(
    receipt: Receipt,
    verifiers: Iterable[NoteVerifier],
    *,
    origin: str,
    entry: bytes | None = None,
    entry_leaf_hash: bytes | None = None,
) -> SignedCheckpoint:
    """Check a receipt offline: trusted signature, origin, and inclusion of the entry.

    Give either the entry's exact bytes or its leaf hash. Returns the verified checkpoint.
    """
    if (entry is None) == (entry_leaf_hash is None):
        raise ValueError("give exactly one of entry and entry_leaf_hash")
    leaf = leaf_hash(entry) if entry is not None else entry_leaf_hash
    assert leaf is not None
    signed = verify_checkpoint(receipt.checkpoint, verifiers, origin)
    verify_inclusion(leaf, receipt.index, signed.tree_size, receipt.proof, signed.root_hash)
    return signed
