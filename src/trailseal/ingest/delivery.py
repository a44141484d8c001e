"""The delivery lifecycle of messages trailseal itself posts to Slack.

Every message goes through states, each an event in the log under one correlation id:
``delivery.queued`` → ``delivery.sent`` (request on the wire) → ``delivery.acknowledged``
(Slack answered ``ok`` with the message ``ts``), or ``delivery.failed`` with Slack's
error; a retry after a rate limit or a network error is ``delivery.retried``. The
message text is content: its commitment is in the log, not the text.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from trailseal.errors import Error

Append = Callable[[list[dict[str, Any]]], None]
"""Appends events durably (e.g. a bound ``Service.ingest``)."""
Sleep = Callable[[float], None]

SOURCE = "trailseal.delivery"


class DeliveryError(Error):
    """Slack refused a message for good (after retries, or a permanent error)."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message Slack acknowledged."""

    delivery_id: str
    channel: str
    ts: str
    attempts: int


class SlackPoster:
    """Posts messages with ``chat.postMessage`` and logs every state of each delivery."""

    def __init__(
        self,
        token: str,
        append: Append,
        *,
        base_url: str = "https://slack.com/api/",
        max_attempts: int = 4,
        sleep: Sleep,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._token = token
        self._append = append
        self._sleep = sleep
        self.max_attempts = max_attempts
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/", timeout=timeout_s, transport=transport
        )

    def __repr__(self) -> str:
        return "SlackPoster(token=***)"

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()

    def _record(
        self,
        state: str,
        delivery_id: str,
        channel: str,
        attempt: int,
        status: str,
        reason: str | None = None,
        text: str | None = None,
        acknowledged_by: str | None = None,
    ) -> None:
        delivery: dict[str, Any] = {"attempt": attempt}
        if attempt > 1:
            delivery["retry_of"] = delivery_id
        if acknowledged_by:
            delivery["acknowledged_by"] = acknowledged_by
        event: dict[str, Any] = {
            "id": f"{delivery_id}/{state}/{attempt}",
            "source": SOURCE,
            "class": "delivery",
            "action": f"delivery.{state}",
            "actor": {"type": "app", "id": "trailseal"},
            "targets": [{"type": "channel", "id": channel}],
            "correlation": {"id": delivery_id},
            "result": {"status": status, "delivery": delivery},
        }
        if reason:
            event["result"]["reason"] = reason[:1024]
        if text is not None:
            event["content"] = {"body": text, "media_type": "text/plain"}
        self._append([event])

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: list[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Delivered:
        """Post a message; returns once Slack acknowledged it, every state logged."""
        delivery_id = correlation_id or "dlv_" + secrets.token_hex(10)
        self._record("queued", delivery_id, channel, 1, "attempt", text=text)
        payload: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            payload["blocks"] = blocks
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._record("retried", delivery_id, channel, attempt, "attempt")
            self._record("sent", delivery_id, channel, attempt, "attempt")
            try:
                response = self._http.post(
                    "chat.postMessage",
                    json=payload,
                    headers={"Authorization": f"Bearer {self._token}"},
                )
            except httpx.HTTPError as e:
                reason = f"network error: {type(e).__name__}"
                wait = min(2.0**attempt, 30.0)
            else:
                if response.status_code == 429:
                    reason = "rate limited by Slack"
                    wait = min(float(response.headers.get("Retry-After", "1") or 1), 60.0)
                else:
                    body = response.json() if response.content else {}
                    if response.status_code == 200 and body.get("ok"):
                        ts = str(body.get("ts", ""))
                        self._record(
                            "acknowledged",
                            delivery_id,
                            channel,
                            attempt,
                            "success",
                            acknowledged_by=f"slack:{ts}",
                        )
                        return Delivered(delivery_id, channel, ts, attempt)
                    reason = str(body.get("error") or f"HTTP {response.status_code}")
                    if response.status_code < 500:
                        self._record("failed", delivery_id, channel, attempt, "failure", reason)
                        raise DeliveryError(f"Slack refused the message: {reason}")
                    wait = min(2.0**attempt, 30.0)
            if attempt == self.max_attempts:
                self._record("failed", delivery_id, channel, attempt, "failure", reason)
                raise DeliveryError(f"gave up after {attempt} attempts: {reason}")
            self._sleep(wait)
        raise DeliveryError("unreachable")  # pragma: no cover - the loop returns or raises
