"""Download tokens: bound to a request, a user and an expiry; the key file is private."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from trailseal.errors import ConfigError, ForbiddenError
from trailseal.slackapp.links import DownloadLinks, LinkExpiredError, load_key


def test_the_key_is_made_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = load_key(keys)
    assert len(key) == 32
    path = keys / "slackapp-links.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert load_key(keys) == key  # made once
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(keys)


def test_a_token_grants_one_request_to_one_user_until_it_expires(tmp_path: Path) -> None:
    links = DownloadLinks(b"k" * 32, "https://ts.example.com/")
    token = links.token("ar_0123456789ab", "U0REQ", 1_000)
    grant = links.check("ar_0123456789ab", token, 999)
    assert (grant.rid, grant.user, grant.expires) == ("ar_0123456789ab", "U0REQ", 1_000)
    with pytest.raises(LinkExpiredError):
        links.check("ar_0123456789ab", token, 1_000)
    with pytest.raises(ForbiddenError, match="another request"):
        links.check("ar_ffffffffffff", token, 999)
    # Another user, or a later expiry, in the token's message: the MAC no longer fits.
    message, _, mac = token.partition(".")
    for forged in (b"ar_0123456789ab|U0BOSS|1000", b"ar_0123456789ab|U0REQ|9999"):
        text = base64.urlsafe_b64encode(forged).decode().rstrip("=")
        with pytest.raises(ForbiddenError, match="not valid"):
            links.check("ar_0123456789ab", f"{text}.{mac}", 999)
    for junk in ("", ".", "abc", f"{message}.", "%%%.%%%"):
        with pytest.raises(ForbiddenError):
            links.check("ar_0123456789ab", junk, 999)
    # Another server's key does not verify this one's tokens.
    with pytest.raises(ForbiddenError):
        DownloadLinks(b"x" * 32, "https://ts.example.com").check("ar_0123456789ab", token, 999)
    url = links.url("ar_0123456789ab", "U0REQ", 1_000, "audit-ar_0123456789ab.csv")
    assert url.startswith("https://ts.example.com/slack/reports/ar_0123456789ab/audit-ar_")
