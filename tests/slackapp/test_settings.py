"""``[slack.audit_app]``: parsed once, every mistake named with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from trailseal.errors import ConfigError
from trailseal.settings import AuditAppConfig, Secret, load

BASE = """
[[slack.apps]]
name = "main"
signing_secret_env = "SIGNING"

[[slack.socket_mode]]
name = "sock"
app_token_env = "APP_TOKEN"
"""

GOOD = """
[slack.audit_app]
app = "main"
bot_token_env = "BOT"
approvers_channel = "C0APPROVE"
public_url = "https://trailseal.example.com"
request_expiry_hours = 24
max_range_days = 90
{extra}

[slack.audit_app.roles]
requesters = ["*"]
approvers = ["U024BE7LH", "S0614TZR7"]
"""

ENV = {"SIGNING": "s3cret", "BOT": "xoxb-1", "APP_TOKEN": "xapp-1"}


def load_with(tmp_path: Path, text: str) -> AuditAppConfig | None:
    (tmp_path / "trailseal.toml").write_text(BASE + text)
    return load(ENV, tmp_path).audit_app


def test_a_complete_table_is_read(tmp_path: Path) -> None:
    config = load_with(tmp_path, GOOD.format(extra='socket_mode = "sock"'))
    assert config is not None
    assert config.bot_token == Secret("xoxb-1")
    assert repr(config.bot_token) == "Secret(***)"
    assert config.signing_secrets == (Secret("s3cret"),)
    assert config.roles.requesters == ("*",)
    assert config.roles.approvers == ("U024BE7LH", "S0614TZR7")
    assert config.request_expiry_hours == 24.0
    assert config.max_range_days == 90
    assert config.socket_mode == "sock"
    assert load(ENV, tmp_path / "elsewhere").audit_app is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("", "colour = 'red'"), "unknown keys: colour"),
        (('bot_token_env = "BOT"', 'bot_token = "xoxb-1"'), "not in trailseal.toml"),
        (('bot_token_env = "BOT"', ""), "set bot_token_env or bot_token_file"),
        (('app = "main"', 'app = "other"'), "'other' is not a [[slack.apps]] name"),
        (('app = "main"', ""), "set app"),
        (('approvers_channel = "C0APPROVE"', 'approvers_channel = "#approvers"'), "channel id"),
        (('public_url = "https://trailseal.example.com"', ""), "set public_url"),
        (("max_range_days = 90", "max_range_days = 0"), "max_range_days must be positive"),
        (('requesters = ["*"]', 'requesters = ["alice"]'), "'alice' is not a Slack user id"),
        (('approvers = ["U024BE7LH", "S0614TZR7"]', 'approvers = ["*"]'), "'*' is not a"),
        (('approvers = ["U024BE7LH", "S0614TZR7"]', "approvers = []"), "at least one approver"),
        (("", 'socket_mode = "nope"'), "'nope' is not a [[slack.socket_mode]]"),
    ],
)
def test_mistakes_are_refused_by_name(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    text = GOOD.format(extra=new) if not old else GOOD.format(extra="").replace(old, new, 1)
    with pytest.raises(ConfigError) as e:
        load_with(tmp_path, text)
    assert message in str(e.value)
