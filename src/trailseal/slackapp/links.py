"""Report download links: an HMAC-SHA256 token per request, per user, with an expiry.

``token = base64url(rid "|" user "|" expires) "." base64url(HMAC(key, same bytes))``.
The key is 32 random bytes. On one node it is ``<data dir>/keys/slackapp-links.key``
(0600), made on first use; deleting it invalidates every link. Nodes sharing a PostgreSQL
store share one key instead, the registry's secret :data:`LINKS_SECRET`
(:func:`shared_key`), so that a link made on one node is honoured by every other; whoever
can read the schema can then mint links, but could read the reports there anyway. The
token names the user it was issued to, so the download event in the log says who
fetched the report.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from trailseal.errors import ConfigError, Error, ForbiddenError
from trailseal.service.registry import Registry

KEY_FILE = "slackapp-links.key"
"""The link key of a node whose store is its own, in its keys directory."""

LINKS_SECRET = "slackapp-links"  # noqa: S105 (the name of a secret, not one)
"""The name of the link key in the registry of a shared store."""


class LinkExpiredError(Error):
    """A download token that was valid but is past its expiry (HTTP 410)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: ``user`` may fetch the files of ``rid``."""

    rid: str
    user: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(keys_dir: Path) -> bytes:
    """The link key, created (0600) on first use; refused if others can read it."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = keys_dir / KEY_FILE
    if path.exists():
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} is readable by others; run `chmod 600 {path}`")
        return path.read_bytes()
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def shared_key(registry: Registry, keys_dir: Path, at: str) -> bytes:
    """The link key of nodes sharing a store: one secret in their shared registry.

    The first node to start stores it, the others read it (see
    :meth:`~trailseal.service.registry.Registry.shared_secret`). A node that already
    has a key file, from before the key was shared, offers that key, so that the links
    it issued keep working if it is first; no key file is made.
    """
    initial = load_key(keys_dir) if (keys_dir / KEY_FILE).exists() else None
    return registry.shared_secret(LINKS_SECRET, at, initial=initial)


class DownloadLinks:
    """Issues and checks download tokens."""

    def __init__(self, key: bytes, public_url: str) -> None:
        self._key = key
        self.public_url = public_url.rstrip("/")

    def __repr__(self) -> str:
        return "DownloadLinks(key=***)"

    def token(self, rid: str, user: str, expires: int) -> str:
        """A token letting ``user`` fetch ``rid``'s files until ``expires`` (Unix time)."""
        message = f"{rid}|{user}|{expires}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return f"{_b64(message)}.{_b64(mac)}"

    def url(self, rid: str, user: str, expires: int, file_name: str) -> str:
        """The absolute URL of one file."""
        token = self.token(rid, user, expires)
        return f"{self.public_url}/slack/reports/{quote(rid)}/{quote(file_name)}?token={token}"

    def check(self, rid: str, token: str, now_s: float) -> Grant:
        """The grant a token carries; ForbiddenError when forged or for another request,
        LinkExpiredError when past its expiry (checked after the MAC, so an expiry
        message is never given for a forged token)."""
        message_part, _, mac_part = token.partition(".")
        try:
            message, mac = _unb64(message_part), _unb64(mac_part)
        except (binascii.Error, ValueError):
            raise ForbiddenError("the download link is not valid") from None
        expected = hmac.new(self._key, message, hashlib.sha256).digest()
        if not mac_part or not hmac.compare_digest(expected, mac):
            raise ForbiddenError("the download link is not valid")
        try:
            token_rid, user, expires_text = message.decode().split("|")
            expires = int(expires_text)
        except ValueError:
            raise ForbiddenError("the download link is not valid") from None
        if not hmac.compare_digest(token_rid.encode(), rid.encode()):
            raise ForbiddenError("the download link is for another request")
        if now_s >= expires:
            raise LinkExpiredError(
                "the download link has expired; open the app's Home tab in Slack for a new one"
            )
        return Grant(token_rid, user, expires)
