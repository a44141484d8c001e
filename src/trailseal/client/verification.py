"""Checking the server's answers: :class:`Pins` holds the verifier keys and the origin
the client pins, and checks against them what the server signs (checkpoints, receipts)
and serves (an entry must hash to its leaf hash); :class:`Answers` parses answers into
results, checked so.

Any failure raises :class:`trailseal.errors.VerificationError`: the server lied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trailseal.client.errors import ClientProtocolError
from trailseal.client.results import AppendReceipt, Entry, LogKeys, _get
from trailseal.core.canonical import canonicalize
from trailseal.core.checkpoint import SignedCheckpoint, parse_signed_checkpoint, verify_checkpoint
from trailseal.core.merkle import leaf_hash
from trailseal.core.note import NoteVerifier, b64decode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.errors import (
    ConfigError,
    EntryError,
    Error,
    FormatError,
    TamperError,
    VerificationError,
)


class Pins:
    """The pinned verifier keys (none: nothing is verified) and origin.

    The origin is the one given, or the one of the state file, or else the first verified
    checkpoint's, which is then pinned.
    """

    def __init__(self, verifier_keys: Sequence[str] | None, origin: str | None) -> None:
        self.verifiers: tuple[NoteVerifier, ...] = ()
        if verifier_keys is not None:
            if isinstance(verifier_keys, str):
                raise TypeError("verifier_keys is a list of key strings, not one string")
            if not verifier_keys:
                raise ConfigError("verifier_keys is empty: pin at least one key, or pass None")
            self.verifiers = tuple(NoteVerifier.from_string(k) for k in verifier_keys)
        self.origin = origin
        self._origin_lock = threading.Lock()

    def lie(self, message: str) -> Error:
        """A wrong answer: a VerificationError when keys are pinned, else a protocol error."""
        if self.verifiers:
            return VerificationError(message + "; the server's answer cannot be trusted")
        return ClientProtocolError(message)

    def pinned_origin(self, checkpoint: bytes) -> str:
        with self._origin_lock:
            if self.origin is None:
                self.origin = verify_checkpoint(checkpoint, self.verifiers).origin
            return self.origin

    def verify_checkpoint(self, data: bytes) -> SignedCheckpoint:
        try:
            return verify_checkpoint(data, self.verifiers, self.pinned_origin(data))
        except FormatError as e:
            raise VerificationError(f"the server's checkpoint is malformed: {e}") from None

    def check_leaf(self, index: int, leaf: bytes, record: dict[str, Any]) -> None:
        try:
            expected = leaf_hash(canonicalize(record))
        except EntryError as e:
            raise VerificationError(f"entry {index} has no canonical form: {e}") from None
        if expected != leaf:
            raise TamperError(
                f"the server's leaf hash for entry {index} is not the hash of the entry it "
                "served; the server's answer cannot be trusted",
                index=index,
                expected=expected,
                found=leaf,
            )

    def check_receipt(
        self, text: str, index: int, leaf: bytes
    ) -> tuple[Receipt, SignedCheckpoint | None]:
        """The parsed receipt and, with pinned keys, the verified checkpoint it proves into."""
        try:
            receipt = Receipt.from_text(text)
        except FormatError as e:
            raise self.lie(f"the receipt for index {index} is malformed: {e}") from None
        if not self.verifiers:
            return receipt, None
        if receipt.index != index:
            raise VerificationError(
                f"the receipt is for index {receipt.index}, the answer says index {index}; "
                "the server's answer cannot be trusted"
            )
        try:
            signed = verify_receipt(
                receipt,
                self.verifiers,
                origin=self.pinned_origin(receipt.checkpoint),
                entry_leaf_hash=leaf,
            )
        except FormatError as e:
            raise VerificationError(f"the receipt's checkpoint is malformed: {e}") from None
        return receipt, signed


class Answers:
    """Turns the server's answers into results, checked with the :class:`Pins`; every
    verified checkpoint a receipt proves into is shown to ``observe`` (the consistency
    check)."""

    def __init__(self, pins: Pins, observe: Callable[[SignedCheckpoint], None]) -> None:
        self._pins = pins
        self._observe = observe

    def append_receipt(self, data: Any, sent: Mapping[str, Any]) -> AppendReceipt:
        try:
            event_id = _get(data, "id", str)
            source = _get(data, "source", str)
            index = _get(data, "index", int)
            leaf = b64decode(_get(data, "leaf_hash", str), "leaf hash")
            tree_size = _get(data, "tree_size", int)
            status = _get(data, "status", str)
            text = _get(data, "receipt", str)
        except FormatError as e:
            raise self._pins.lie(f"malformed append result: {e}") from None
        if event_id != sent["id"] or ("source" in sent and source != sent["source"]):
            raise self._pins.lie(
                f"the server answered for event ({source!r}, {event_id!r}) instead of "
                f"({sent.get('source', 'api')!r}, {sent['id']!r})"
            )
        receipt, checkpoint = self.receipt(text, index, leaf)
        return AppendReceipt(
            event_id, source, index, leaf, tree_size, status, receipt, text, checkpoint
        )

    def batch_receipts(
        self, data: dict[str, Any], chunk: list[dict[str, Any]]
    ) -> list[AppendReceipt]:
        results = data.get("results")
        if not isinstance(results, list) or len(results) != len(chunk):
            raise self._pins.lie(
                f"the batch of {len(chunk)} events was answered with "
                f"{len(results) if isinstance(results, list) else 'no'} results"
            )
        return [self.append_receipt(r, e) for r, e in zip(results, chunk, strict=True)]

    def check_hit(self, hit: Any) -> None:
        try:
            index = _get(hit, "index", int)
            leaf = b64decode(_get(hit, "leaf_hash", str), "leaf hash")
            record = _get(hit, "entry", dict)
        except FormatError as e:
            raise self._pins.lie(f"malformed search hit: {e}") from None
        self._pins.check_leaf(index, leaf, record)

    def entry(self, data: dict[str, Any]) -> Entry:
        try:
            index = _get(data, "index", int)
            leaf = b64decode(_get(data, "leaf_hash", str), "leaf hash")
            record = _get(data, "entry", dict)
            text = _get(data, "receipt", str)
        except FormatError as e:
            raise self._pins.lie(f"malformed entry answer: {e}") from None
        if self._pins.verifiers:
            self._pins.check_leaf(index, leaf, record)
        receipt, checkpoint = self.receipt(text, index, leaf)
        return Entry(index, leaf, record, receipt, text, checkpoint)

    def log_keys(self, data: dict[str, Any]) -> LogKeys:
        try:
            origin = _get(data, "origin", str)
            keys = _get(data, "verifier_keys", list)
        except FormatError as e:
            raise ClientProtocolError(f"malformed keys answer: {e}") from None
        if not all(isinstance(k, str) for k in keys):
            raise ClientProtocolError("malformed keys answer: a key is not a string")
        return LogKeys(origin, tuple(keys))

    def checkpoint(self, data: bytes) -> SignedCheckpoint:
        """Verified if keys are pinned, merely parsed otherwise."""
        if not self._pins.verifiers:
            try:
                return parse_signed_checkpoint(data)
            except FormatError as e:
                raise ClientProtocolError(f"malformed checkpoint: {e}") from None
        return self._pins.verify_checkpoint(data)

    def receipt(
        self, text: str, index: int, leaf: bytes
    ) -> tuple[Receipt, SignedCheckpoint | None]:
        """The parsed receipt and, with pinned keys, the verified checkpoint it proves into
        (then checked for consistency)."""
        receipt, signed = self._pins.check_receipt(text, index, leaf)
        if signed is not None:
            self._observe(signed)
        return receipt, signed
