"""What the client returns (:class:`AppendReceipt`, :class:`Entry`, :class:`LogKeys`), and
``_get``, which reads one typed field of the server's JSON answers they are parsed from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trailseal.core.checkpoint import SignedCheckpoint
from trailseal.core.receipt import Receipt
from trailseal.errors import FormatError


@dataclass(frozen=True, slots=True)
class AppendReceipt:
    """What the server answered for one event, with its (verified, if keys are pinned)
    ``c2sp.org/tlog-proof@v1`` receipt.

    ``status`` is ``appended``, ``duplicate`` (a retry of a stored event) or, from a batch,
    ``conflict`` (the id was stored with other content; index and receipt are the
    original's).
    """

    id: str
    source: str
    index: int
    leaf_hash: bytes
    tree_size: int
    status: str
    receipt: Receipt
    receipt_text: str
    checkpoint: SignedCheckpoint | None
    """The verified checkpoint the receipt proves into; None when no keys are pinned."""

    @property
    def verified(self) -> bool:
        """Whether the receipt was verified against pinned keys."""
        return self.checkpoint is not None


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored record with its index, leaf hash and receipt into the latest checkpoint."""

    index: int
    leaf_hash: bytes
    record: dict[str, Any]
    receipt: Receipt
    receipt_text: str
    checkpoint: SignedCheckpoint | None
    """The verified checkpoint the receipt proves into; None when no keys are pinned."""

    @property
    def verified(self) -> bool:
        """Whether the receipt and the record's leaf hash were verified."""
        return self.checkpoint is not None


@dataclass(frozen=True, slots=True)
class LogKeys:
    """A log's origin and every verifier key that ever signed for it."""

    origin: str
    verifier_keys: tuple[str, ...]


def _get(data: Any, name: str, kind: type[Any]) -> Any:
    if not isinstance(data, dict):
        raise FormatError("the answer is not a JSON object")
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"field {name!r} is missing or not a {kind.__name__}")
    return value
