"""C2SP signed notes with Ed25519 keys (c2sp.org/signed-note).

A note is UTF-8 text ending in a newline, a blank line, then one or more signature
lines ``— <key name> base64(key ID || signature)``. The key ID of an Ed25519 key is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``.

Key strings follow the golang.org/x/mod/sumdb/note encoding that the transparency
ecosystem uses: verifier ``<name>+<hex key ID>+base64(0x01 || public key)`` and signer
``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || private seed)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from trailseal.errors import FormatError, SignatureError

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "
MAX_SIGNATURES = 100
"""The spec asks verifiers to accept at least 16; we accept this many and no more."""
MAX_NOTE_SIZE = 1 << 20


def b64encode(data: bytes) -> str:
    """Standard base64 (RFC 4648 §4), as every C2SP format uses."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict, canonical standard base64, raising :class:`FormatError` that names ``what``.

    Python's decoder ignores excess padding (``AAAA=``) and non-zero padding bits, so
    one value would have several spellings; only the one :func:`b64encode` writes passes.
    """
    try:
        raw = text.encode("ascii")
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise FormatError(f"{what} is not valid base64") from e
    if base64.b64encode(data) != raw:
        raise FormatError(f"{what} is not valid base64 (not in canonical form)")
    return data


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise FormatError(f"key name {name!r} must be non-empty, without spaces or '+'")


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || alg || public key)[:4]`` as a big-endian integer."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted public key: its name, key ID and Ed25519 public key bytes."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key ID>+base64(0x01 || public key)``."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise FormatError("a verifier key reads <name>+<hex key ID>+<base64 key>")
        name, hex_id, b64 = parts
        _check_key_name(name)
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise FormatError("the key ID of a verifier key is 8 lowercase hex digits")
        kid = int(hex_id, 16)
        raw = b64decode(b64, "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise FormatError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
        if key_id(name, ALG_ED25519, raw[1:]) != kid:
            raise FormatError(f"verifier key for {name} has a key ID that does not match it")
        return cls(name, kid, raw[1:])

    def to_string(self) -> str:
        """The verifier key string."""
        return f"{self.name}+{self.key_id:08x}+{b64encode(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature over ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True


class NoteSigner:
    """An Ed25519 private key with its name. Its ``repr`` never shows the key."""

    __slots__ = ("_key", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._key = private_key
        public = private_key.public_key().public_bytes_raw()
        self.verifier = NoteVerifier(name, key_id(name, ALG_ED25519, public), public)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A new random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_string(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)``."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise FormatError("a signer key reads PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
        _, _, name, hex_id, b64 = parts
        raw = b64decode(b64, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise FormatError("only Ed25519 signer keys (type 0x01, 32 bytes) are supported")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if f"{signer.verifier.key_id:08x}" != hex_id.lower():
            raise FormatError(f"signer key for {name} has a key ID that does not match it")
        return signer

    def to_string(self) -> str:
        """The signer key string; write it only to a 0600 file."""
        seed = self._key.private_bytes_raw()
        kid = f"{self.verifier.key_id:08x}"
        return f"PRIVATE+KEY+{self.name}+{kid}+{b64encode(bytes([ALG_ED25519]) + seed)}"

    @property
    def key_id(self) -> int:
        """The key ID of this key."""
        return self.verifier.key_id

    def sign(self, text: bytes) -> bytes:
        """Ed25519 signature over the note text."""
        return self._key.sign(text)

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x}, key=***)"


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, key ID and signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def to_line(self) -> str:
        """``— <name> base64(key ID || signature)`` plus newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(blob)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A note text and its signatures."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        """The signed note as UTF-8 bytes."""
        return (self.text + "\n" + "".join(s.to_line() for s in self.signatures)).encode()


def sign_note(text: str, signers: Sequence[NoteSigner]) -> Note:
    """Sign ``text`` (which must end in a newline) with every signer."""
    _check_text(text)
    if not signers:
        raise SignatureError("a note needs at least one signer")
    data = text.encode()
    sigs = tuple(NoteSignature(s.name, s.key_id, s.sign(data)) for s in signers)
    return Note(text, sigs)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise FormatError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise FormatError("note text must not contain control characters other than newline")


def parse_note(data: bytes) -> Note:
    """Split a signed note into text and signatures; checks form, not signatures."""
    if len(data) > MAX_NOTE_SIZE:
        raise FormatError(f"note is larger than {MAX_NOTE_SIZE} bytes")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError("note is not valid UTF-8") from e
    _check_text(whole)
    split = whole.rfind("\n\n")
    if split < 0:
        raise FormatError("note has no blank line before its signatures")
    text, sig_block = whole[: split + 1], whole[split + 2 :]
    lines = sig_block.split("\n")
    if lines[-1] != "" or len(lines) < 2:
        raise FormatError("note signatures must each end with a newline")
    sigs: list[NoteSignature] = []
    for line in lines[:-1]:
        if not line.startswith(SIGNATURE_PREFIX):
            raise FormatError("signature line does not start with '\u2014 '")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        _check_key_name(name)
        blob = b64decode(b64, f"signature of {name}")
        if len(blob) < 5:
            raise FormatError(f"signature of {name} is too short")
        sigs.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise FormatError(f"note has more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(sigs))


def open_note(data: bytes, verifiers: Iterable[NoteVerifier]) -> tuple[Note, list[NoteVerifier]]:
    """Parse a note and verify it against trusted keys (c2sp.org/signed-note §Signatures).

    Signatures from unknown keys are ignored; a known key whose signature fails rejects
    the note; at least one known key must sign. Returns the note and the keys that signed.
    """
    note = parse_note(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    text = note.text.encode()
    signed_by: list[NoteVerifier] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if (sig.name, sig.key_id) in seen:
            raise SignatureError(f"note is signed twice by {sig.name} ({sig.key_id:08x})")
        seen.add((sig.name, sig.key_id))
        if not v.verify(text, sig.signature):
            raise SignatureError(f"signature by {sig.name} ({sig.key_id:08x}) does not verify")
        signed_by.append(v)
    if not signed_by:
        names = ", ".join(f"{s.name} ({s.key_id:08x})" for s in note.signatures) or "nobody"
        raise SignatureError(f"note is not signed by a trusted key; it is signed by {names}")
    return note, signed_by
