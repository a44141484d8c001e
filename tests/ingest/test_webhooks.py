"""Signed webhooks at /hooks/<name>: Standard Webhooks and configurable HMAC, in process.

Signatures are computed here from the specifications, independently of the code under
test: Standard Webhooks 1.0 signs ``{webhook-id}.{webhook-timestamp}.{body}`` with
HMAC-SHA256 under the base64-decoded part of ``whsec_<base64>`` and sends
``v1,<base64>`` entries, space-delimited; GitHub sends ``sha256=<hex HMAC-SHA256 of the
body>`` in ``X-Hub-Signature-256``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from trailseal.errors import AuthError, ConfigError
from trailseal.http import HttpOptions, create_app
from trailseal.ingest.webhooks import (
    check_config,
    map_webhook,
    standard_key,
    verify_hmac,
    verify_standard,
)
from trailseal.service.core import Service
from trailseal.settings import Secret, WebhookConfig, load

NOW = 1_700_000_000
KEY = b"k" * 24 + b"current-key-bytes"
OLD_KEY = b"o" * 24 + b"previous-key-byte"
STD_SECRET = "whsec_" + base64.b64encode(KEY).decode()
STD_OLD_SECRET = "whsec_" + base64.b64encode(OLD_KEY).decode()
GH_SECRET = "gh-hook-secret-Zq9vX2"
TS_SECRET = "ts-hook-secret-Wm4pR7"
ALL_SECRETS = (
    STD_SECRET,
    STD_OLD_SECRET,
    STD_SECRET.removeprefix("whsec_"),
    STD_OLD_SECRET.removeprefix("whsec_"),
    GH_SECRET,
    TS_SECRET,
)

STANDARD = WebhookConfig(
    name="billing",
    secrets=(Secret(STD_SECRET), Secret(STD_OLD_SECRET)),
    mapping=(
        ("action", "type"),
        ("time", "timestamp"),
        ("actor.id", "data.user.id"),
        ("actor.email", "data.user.email"),
        ("targets.0.id", "data.invoice.id"),
        ("targets.0.name", "data.invoice.number"),
    ),
    defaults=(("actor.type", "user"), ("targets.0.type", "invoice")),
)
GITHUB = WebhookConfig(
    name="github",
    secrets=(Secret(GH_SECRET),),
    scheme="hmac",
    header="X-Hub-Signature-256",
    prefix="sha256=",
    mapping=(("actor.id", "sender.login"), ("targets.0.id", "repository.full_name")),
    defaults=(("action", "github.push"), ("targets.0.type", "repository")),
)
TIMED = WebhookConfig(
    name="timed",
    secrets=(Secret(TS_SECRET),),
    scheme="hmac",
    header="X-Signature",
    signed="timestamp.body",
    timestamp_header="X-Timestamp",
    encoding="base64",
    tolerance_s=60,
)


def std_sign(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def std_headers(
    body: bytes, *, msg_id: str = "msg_1", ts: int = NOW, key: bytes = KEY
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": std_sign(key, msg_id, ts, body),
    }


def gh_headers(body: bytes, secret: str = GH_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "X-Hub-Signature-256": "sha256=" + digest}


def ts_headers(body: bytes, ts: int = NOW, secret: str = TS_SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).digest()
    return {"X-Timestamp": str(ts), "X-Signature": base64.b64encode(mac).decode()}


INVOICE = {
    "type": "invoice.paid",
    "timestamp": "2023-11-14T22:00:00Z",
    "data": {
        "user": {"id": "u_42", "email": "ada@example.com"},
        "invoice": {"id": "in_7", "number": 1007},
        "amount": 1200,
    },
    "vendor_extension": {"nested": [1, 2, 3]},
}


@pytest.fixture
def hooks(tmp_path: Path) -> Iterator[tuple[TestClient, Service]]:
    service, _ = Service.open(tmp_path / "data", clock=lambda: datetime.fromtimestamp(NOW, UTC))
    app = create_app(service, HttpOptions(max_body_bytes=64 << 10, hooks=(STANDARD, GITHUB, TIMED)))
    with TestClient(app) as client:
        yield client, service
    service.close()


def entries(service: Service) -> list[dict[str, Any]]:
    ledger = service.ledger(service.registry.log("default", "default"))
    return [orjson.loads(ledger.entry(i).data) for i in range(ledger.tree_size())]


def webhook_entries(service: Service) -> list[dict[str, Any]]:
    return [e for e in entries(service) if str(e.get("source", "")).startswith("webhook:")]


# -- the specifications' own vectors ----------------------------------------------------


def test_standard_webhooks_reference_vector() -> None:
    # libraries/python/tests/test_webhooks.py::test_sign_function in
    # github.com/standard-webhooks/standard-webhooks.
    secret = Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert (
        std_sign(standard_key(secret), headers["webhook-id"], 1614265330, body)
        == (headers["webhook-signature"])
    )
    verify_standard([secret], headers, body, 1614265330 + 10, 300)
    with pytest.raises(AuthError, match="does not verify"):
        verify_standard([secret], headers, body + b" ", 1614265330, 300)


def test_githubs_documented_vector() -> None:
    # docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
    config = replace(GITHUB, secrets=(Secret("It's a Secret to Everybody"),))
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    verify_hmac(config, config.secrets, {"X-Hub-Signature-256": header}, b"Hello, World!", 0)
    with pytest.raises(AuthError, match="does not verify"):
        verify_hmac(config, config.secrets, {"x-hub-signature-256": header}, b"Hello!", 0)


# -- Standard Webhooks ------------------------------------------------------------------


def test_a_signed_standard_webhook_is_stored_and_answered_with_its_receipt(
    hooks: tuple[TestClient, Service],
) -> None:
    client, service = hooks
    body = json.dumps(INVOICE).encode()
    r = client.post("/hooks/billing", content=body, headers=std_headers(body, msg_id="msg_a"))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"index", "leaf_hash", "status", "receipt"}
    assert answer["status"] == "appended"
    assert answer["receipt"].startswith(f"c2sp.org/tlog-proof@v1\nindex {answer['index']}\n")
    (stored,) = webhook_entries(service)
    assert stored["id"] == "msg_a"
    assert stored["source"] == "webhook:billing"
    assert stored["action"] == "invoice.paid"
    assert stored["time"] == "2023-11-14T22:00:00Z"
    assert stored["actor"] == {"type": "user", "id": "u_42", "email": "ada@example.com"}
    assert stored["targets"] == [{"type": "invoice", "id": "in_7", "name": "1007"}]
    # Unknown keys stay, in raw.
    assert stored["raw"]["vendor_extension"] == {"nested": [1, 2, 3]}
    assert stored["raw"]["data"]["amount"] == 1200
    assert stored["tenant"] == "default"


def test_either_live_secret_verifies_during_rotation(hooks: tuple[TestClient, Service]) -> None:
    client, service = hooks
    for i, key in enumerate((KEY, OLD_KEY)):
        body = json.dumps({"type": "a.b", "n": i}).encode()
        r = client.post(
            "/hooks/billing", content=body, headers=std_headers(body, msg_id=f"m{i}", key=key)
        )
        assert r.status_code == 200, r.text
    body = json.dumps({"type": "a.b", "n": 2}).encode()
    headers = std_headers(body, msg_id="m2")
    bad = std_sign(b"not-a-live-key-at-all-xx", "m2", NOW, body)
    # A bad and a good one, plus entries of other versions that must be ignored.
    headers["webhook-signature"] = f"{bad} v1a,AAAA v2,{bad[3:]} {headers['webhook-signature']}"
    assert client.post("/hooks/billing", content=body, headers=headers).status_code == 200
    assert len(webhook_entries(service)) == 3


@pytest.mark.parametrize(
    ("ts", "change", "reason"),
    [
        (NOW, {"webhook-timestamp": None}, "missing"),
        (NOW, {"webhook-id": None}, "missing"),
        (NOW, {"webhook-signature": None}, "missing"),
        (NOW - 301, {}, "old"),
        (NOW + 301, {}, "future"),
        (NOW, {"webhook-timestamp": "17e8"}, "Unix time"),
        (NOW, {"webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}, "does not verify"),
        (NOW, {"webhook-signature": "v1a,bm90IGEgc2lnbmF0dXJl"}, "no v1"),
    ],
)
def test_unsigned_stale_or_future_deliveries_are_refused(
    hooks: tuple[TestClient, Service], ts: int, change: dict[str, str | None], reason: str
) -> None:
    client, service = hooks
    body = json.dumps(INVOICE).encode()
    headers = std_headers(body, ts=ts)  # validly signed, at that time
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    r = client.post("/hooks/billing", content=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert reason in r.json()["detail"]
    assert webhook_entries(service) == []


def test_a_delivery_just_inside_the_window_is_accepted(hooks: tuple[TestClient, Service]) -> None:
    client, _ = hooks
    for ts in (NOW - 299, NOW + 299):
        body = json.dumps({"type": "x.y", "ts": ts}).encode()
        r = client.post("/hooks/billing", content=body, headers=std_headers(body, ts=ts))
        assert r.status_code == 200


def test_a_tampered_body_is_refused_and_nothing_is_stored(
    hooks: tuple[TestClient, Service],
) -> None:
    client, service = hooks
    body = json.dumps(INVOICE).encode()
    headers = std_headers(body)
    tampered = body.replace(b"1200", b"9999")
    r = client.post("/hooks/billing", content=tampered, headers=headers)
    assert r.status_code == 401
    assert "9999" not in r.text
    assert entries(service) == []


def test_a_redelivery_is_stored_once(hooks: tuple[TestClient, Service]) -> None:
    client, service = hooks
    body = json.dumps(INVOICE).encode()
    first = client.post("/hooks/billing", content=body, headers=std_headers(body, msg_id="m"))
    # A retry: same webhook-id and body, a later attempt timestamp, signed afresh.
    again = client.post(
        "/hooks/billing", content=body, headers=std_headers(body, msg_id="m", ts=NOW + 60)
    )
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["index"] == again.json()["index"]
    assert (first.json()["status"], again.json()["status"]) == ("appended", "duplicate")
    assert len(webhook_entries(service)) == 1


def test_a_redelivery_minutes_later_is_still_a_duplicate(tmp_path: Path) -> None:
    now = [NOW]
    service, _ = Service.open(tmp_path / "data", clock=lambda: datetime.fromtimestamp(now[0], UTC))
    unmapped_time = replace(STANDARD, mapping=(("action", "type"),))
    try:
        with TestClient(create_app(service, HttpOptions(hooks=(unmapped_time,)))) as client:
            body = json.dumps(INVOICE).encode()
            first = client.post("/hooks/billing", content=body, headers=std_headers(body))
            now[0] += 600  # the server's clock moves on; time is stamped at receipt
            again = client.post(
                "/hooks/billing", content=body, headers=std_headers(body, ts=now[0])
            )
            assert (first.json()["status"], again.json()["status"]) == ("appended", "duplicate")
            assert first.json()["index"] == again.json()["index"]
    finally:
        service.close()


def test_bad_json_with_a_valid_signature_is_a_400(hooks: tuple[TestClient, Service]) -> None:
    client, service = hooks
    body = b'{"type": "x", '
    r = client.post("/hooks/billing", content=body, headers=std_headers(body))
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]
    assert entries(service) == []


def test_unknown_hooks_are_a_plain_404(hooks: tuple[TestClient, Service]) -> None:
    client, _ = hooks
    body = b"{}"
    r = client.post("/hooks/nope", content=body, headers=std_headers(body))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    for name in ("billing", "github", "timed"):
        assert name not in r.text


def test_the_body_size_limit_applies(hooks: tuple[TestClient, Service]) -> None:
    client, _ = hooks
    body = json.dumps({"type": "x", "pad": "a" * (65 << 10)}).encode()
    r = client.post("/hooks/billing", content=body, headers=std_headers(body))
    assert r.status_code == 413


# -- configurable HMAC ------------------------------------------------------------------


def test_github_style_sha256_hex_over_the_body(hooks: tuple[TestClient, Service]) -> None:
    client, service = hooks
    push = {"ref": "refs/heads/main", "sender": {"login": "octocat", "id": 1},
            "repository": {"full_name": "octo/hello", "id": 99}}  # fmt: skip
    body = json.dumps(push).encode()
    r = client.post("/hooks/github", content=body, headers=gh_headers(body))
    assert r.status_code == 200, r.text
    (stored,) = webhook_entries(service)
    assert stored["action"] == "github.push"
    assert stored["actor"] == {"id": "octocat"}
    assert stored["targets"] == [{"type": "repository", "id": "octo/hello"}]
    assert stored["id"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert stored["raw"] == push
    # Redelivered (same body): the same entry.
    again = client.post("/hooks/github", content=body, headers=gh_headers(body))
    assert again.json()["index"] == r.json()["index"]
    assert again.json()["status"] == "duplicate"
    for headers in (
        gh_headers(body, secret="wrong"),
        {"X-Hub-Signature-256": gh_headers(body)["X-Hub-Signature-256"].removeprefix("sha256=")},
        {"X-Hub-Signature-256": "sha256=zz"},
        {},
    ):
        assert client.post("/hooks/github", content=body, headers=headers).status_code == 401
    assert len(webhook_entries(service)) == 1


def test_timestamp_dot_body_in_base64_with_a_replay_window(
    hooks: tuple[TestClient, Service],
) -> None:
    client, service = hooks
    body = b'["a", "list", "payload"]'
    r = client.post("/hooks/timed", content=body, headers=ts_headers(body))
    assert r.status_code == 200, r.text
    (stored,) = webhook_entries(service)
    assert stored["action"] == "webhook.timed.received"
    assert stored["raw"] == {"payload": ["a", "list", "payload"]}
    stale = ts_headers(body, ts=NOW - 61)
    assert client.post("/hooks/timed", content=body, headers=stale).status_code == 401
    moved = ts_headers(body)
    moved["X-Timestamp"] = str(NOW + 1)  # the signature covers the timestamp
    assert client.post("/hooks/timed", content=body, headers=moved).status_code == 401
    missing = ts_headers(body)
    del missing["X-Timestamp"]
    r = client.post("/hooks/timed", content=body, headers=missing)
    assert r.status_code == 401
    assert "X-Timestamp" in r.json()["detail"]


# -- secrets stay secret ----------------------------------------------------------------


def test_secrets_never_reach_logs_answers_or_entries(
    hooks: tuple[TestClient, Service], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, service = hooks
    body = json.dumps(INVOICE).encode()
    answers = [
        client.post("/hooks/billing", content=body, headers=std_headers(body)),
        client.post("/hooks/billing", content=body + b" ", headers=std_headers(body)),
        client.post("/hooks/github", content=body, headers=gh_headers(body)),
        client.post("/hooks/github", content=body, headers=gh_headers(body, "nope")),
        client.post("/hooks/timed", content=body, headers=ts_headers(body)),
        client.post("/hooks/timed", content=body, headers=ts_headers(body, NOW - 999)),
    ]
    assert [a.status_code for a in answers] == [200, 401, 200, 401, 200, 401]
    assert "webhook refused" in caplog.text  # the failures are logged, by reason
    stored = orjson.dumps(entries(service)).decode()
    texts = [caplog.text, stored, *(a.text for a in answers)]
    for secret in ALL_SECRETS:
        for text in texts:
            assert secret not in text
    assert "ada@example.com" not in caplog.text  # nor the body
    for config in (STANDARD, GITHUB, TIMED):
        assert all(s.reveal() not in repr(config) for s in config.secrets)


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (replace(GITHUB, mapping=(("actor.nickname", "sender.login"),)), "actor.nickname"),
        (replace(GITHUB, mapping=(("severity", "level"),)), "severity"),
        (replace(GITHUB, defaults=(("targets.x.id", "1"),)), "targets.x.id"),
        (replace(GITHUB, mapping=(("source", "x"),)), "source"),
        (replace(GITHUB, mapping=(("raw.x", "x"),)), "raw.x"),
        (replace(GITHUB, defaults=(("actor.type", "robot"),)), "actor.type"),
        (replace(GITHUB, name="Has Spaces"), "hook name"),
        (replace(TIMED, timestamp_header=None), "timestamp_header"),
        (replace(STANDARD, secrets=(Secret("whsec_!!not base64!!"),)), "base64"),
        (replace(GITHUB, scheme="rsa"), "scheme"),
    ],
)
def test_a_bad_hook_configuration_fails_at_app_creation(
    tmp_path: Path, config: WebhookConfig, match: str
) -> None:
    service, _ = Service.open(tmp_path / "data")
    try:
        with pytest.raises(ConfigError, match=match) as raised:
            create_app(service, HttpOptions(hooks=(config,)))
        assert "!!not base64!!" not in str(raised.value)
    finally:
        service.close()


def test_badly_typed_or_unnamed_hooks_in_trailseal_toml_are_config_errors(
    tmp_path: Path,
) -> None:
    (tmp_path / "trailseal.toml").write_text('[[hooks]]\nsecret_env = "S"\n')
    with pytest.raises(ConfigError, match="set name"):
        load({"S": "x"}, data_dir=tmp_path)
    (tmp_path / "trailseal.toml").write_text(
        '[[hooks]]\nname = "a"\nscheme = "hmac"\nsecret_env = "S"\ntolerance_s = "ten"\n'
    )
    with pytest.raises(ConfigError, match="tolerance_s"):
        check_config(load({"S": "x"}, data_dir=tmp_path).hooks)


def test_two_hooks_cannot_share_a_name() -> None:
    with pytest.raises(ConfigError, match="share"):
        check_config((GITHUB, replace(TIMED, name="github")))


def test_hooks_are_read_from_trailseal_toml_with_secrets_from_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "trailseal.toml").write_text(
        """
