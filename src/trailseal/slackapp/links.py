"""Report download links: an Ed25519-signed token per request, per user, with an expiry.

``token = base64url(rid "|" user "|" expires) "." key_id "." base64url(signature)``, the
signature being Ed25519 over the message bytes (before base64). Every node signs with a
key of its own, ``<data dir>/keys/slackapp-links.ed25519`` (0600, made on first use; a
C2SP signer key string like the logs' key files), and registers its public key in the
service registry (:meth:`~trailseal.service.registry.Registry.add_link_key`) when the app
starts. ``key_id`` is the hex of the first 8 bytes of SHA-256 of the raw public key, so a
checker that is handed a token knows which key to ask the registry for: behind a load
balancer a link made on one node is honoured by every node sharing the registry, and
nothing secret is stored in it. Whoever can only read the registry cannot mint links;
whoever may INSERT into it (the service role) can register a key of their own and could.

A public key read from the registry is remembered for :data:`KEY_CACHE_S`, then read
again: a key whose row the schema owner deleted (revoked) stops being honoured within
that time. A node trusts its own key without asking. The file suffix is not ``.key`` on
purpose: operators drop a read-only node's signing keys with ``rm keys/*.key``, which
must not take the link key along. The token names the user it was issued to, so the
download event in the log says who fetched the report.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trailseal.core.note import NoteSigner
from trailseal.errors import ConfigError, Error, ForbiddenError, FormatError
from trailseal.service.registry import Registry

LOGGER = logging.getLogger("trailseal.slackapp")

KEY_FILE = "slackapp-links.ed25519"
"""A node's link signing key, in its keys directory."""

KEY_NAME = "slackapp-links"
"""The key name in the C2SP signer key string of :data:`KEY_FILE`."""

KEY_CACHE_S = 60.0
"""How long a public key read from the registry is honoured before it is read again."""

_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_NOT_VALID = "the download link is not valid"


class LinkExpiredError(Error):
    """A download token that was valid but is past its expiry (HTTP 410)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: ``user`` may fetch the files of ``rid``."""

    rid: str
    user: str
    expires: int


def link_key_id(public_key: bytes) -> str:
    """The id of a link key: hex of the first 8 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).digest()[:8].hex()


class LinkKey:
    """A node's link signing key. Its ``repr`` never shows the key."""

    __slots__ = ("_signer", "key_id", "public_key")

    def __init__(self, signer: NoteSigner) -> None:
        self._signer = signer
        self.public_key = signer.verifier.public_key
        self.key_id = link_key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature over ``message``."""
        return self._signer.sign(message)

    def __repr__(self) -> str:
        return f"LinkKey(key_id={self.key_id}, key=***)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    # validate=True: characters outside the alphabet are an error, not skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _write_new(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (0600) unless it exists; False when it did.

    The key is written and synced under a temporary name first, then linked into place
    (which, like ``O_EXCL``, fails if the name exists): a process starting at the same
    moment reads either no file or a whole one, never a half-written key.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def load_key(keys_dir: Path) -> LinkKey:
    """The node's link key, created (0600) on first use; refused if others can read it."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = keys_dir / KEY_FILE
    if not path.exists():
        signer = NoteSigner.generate(KEY_NAME)
        if _write_new(path, signer.to_string() + "\n"):
            return LinkKey(signer)
        # Another process on this data directory made it first: use theirs.
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
        )
    try:
        return LinkKey(NoteSigner.from_string(path.read_text()))
    except (FormatError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is not a valid link key ({e}); delete it and restart to make a new one "
            "(links made with the old key stop working)"
        ) from e


def register_key(registry: Registry, key: LinkKey, at: str) -> None:
    """Register the node's public key, so that every node sharing ``registry`` checks
    the links it makes. Idempotent: a restart finds its row and changes nothing."""
    registry.add_link_key(key.key_id, key.public_key, at)
    LOGGER.info("download-link key registered", extra={"key_id": key.key_id})


class DownloadLinks:
    """Issues tokens with the node's key and checks tokens of any registered key.

    ``monotonic`` times the cache of public keys read from ``registry`` (see
    :data:`KEY_CACHE_S`); only keys found are remembered.
    """

    def __init__(
        self,
        key: LinkKey,
        registry: Registry,
        public_url: str,
        *,
        cache_s: float = KEY_CACHE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._own = Ed25519PublicKey.from_public_bytes(key.public_key)
        self._registry = registry
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[Ed25519PublicKey, float]] = {}
        self._lock = threading.Lock()
        self.public_url = public_url.rstrip("/")

    def __repr__(self) -> str:
        return f"DownloadLinks(key_id={self._key.key_id}, key=***)"

    def token(self, rid: str, user: str, expires: int) -> str:
        """A token letting ``user`` fetch ``rid``'s files until ``expires`` (Unix time)."""
        message = f"{rid}|{user}|{expires}".encode()
        return f"{_b64(message)}.{self._key.key_id}.{_b64(self._key.sign(message))}"

    def url(self, rid: str, user: str, expires: int, file_name: str) -> str:
        """The absolute URL of one file."""
        token = self.token(rid, user, expires)
        return f"{self.public_url}/slack/reports/{quote(rid)}/{quote(file_name)}?token={token}"

    def _public_key(self, key_id: str) -> Ed25519PublicKey | None:
        if key_id == self._key.key_id:
            return self._own
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < self._cache_s:
            return cached[0]
        raw = self._registry.link_key(key_id)
        # A row whose key is not the one its id names was not written by a node.
        if raw is None or len(raw) != 32 or link_key_id(raw) != key_id:
            with self._lock:
                self._cache.pop(key_id, None)
            return None
        public_key = Ed25519PublicKey.from_public_bytes(raw)
        with self._lock:
            self._cache[key_id] = (public_key, now)
        return public_key

    def check(self, rid: str, token: str, now_s: float) -> Grant:
        """The grant a token carries; ForbiddenError when forged, signed by a key that is
        not registered (or no longer), or for another request; LinkExpiredError when
        past its expiry (checked after the signature, so an expiry message is never
        given for a forged token). May read the registry: call it off the event loop."""
        parts = token.split(".")
        if len(parts) != 3 or not _KEY_ID.match(parts[1]):
            raise ForbiddenError(_NOT_VALID)
        try:
            message, signature = _unb64(parts[0]), _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise ForbiddenError(_NOT_VALID) from None
        public_key = self._public_key(parts[1])
        if public_key is None:
            raise ForbiddenError(_NOT_VALID)
        try:
            public_key.verify(signature, message)
        except InvalidSignature:
            raise ForbiddenError(_NOT_VALID) from None
        try:
            token_rid, user, expires_text = message.decode().split("|")
            expires = int(expires_text)
        except ValueError:
            raise ForbiddenError(_NOT_VALID) from None
        if not hmac.compare_digest(token_rid.encode(), rid.encode()):
            raise ForbiddenError("the download link is for another request")
        if now_s >= expires:
            raise LinkExpiredError(
                "the download link has expired; open the app's Home tab in Slack for a new one"
            )
        return Grant(token_rid, user, expires)
