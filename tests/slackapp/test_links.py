"""Download tokens: Ed25519-signed, bound to a request, a user and an expiry, checked
with the signing node's public key from the registry; the key file is private."""

from __future__ import annotations

import base64
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.service.conftest import FakeMonotonic
from trailseal.core.note import NoteSigner
from trailseal.errors import AlreadyExistsError, ConfigError, ForbiddenError
from trailseal.service.registry import Registry
from trailseal.slackapp.links import (
    KEY_CACHE_S,
    KEY_FILE,
    DownloadLinks,
    LinkExpiredError,
    LinkKey,
    link_key_id,
    load_key,
    register_key,
)

AT = "2025-01-01T00:00:00.000000Z"
RID = "ar_0123456789ab"
URL = "https://ts.example.com/"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "service.db")


def node(registry: Registry, monotonic: Callable[[], float] = time.monotonic) -> DownloadLinks:
    """A node with a fresh key, registered in ``registry``."""
    key = LinkKey(NoteSigner.generate("slackapp-links"))
    register_key(registry, key, AT)
    return DownloadLinks(key, registry, URL, monotonic=monotonic)


def test_the_key_is_made_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = load_key(keys)
    path = keys / KEY_FILE
    assert not KEY_FILE.endswith(".key")  # `rm keys/*.key` on a read-only node keeps it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert [p.name for p in keys.iterdir()] == [KEY_FILE]  # no temporary file left
    assert path.read_text().startswith("PRIVATE+KEY+slackapp-links+")  # C2SP, like log keys
    again = load_key(keys)  # made once
    assert (again.key_id, again.public_key) == (key.key_id, key.public_key)
    assert key.key_id == link_key_id(key.public_key)
    assert len(key.key_id) == 16
    assert "***" in repr(key)
    assert path.read_text().split("+")[-1].strip() not in repr(key)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(keys)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a valid link key"):
        load_key(keys)


def test_a_token_grants_one_request_to_one_user_until_it_expires(registry: Registry) -> None:
    links = node(registry)
    token = links.token(RID, "U0REQ", 1_000)
    grant = links.check(RID, token, 999)
    assert (grant.rid, grant.user, grant.expires) == (RID, "U0REQ", 1_000)
    with pytest.raises(LinkExpiredError):
        links.check(RID, token, 1_000)
    with pytest.raises(ForbiddenError, match="another request"):
        links.check("ar_ffffffffffff", token, 999)
    url = links.url(RID, "U0REQ", 1_000, "audit-ar_0123456789ab.csv")
    assert url.startswith("https://ts.example.com/slack/reports/ar_0123456789ab/audit-ar_")
    assert url.endswith(f"?token={token}")
    assert "***" in repr(links)


def test_forged_and_tampered_tokens_are_refused_before_their_expiry_is_read(
    registry: Registry,
) -> None:
    links = node(registry)
    token = links.token(RID, "U0REQ", 1_000)
    message, key_id, signature = token.split(".")
    # Another user, or a later expiry, in the token's message: the signature no longer fits.
    for forged in (b"ar_0123456789ab|U0BOSS|1000", b"ar_0123456789ab|U0REQ|9999"):
        with pytest.raises(ForbiddenError, match="not valid"):
            links.check(RID, f"{b64(forged)}.{key_id}.{signature}", 999)
    # A flipped signature bit, or a signature by an unregistered key under this key id:
    # refused even when expired, so an expiry message never answers a forged token.
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=="))
    flipped[5] ^= 1
    stranger = Ed25519PrivateKey.generate().sign(base64.urlsafe_b64decode(message + "=="))
    for bad in (bytes(flipped), stranger):
        for now in (999, 5_000):
            with pytest.raises(ForbiddenError, match="not valid"):
                links.check(RID, f"{message}.{key_id}.{b64(bad)}", now)
    for junk in (
        "",
        ".",
        "..",
        "abc",
        f"{message}.{key_id}.",
        f"{message}.{key_id}.{signature}.x",
        f"{message}..{signature}",
        f"{message}.{key_id.upper()}.{signature}",
        "%%%.%%%.%%%",
        f"{message}.{key_id}.{signature[:-2]}%%",
        f"{message}%.{key_id}.{signature}",
    ):
        with pytest.raises(ForbiddenError, match="not valid"):
            links.check(RID, junk, 999)