[[hooks]]
name = "billing"
secret_env = "BILLING_SECRET"
previous_secret_env = "BILLING_OLD_SECRET"
tolerance_s = 120

[hooks.mapping]
action = "type"
"actor.id" = "data.user.id"

[hooks.defaults]
"actor.type" = "user"

[[hooks]]
name = "github"
scheme = "hmac"
secret_env = "GH_SECRET"
header = "X-Hub-Signature-256"
prefix = "sha256="
tenant = "acme"
log = "audit"
"""
    )
    env = {"BILLING_SECRET": STD_SECRET, "BILLING_OLD_SECRET": STD_OLD_SECRET, "GH_SECRET": "g"}
    billing, github = load(env, data_dir=tmp_path).hooks
    assert billing.secrets == (Secret(STD_SECRET), Secret(STD_OLD_SECRET))
    assert (billing.scheme, billing.tolerance_s) == ("standard", 120)
    assert billing.mapping == (("action", "type"), ("actor.id", "data.user.id"))
    assert billing.defaults == (("actor.type", "user"),)
    assert github.secrets == (Secret("g"),)
    assert (github.scheme, github.header, github.prefix) == (
        "hmac",
        "X-Hub-Signature-256",
        "sha256=",
    )
    assert (github.tenant, github.log, github.signed, github.encoding) == (
        "acme",
        "audit",
        "body",
        "hex",
    )
    assert STD_SECRET not in repr(billing)
    check_config((billing, github))
    # A missing secret does not stop commands that do not need it; using it fails.
    missing = load({k: v for k, v in env.items() if k != "GH_SECRET"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="GH_SECRET"):
        missing.hooks[1].secrets[0].reveal()


# -- mapping, purely --------------------------------------------------------------------


def test_mapping_coerces_and_keeps_content_out_of_raw() -> None:
    config = WebhookConfig(
        name="chat",
        secrets=(Secret("s"),),
        scheme="hmac",
        mapping=(
            ("id", "event.id"),
            ("action", "event.kind"),
            ("time", "event.at"),
            ("actor.id", "user.id"),
            ("content.body", "event.text"),
            ("context.channel", "missing.path"),
        ),
    )
    check_config((config,))
    payload = {
        "event": {"id": 12345, "kind": "message posted!", "at": 1_700_000_000, "text": "hi"},
        "user": {"id": 7},
    }
    event = map_webhook(config, payload, "sha256:abc", datetime.fromtimestamp(NOW, UTC))
    assert event == {
        "id": "12345",
        "action": "message_posted",
        "time": "2023-11-14T22:13:20Z",
        "actor": {"id": "7"},
        "content": {"body": "hi"},
        "source": "webhook:chat",
        "raw": {"event": {"id": 12345, "kind": "message posted!", "at": 1_700_000_000},
                "user": {"id": 7}},
    }  # fmt: skip
    assert payload["event"]["text"] == "hi"  # the caller's payload is left alone
