"""`trailseal slack doctor` checks [slack.audit_app] against Slack (the fake one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slackapp.fake_slack import FakeSlack
from trailseal.cli import main
from trailseal.service.core import Service

BOT = "xoxb-0000-1111-doctor-secret-token"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0APPROVE", "approvers", members=[fake.bot_user_id])
        fake.add_usergroup("S0BOSSES", ["U0BOSS"])
        yield fake


def configure(tmp_path: Path, fake: FakeSlack, channel: str = "C0APPROVE") -> Path:
    data = tmp_path / "data"
    Service.open(data)[0].close()
    with (data / "trailseal.toml").open("a") as f:
        f.write(
            '\n[[slack.apps]]\nname = "main"\nsigning_secret_env = "TS_T_SIGNING"\n'
            '\n[slack.audit_app]\napp = "main"\nbot_token_env = "TS_T_BOT"\n'
            f'approvers_channel = "{channel}"\npublic_url = "https://ts.example.com"\n'
            f'base_url = "{fake.base_url}"\n'
            '\n[slack.audit_app.roles]\nrequesters = ["*"]\napprovers = ["S0BOSSES"]\n'
        )
    return data


def doctor(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.setenv("TS_T_SIGNING", "8f742231b10e8888abcd99yyyzzz85a5")
    monkeypatch.setenv("TS_T_BOT", BOT)
    capsys.readouterr()
    status = main(["--data-dir", str(data), "slack", "doctor", "--timeout", "5"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert BOT[:-4] not in text  # only the last 4 characters are shown
    return status, text


def test_a_working_app_passes(
    tmp_path: Path,
    fake: FakeSlack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, text = doctor(configure(tmp_path, fake), capsys, monkeypatch)
    assert status == 0, text
    assert "the /audit app" in text
    assert "OK   [slack.audit_app]: tenant 'default' has log 'default'" in text
    assert "OK   [slack.audit_app]: the bot token (...oken) is valid for Home Org" in text
    assert "OK   [slack.audit_app]: approvers_channel C0APPROVE is readable" in text
    assert "OK   [slack.audit_app]: user group S0BOSSES has 1 members" in text
    # This fake does not send X-OAuth-Scopes: the doctor says it could not check them.
    assert "WARN [slack.audit_app]: Slack did not say which scopes" in text
    assert "FAIL" not in text


def test_a_refused_token_and_a_missing_channel_fail(
    tmp_path: Path,
    fake: FakeSlack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = configure(tmp_path, fake, channel="C0NOWHERE")
    status, text = doctor(data, capsys, monkeypatch)
    assert status == 8, text
    assert "FAIL [slack.audit_app]: approvers_channel C0NOWHERE cannot be read: " in text
    assert "channel_not_found" in text
    assert "fix: check the id, and invite the app" in text
    fake.fail("auth.test", "invalid_auth")
    status, text = doctor(data, capsys, monkeypatch)
    assert status == 8
    assert "FAIL [slack.audit_app]: Slack refused the bot token (...oken): invalid_auth" in text