def test_a_key_not_registered_is_refused(registry: Registry, tmp_path: Path) -> None:
    links = node(registry)
    # A node whose key is in another registry: its tokens mean nothing here.
    elsewhere = node(Registry(tmp_path / "other.db"))
    token = elsewhere.token(RID, "U0REQ", 1_000)
    assert elsewhere.check(RID, token, 999).user == "U0REQ"
    with pytest.raises(ForbiddenError, match="not valid"):
        links.check(RID, token, 999)
    # The token's key id swapped for this node's: its signature does not verify.
    message, _, signature = token.split(".")
    with pytest.raises(ForbiddenError, match="not valid"):
        links.check(RID, f"{message}.{links.token(RID, 'U', 1).split('.')[1]}.{signature}", 999)
    # Found once registered: a miss is not remembered.
    register_key(registry, LinkKey(_signer_of(elsewhere)), AT)
    assert links.check(RID, token, 999).user == "U0REQ"


def _signer_of(links: DownloadLinks) -> NoteSigner:
    signer: NoteSigner = links._key._signer
    return signer


def test_a_token_from_another_node_verifies_through_the_registry(registry: Registry) -> None:
    a, b = node(registry), node(registry)
    token = a.token(RID, "U0REQ", 1_000)
    assert token.split(".")[1] != b.token(RID, "U0REQ", 1_000).split(".")[1]
    assert b.check(RID, token, 999).user == "U0REQ"
    with pytest.raises(LinkExpiredError):
        b.check(RID, token, 1_000)
    # A row whose public key is not the one its id names (written by hand, not by a
    # node) is not honoured, even for a token that key signed.
    squatter = Ed25519PrivateKey.generate()
    message = b"ar_0123456789ab|U0REQ|1000"
    with registry._tx() as tx:
        tx.execute(
            "INSERT INTO link_keys VALUES (?, ?, ?)",
            ("0" * 16, squatter.public_key().public_bytes_raw(), AT),
        )
    forged = f"{b64(message)}.{'0' * 16}.{b64(squatter.sign(message))}"
    with pytest.raises(ForbiddenError, match="not valid"):
        b.check(RID, forged, 999)


def test_a_revoked_key_stops_being_honoured_once_its_cache_expires(registry: Registry) -> None:
    clock = FakeMonotonic()
    a, b = node(registry), node(registry, monotonic=clock)
    token = a.token(RID, "U0REQ", 1_000)
    assert b.check(RID, token, 999).user == "U0REQ"
    with registry._tx() as tx:  # the schema owner revokes A's key
        tx.execute("DELETE FROM link_keys WHERE key_id = ?", (token.split(".")[1],))
    clock.advance(KEY_CACHE_S - 1)
    assert b.check(RID, token, 999).user == "U0REQ"  # still cached
    clock.advance(1)
    with pytest.raises(ForbiddenError, match="not valid"):
        b.check(RID, token, 999)
    with pytest.raises(ForbiddenError, match="not valid"):  # and not cached back
        b.check(RID, token, 999)


def test_registering_is_idempotent_and_an_id_keeps_its_key(registry: Registry) -> None:
    key = LinkKey(NoteSigner.generate("slackapp-links"))
    register_key(registry, key, AT)
    register_key(registry, key, "2026-01-01T00:00:00.000000Z")  # a restart
    assert registry.link_key(key.key_id) == key.public_key
    assert registry._rows("SELECT created_at FROM link_keys") == [(AT,)]
    with pytest.raises(AlreadyExistsError, match=key.key_id):
        registry.add_link_key(key.key_id, b"\x01" * 32, AT)
    assert registry.link_key(key.key_id) == key.public_key
    assert registry.link_key("0" * 16) is None
