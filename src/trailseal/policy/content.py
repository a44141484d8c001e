"""Content: bodies never sit in a leaf in clear (DESIGN §4, §5).

A leaf holds a salted HMAC-SHA256 commitment of the body under a per-tenant commitment
key. When capture is enabled for the log, the body is also sealed with AES-256-GCM under
the per-tenant content key and kept in the content store, apart from the log; the leaf
then carries its ``ref``. Destroying a tenant's keys (crypto-shredding) makes both the
stored bodies and the commitments unlinkable, while every proof still verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trailseal.errors import FormatError

KEY_SIZE = 32
SALT_SIZE = 16
NONCE_SIZE = 12


class TenantKeys:
    """A tenant's commitment and content keys. ``repr`` never shows them."""

    __slots__ = ("_commit", "_content")

    def __init__(self, commit_key: bytes, content_key: bytes) -> None:
        if len(commit_key) != KEY_SIZE or len(content_key) != KEY_SIZE:
            raise FormatError("tenant keys are 32 bytes each")
        self._commit = commit_key
        self._content = content_key

    @classmethod
    def generate(cls) -> TenantKeys:
        """Fresh random keys."""
        return cls(os.urandom(KEY_SIZE), os.urandom(KEY_SIZE))

    def to_bytes(self) -> bytes:
        """Both keys, for a 0600 key file."""
        return self._commit + self._content

    @classmethod
    def from_bytes(cls, data: bytes) -> TenantKeys:
        """Inverse of :meth:`to_bytes`."""
        if len(data) != 2 * KEY_SIZE:
            raise FormatError("a tenant key file holds 64 bytes")
        return cls(data[:KEY_SIZE], data[KEY_SIZE:])

    def commit(self, body: bytes, salt: bytes) -> bytes:
        """HMAC-SHA256(commit key, salt || body)."""
        return hmac.new(self._commit, salt + body, hashlib.sha256).digest()

    def seal(self, body: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """AES-256-GCM: ``(nonce, ciphertext)``."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce, AESGCM(self._content).encrypt(nonce, body, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt what :meth:`seal` produced; :class:`FormatError` if it was altered."""
        try:
            return AESGCM(self._content).decrypt(nonce, ciphertext, aad)
        except InvalidTag as e:
            raise FormatError("stored content failed authentication; it was altered") from e

    def __repr__(self) -> str:
        return "TenantKeys(***)"


@dataclass(frozen=True, slots=True)
class StoredBody:
    """An encrypted body for the content store."""

    ref: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class SealedContent:
    """What replaces ``content`` in the leaf, and the sealed body to store apart (if any)."""

    leaf_content: dict[str, object]
    stored: StoredBody | None


def seal_content(
    keys: TenantKeys, body: str, media_type: str | None, capture: bool, aad_prefix: bytes
) -> SealedContent:
    """Commit to a body and, when ``capture``, encrypt it for the content store."""
    data = body.encode()
    salt = os.urandom(SALT_SIZE)
    commitment = keys.commit(data, salt)
    leaf: dict[str, object] = {
        "commitment": "hmac-sha256:" + base64.b64encode(commitment).decode(),
        "salt": base64.b64encode(salt).decode(),
        "encrypted": capture,
        "ref": None,
    }
    if media_type:
        leaf["media_type"] = media_type
    if not capture:
        return SealedContent(leaf, None)
    ref = "c_" + secrets.token_urlsafe(18)
    nonce, ciphertext = keys.seal(data, aad_prefix + ref.encode())
    leaf["ref"] = ref
    return SealedContent(leaf, StoredBody(ref, nonce, ciphertext))


def check_commitment(keys: TenantKeys, body: bytes, leaf_content: dict[str, object]) -> bool:
    """Whether ``body`` is what the leaf's commitment commits to (constant time)."""
    try:
        salt = base64.b64decode(str(leaf_content["salt"]))
        expected = base64.b64decode(str(leaf_content["commitment"]).removeprefix("hmac-sha256:"))
    except (KeyError, ValueError) as e:
        raise FormatError("leaf content has no valid commitment") from e
    return hmac.compare_digest(keys.commit(body, salt), expected)
