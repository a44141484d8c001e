"""`trailseal slack doctor`, in-process, against fake Slack servers on 127.0.0.1.

The Audit Logs API is a small GET fake defined here; ``apps.connections.open`` is the
shared :class:`FakeSlackWeb`. Every secret comes from an environment variable.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.ingest.fake_slack_web import FakeSlackWeb
from trailseal.cli import main
from trailseal.cli.common import EXIT_CONFIG
from trailseal.service.core import Service

AUDIT_TOKEN = "xoxp-1234567890-0987654321-1234567890-abcdef0123456789abcdef0123456789"
APP_TOKEN = "xapp-1-A0123456789-1234567890123-0123456789abcdef0123456789abcdef"
SIGNING_SECRET = "0123456789abcdef0123456789abcd5e"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRETS = (AUDIT_TOKEN, APP_TOKEN, SIGNING_SECRET, HOOK_SECRET)


class FakeAuditApi:
    """``GET /audit/v1/logs``: scripted answers first, then one empty page."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], str]] = []
        self.answers: deque[tuple[int, Any]] = deque()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, params, self.headers.get("Authorization", "")))
                status, body = fake.answers.popleft() if fake.answers else (200, {"entries": []})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def audit() -> Iterator[FakeAuditApi]:
    fake = FakeAuditApi()
    yield fake
    fake.close()


@pytest.fixture
def web() -> Iterator[FakeSlackWeb]:
    fake = FakeSlackWeb()
    yield fake
    fake.close()


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bootstrapped data directory (tenant default, log default) and the secrets' env."""
    directory = tmp_path / "data"
    service, _ = Service.open(directory)
    service.close()
    monkeypatch.setenv("TS_T_SIGNING", SIGNING_SECRET)
    monkeypatch.setenv("TS_T_AUDIT", AUDIT_TOKEN)
    monkeypatch.setenv("TS_T_APP", APP_TOKEN)
    monkeypatch.setenv("TS_T_HOOK", HOOK_SECRET)
    return directory


def configure(data: Path, text: str) -> None:
    with (data / "trailseal.toml").open("a") as f:
        f.write("\n" + text)


