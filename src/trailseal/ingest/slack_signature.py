"""Slack request signing, v0 (api.slack.com/authentication/verifying-requests-from-slack).

``v0=HMAC-SHA256(signing secret, "v0:" + timestamp + ":" + raw body)`` in hex, sent in
``X-Slack-Signature`` with ``X-Slack-Request-Timestamp``. Requests older or newer than
five minutes are refused (replay window); the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

from trailseal.errors import AuthError

MAX_SKEW_S = 300


def slack_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value for a request."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify_slack_request(
    secrets: list[bytes], timestamp: str | None, signature: str | None, body: bytes, now_s: float
) -> None:
    """Raise :class:`AuthError` unless one of ``secrets`` signed this request recently.

    Several secrets may be live during a rotation. The message never includes the body.
    """
    if not timestamp or not signature:
        raise AuthError("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not timestamp.isdigit():
        raise AuthError("X-Slack-Request-Timestamp is not a Unix time")
    if abs(now_s - int(timestamp)) > MAX_SKEW_S:
        raise AuthError("X-Slack-Request-Timestamp is outside the 5-minute window (replay?)")
    given = signature.encode()
    ok = False
    for secret in secrets:
        # Check every secret, so the time taken does not say which one matched.
        ok |= hmac.compare_digest(slack_signature(secret, timestamp, body).encode(), given)
    if not ok:
        raise AuthError("the Slack signature does not verify")
