"""The Slack Events API endpoint, driven by Slack's own payloads and signing vector."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from trailseal.errors import AuthError, StorageError
from trailseal.http import HttpOptions, create_app
from trailseal.ingest.slack_signature import slack_signature, verify_slack_request
from trailseal.service.core import Service
from trailseal.settings import Secret, SlackApp

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "slack"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
OLD_SECRET = "0ld5ecret0ld5ecret0ld5ecret0ld5e"
NOW = 1_700_000_000

pytestmark = pytest.mark.skipif(not FIXTURES.exists(), reason=f"no Slack fixtures at {FIXTURES}")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_slacks_signing_vector_verifies_with_a_fixed_clock() -> None:
    lines = (FIXTURES / "signing-vector.txt").read_text().splitlines()
    values = dict(line.split(" = ", 1) for line in lines if " = " in line)
    headers = dict(line.split(": ", 1) for line in lines if ": " in line)
    secret, body = values["signing_secret"].encode(), values["body"].encode()
    ts, sig = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    assert slack_signature(secret, ts, body) == sig
    verify_slack_request([secret], ts, sig, body, now_s=int(ts) + 10)
    with pytest.raises(AuthError, match="5-minute window"):
        verify_slack_request([secret], ts, sig, body, now_s=int(ts) + 301)
    with pytest.raises(AuthError, match="does not verify"):
        verify_slack_request([secret], ts, sig, body + b"x", now_s=int(ts))
    with pytest.raises(AuthError, match="does not verify"):
        verify_slack_request([b"another"], ts, sig, body, now_s=int(ts))
    with pytest.raises(AuthError, match="missing"):
        verify_slack_request([secret], None, sig, body, now_s=int(ts))


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[tuple[TestClient, Service]]:
    service, _ = Service.open(tmp_path / "data", clock=lambda: datetime.fromtimestamp(NOW, UTC))
    app_config = SlackApp(
        "main", "/slack/events", "default", "default", (Secret(SECRET), Secret(OLD_SECRET))
    )
    app = create_app(service, HttpOptions(slack_apps=(app_config,)))
    with TestClient(app) as client:
        yield client, service
    service.close()


def post(
    client: TestClient,
    payload: Any,
    *,
    secret: str = SECRET,
    ts: int = NOW,
    headers: dict[str, str] | None = None,
) -> Any:
    body = json.dumps(payload).encode()
    sig = slack_signature(secret.encode(), str(ts), body)
    return client.post(
        "/slack/events",
        content=body,
        headers={
            "content-type": "application/json",
            "x-slack-request-timestamp": str(ts),
            "x-slack-signature": sig,
            **(headers or {}),
        },
    )


def stored(service: Service) -> list[dict[str, Any]]:
    ledger = service.ledger(service.registry.log("default", "default"))
    return [json.loads(e.data) for e in ledger.storage.read_entries(ledger.log.id, 0, 1 << 30)]


def test_url_verification_answers_the_challenge(slack: tuple[TestClient, Service]) -> None:
    client, service = slack
    r = post(client, fixture("url-verification.json"))
    assert r.status_code == 200
    assert r.json() == {"challenge": fixture("url-verification.json")["challenge"]}
    assert stored(service) == []


def test_an_event_is_stored_once_and_a_retry_becomes_a_delivery_record(
    slack: tuple[TestClient, Service],
) -> None:
    client, service = slack
    envelope = fixture("events-envelope.json")
    assert post(client, envelope).status_code == 200
    retry = {"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}
    assert post(client, envelope, headers=retry).status_code == 200
    assert post(client, envelope, headers=retry).status_code == 200  # the same retry again
    records = stored(service)
    assert [r["id"] for r in records] == ["Ev08MFMKH6", "Ev08MFMKH6/retry/1"]
    event, attempt = records
    assert event["source"] == "slack.events"
    assert event["action"] == "slack.name_of_event"  # unknown types are kept, not dropped
    assert event["raw"]["event"]["type"] == "name_of_event"
    assert "token" not in event["raw"]  # Slack's verification token never reaches the log
    assert attempt["result"]["delivery"] == {"attempt": 1, "retry_of": "Ev08MFMKH6"}
    assert attempt["result"]["reason"] == "http_timeout"


def test_bad_or_stale_signatures_are_refused_and_nothing_is_stored(
    slack: tuple[TestClient, Service], caplog: pytest.LogCaptureFixture
) -> None:
    client, service = slack
    envelope = fixture("events-envelope.json")
    r = post(client, envelope, secret="wrong-secret")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert post(client, envelope, ts=NOW - 301).status_code == 401
    assert client.post("/slack/events", json=envelope).status_code == 401
    assert stored(service) == []
    assert "Ev08MFMKH6" not in caplog.text  # the rejected body is not logged


def test_the_previous_secret_works_during_rotation(slack: tuple[TestClient, Service]) -> None:
    client, service = slack
    assert post(client, fixture("events-envelope.json"), secret=OLD_SECRET).status_code == 200
    assert len(stored(service)) == 1


def test_message_text_becomes_content_and_leaves_the_leaf(
    slack: tuple[TestClient, Service],
) -> None:
    client, service = slack
    envelope = fixture("socket-mode-events-api-envelope.json")["payload"]
    assert post(client, envelope).status_code == 200
    (record,) = stored(service)
    assert record["action"] == "app.mentioned"
    assert record["actor"] == {"type": "user", "id": "U222", "team": "T111"}
    assert record["targets"] == [{"type": "channel", "id": "C111"}]
    assert "text" not in record["raw"]["event"]
    assert "blocks" not in record["raw"]["event"]
    assert record["content"]["commitment"].startswith("hmac-sha256:")
    assert "<@U111>" not in json.dumps(record)


def test_workflow_tokens_are_not_stored(slack: tuple[TestClient, Service]) -> None:
    client, service = slack
    inner = fixture("function-executed-event.json")
    envelope = {
        "type": "event_callback",
        "event_id": "EvFn1",
        "team_id": "T1",
        "event_time": NOW,
        "event": inner,
    }
    assert post(client, envelope).status_code == 200
    (record,) = stored(service)
    assert record["action"] == "workflow.function.executed"
    assert record["correlation"] == {"id": "WxABC123DEF0"}
    assert inner["bot_access_token"] not in json.dumps(record)
    data_dir = service.data_dir.path
    for path in data_dir.glob("*.db*"):
        assert inner["bot_access_token"].encode() not in path.read_bytes()


def test_app_rate_limited_is_recorded(slack: tuple[TestClient, Service]) -> None:
    client, service = slack
    assert post(client, fixture("app-rate-limited.json")).status_code == 200
    (record,) = stored(service)
    assert record["action"] == "slack.app_rate_limited"
    assert record["class"] == "delivery"
    assert record["time"].startswith("2018-02-12T20:37:00")


def test_a_dead_database_is_not_acknowledged(
    slack: tuple[TestClient, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service = slack
    ledger = service.ledger(service.registry.log("default", "default"))

    def broken(*args: object, **kwargs: object) -> None:
        raise StorageError("disk I/O error")

    monkeypatch.setattr(ledger, "append_prepared", broken)
    r = post(client, fixture("events-envelope.json"))
    assert r.status_code == 503  # Slack retries later; nothing was acknowledged
    assert "Retry-After" in r.headers
    monkeypatch.undo()
    assert (
        post(
            client, fixture("events-envelope.json"), headers={"x-slack-retry-num": "1"}
        ).status_code
        == 200
    )
    assert [r["id"] for r in stored(service)] == ["Ev08MFMKH6", "Ev08MFMKH6/retry/1"]


def test_the_clock_is_injected_not_read(slack: tuple[TestClient, Service]) -> None:
    client, _ = slack
    assert abs(time.time() - NOW) > 300  # the fixed clock, not the wall clock, decides
    assert post(client, fixture("events-envelope.json")).status_code == 200


def test_every_event_the_manifest_subscribes_to_has_a_mapping() -> None:
    from trailseal.ingest.slack_events import ACTIONS

    manifest = (
        Path(__file__).resolve().parents[2] / "docs" / "slack" / "manifest.yaml"
    ).read_text()
    section = manifest.split("bot_events:", 1)[1].split("interactivity:", 1)[0]
    events = [line.strip()[2:] for line in section.splitlines() if line.strip().startswith("- ")]
    assert len(events) > 20
    for name in events:
        kind = name.split(".", 1)[0]  # message.channels is the message event
        assert kind in ACTIONS, f"{name} is subscribed in the manifest but has no mapping"


def test_commands_that_need_no_slack_secret_run_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trailseal.cli import main
    from trailseal.cli.common import EXIT_OK
    from trailseal.settings import load

    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "init"]) == EXIT_OK
    with (data / "trailseal.toml").open("a") as f:
        f.write('\n[[slack.apps]]\nname = "main"\nsigning_secret_env = "TS_UNSET_SECRET"\n')
    monkeypatch.delenv("TS_UNSET_SECRET", raising=False)
    assert main(["--data-dir", str(data), "verify"]) == EXIT_OK  # offline: no secret needed
    (app,) = load({}, data_dir=data).slack_apps
    with pytest.raises(Exception, match="TS_UNSET_SECRET"):  # serving would need it
        app.signing_secrets[0].reveal()
    capsys.readouterr()