def app_toml(**extra: str) -> str:
    lines = ["[[slack.apps]]", 'name = "main"', 'signing_secret_env = "TS_T_SIGNING"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def audit_toml(base_url: str, **extra: str) -> str:
    lines = ["[slack.audit]", 'token_env = "TS_T_AUDIT"', f'base_url = "{base_url}"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def socket_toml(base_url: str) -> str:
    return (
        '[[slack.socket_mode]]\nname = "sock"\napp_token_env = "TS_T_APP"\n'
        f'base_url = "{base_url}"\n'
    )


HOOK_TOML = (
    '[[hooks]]\nname = "zapier"\nsecret_env = "TS_T_HOOK"\n'
    '[hooks.mapping]\n"actor.id" = "user.id"\n'
    '[hooks.defaults]\naction = "zapier.zap.ran"\n'
)


def doctor(data: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["--data-dir", str(data), "slack", "doctor", "--timeout", "5"])
    out = capsys.readouterr()
    text = out.out + out.err
    for secret in SECRETS:
        assert secret not in text
        assert secret[-12:-4] not in text  # no more than the last 4 characters
    return status, text


def test_all_good_configuration_passes_with_ok_lines(
    data: Path, audit: FakeAuditApi, web: FakeSlackWeb, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(
        data,
        app_toml() + audit_toml(audit.base_url) + socket_toml(web.base_url) + HOOK_TOML,
    )
    web.script("apps.connections.open", 200, {"ok": True, "url": "wss://example.invalid/x"})
    status, text = doctor(data, capsys)
    assert status == 0, text
    assert "FAIL" not in text
    assert "WARN" not in text
    assert "parses: 1 Events API apps, 1 Socket Mode apps, an Audit Logs poller, 1 webhooks" in text
    assert "OK   [[slack.apps]] 'main': signing secret present (...cd5e), 32 hex" in text
    assert "OK   [[slack.apps]] 'main': tenant 'default' has log 'default'" in text
    assert "answers POST /slack/events" in text
    assert f"the Audit Logs API at {audit.base_url} accepts the token (...6789)" in text
    assert "apps.connections.open accepts the app token (...cdef)" in text
    assert "OK   [[hooks]] 'zapier': standard signatures, 1 mapped fields" in text
    assert "0 warnings, 0 failed" in text
    # The audit check asked for one entry with the token; Socket Mode sent the app token.
    ((path, params, authorization),) = audit.requests
    assert (path, params, authorization) == (
        "/audit/v1/logs",
        {"limit": "1"},
        f"Bearer {AUDIT_TOKEN}",
    )
    ((method, headers, _),) = web.calls
    assert method == "apps.connections.open"
    assert {k.lower(): v for k, v in headers.items()}["authorization"] == f"Bearer {APP_TOKEN}"


@pytest.mark.parametrize(
    ("status", "answer", "explanation"),
    [
        (401, {"ok": False, "error": "invalid_auth"}, "the token is invalid or revoked"),
        (401, {"ok": False, "error": "token_revoked"}, "the token is invalid or revoked"),
        (
            403,
            {"ok": False, "error": "missing_scope", "needed": "auditlogs:read"},
            "the token lacks the scope auditlogs:read",
        ),
        (
            403,
            {"ok": False, "error": "not_allowed_token_type"},
            "use an org-owner user token (xoxp-) installed at the organization level",
        ),
        (403, {"ok": False, "error": "feature_not_enabled"}, "needs Slack Enterprise Grid"),
        (403, {"ok": False, "error": "team_not_authorized"}, "needs Slack Enterprise Grid"),
        (503, {"ok": False, "error": "service_unavailable"}, "answered HTTP 503"),
    ],
)
def test_audit_refusals_are_explained(
    data: Path,
    audit: FakeAuditApi,
    capsys: pytest.CaptureFixture[str],
    status: int,
    answer: dict[str, Any],
    explanation: str,
) -> None:
    configure(data, audit_toml(audit.base_url))
    audit.answers.append((status, answer))
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG, text
    assert "FAIL [slack.audit]" in text
    assert explanation in text
    assert "(...6789)" in text or status >= 500


def test_audit_rate_limit_is_a_warning(
    data: Path, audit: FakeAuditApi, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(data, audit_toml(audit.base_url))
    audit.answers.append((429, {"ok": False, "error": "ratelimited"}))
    code, text = doctor(data, capsys)
    assert code == 0, text
    assert "WARN [slack.audit]: Slack rate limited the check (HTTP 429)" in text


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_slack_is_named(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    configure(data, audit_toml(dead) + socket_toml(dead + "/api/"))
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG
    assert f"FAIL [slack.audit]: cannot reach Slack at {dead}: " in text
    assert f"FAIL [[slack.socket_mode]] 'sock': cannot reach Slack at {dead}/api/: " in text


@pytest.mark.parametrize(
    ("error", "explanation"),
    [
        ("invalid_auth", "the token is invalid or revoked"),
        ("not_allowed_token_type", "use an app-level token xapp- with connections:write"),
    ],
)
def test_socket_mode_refusals_are_explained(
    data: Path,
    web: FakeSlackWeb,
    capsys: pytest.CaptureFixture[str],
    error: str,
    explanation: str,
) -> None:
    configure(data, socket_toml(web.base_url))
    web.script("apps.connections.open", 200, {"ok": False, "error": error})
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG, text
    assert "FAIL [[slack.socket_mode]] 'sock': apps.connections.open refused" in text
    assert explanation in text


def test_missing_tenant_and_log_and_bad_hook_are_named(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(
        data,
        app_toml(tenant="acme", log="slack")
        + '[[hooks]]\nname = "gh"\nsecret_env = "TS_T_HOOK"\nlog = "nope"\n'
        '[hooks.mapping]\n"actor.nickname" = "sender.login"\n'
        '[[hooks]]\nname = "raw"\nscheme = "standard"\nsecret_env = "TS_T_SIGNING_BAD"\n',
    )
    # A Standard Webhooks secret must be base64: this one is not.
    monkeypatch.setenv("TS_T_SIGNING_BAD", "not base64 at all!")
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG
    assert "FAIL [[slack.apps]] 'main': tenant 'acme' has no log 'slack'" in text
    assert "trailseal tenants create acme --log slack" in text
    assert "FAIL [[hooks]] 'gh': tenant 'default' has no log 'nope'" in text
    assert "trailseal tenants add-log default nope" in text
    assert "event field 'actor.nickname', which the event schema does not have" in text
    assert "FAIL [[hooks]] 'raw': webhook 'raw': a Standard Webhooks secret is whsec_" in text
    assert "not base64 at all!" not in text


def test_signing_secret_unlike_slacks_is_a_warning(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TS_T_SIGNING", "a-verification-token-1234")
    configure(data, app_toml(path="/slack/acme/events"))
    code, text = doctor(data, capsys)
    assert code == 0, text
    assert "WARN [[slack.apps]] 'main': the signing secret (...1234) is not 32" in text
    assert "answers POST /slack/acme/events" in text
    assert "a-verification-token" not in text


def test_token_of_the_wrong_kind_is_a_warning_before_slack_answers(
    data: Path,
    audit: FakeAuditApi,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TS_T_AUDIT", "xoxb-1234567890-bot-token-abcd")
    configure(data, audit_toml(audit.base_url))
    audit.answers.append((403, {"ok": False, "error": "not_allowed_token_type"}))
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG
    assert "WARN [slack.audit]: the token (...abcd) does not start with xoxp-" in text
    assert "xoxb-1234567890" not in text


def test_nothing_configured_fails(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG
    assert "parses but configures nothing to check" in text


def test_no_configuration_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = doctor(tmp_path / "absent", capsys)
    assert code == EXIT_CONFIG
    assert "trailseal.toml: nothing is configured" in text
    assert not (tmp_path / "absent").exists()  # the doctor created nothing


def test_unreadable_toml_and_unset_variable_stop_before_the_checks(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(data, app_toml())
    monkeypatch.delenv("TS_T_SIGNING")
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG
    assert "environment variable TS_T_SIGNING (signing_secret) is not set" in text
    configure(data, "[[slack.apps\n")
    code, text = doctor(data, capsys)
    assert code == EXIT_CONFIG
    assert "cannot read" in text
