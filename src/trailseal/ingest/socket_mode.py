"""Slack Socket Mode: Events API deliveries over a WebSocket instead of a public URL.

One :class:`SocketModeIngestor` per ``[[slack.socket_mode]]`` app wraps slack_sdk's
built-in, thread-based :class:`~slack_sdk.socket_mode.SocketModeClient`. The client asks
``apps.connections.open`` (with the app-level ``xapp-`` token) for a WebSocket URL,
answers pings, reconnects when Slack sends ``disconnect`` (``refresh_requested``,
``warning``) or the socket drops, and hands every envelope to :meth:`_on_request` on one
of its worker threads.

An ``events_api`` envelope carries the same ``event_callback`` payload as an HTTP
delivery, so it becomes trailseal events through the HTTP route's own
:func:`~trailseal.http.routes_slack.events_for`; ``retry_attempt`` and ``retry_reason``,
which HTTP sends as headers, sit in the envelope. The acknowledgement
(``{"envelope_id": ...}``) goes out only after :meth:`Service.ingest` has returned, that
is once the entries are durable. When ingest fails nothing is acknowledged and Slack
redelivers the envelope later; the redelivery is deduplicated by ``event_id`` and
recorded as a delivery attempt. ``slash_commands`` and ``interactive`` envelopes belong
to the /audit app: given an ``interactive`` handler (the app's bolt dispatch), its answer
becomes the acknowledgement's payload (a modal's inline errors, an ephemeral reply);
without one they are acknowledged (so Slack shows no error) and not recorded.

Nothing from a payload, and never the token or the WebSocket URL (its ticket is a
credential), reaches a log: slack_sdk logs through a logger pinned at INFO, below which
it would print request bodies (the token among them) and messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web import WebClient

from trailseal.errors import ConfigError
from trailseal.http.routes_slack import events_for
from trailseal.ingest.slack_events import SOURCE, home_tab_opener
from trailseal.service.core import Service
from trailseal.service.registry import Principal
from trailseal.settings import SocketModeApp

LOGGER = logging.getLogger("trailseal.socket_mode")
_SDK_LOGGER = logging.getLogger("trailseal.socket_mode.sdk")

ACK_ONLY = frozenset({"slash_commands", "interactive"})
"""Envelope types that are not Events API deliveries: the /audit app's."""

Interactive = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Handles a slash command or interaction payload; returns the acknowledgement payload."""


class SocketModeIngestor:
    """Receives one Slack app's Events API deliveries over Socket Mode into a log."""

    def __init__(
        self,
        app: SocketModeApp,
        service: Service,
        *,
        ping_interval: float = 5.0,
        concurrency: int = 10,
        interactive: Interactive | None = None,
        home_opened: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.interactive = interactive
        """The /audit app's handler for ``slash_commands`` and ``interactive`` envelopes."""
        self.home_opened = home_opened
        """The /audit app's Home tab publisher, told who opened the tab (after storing)."""
        self.service = service
        self.ping_interval = ping_interval
        """Seconds between the client's pings; a socket silent for four is reconnected."""
        self.concurrency = concurrency
        self.principal = Principal(
            f"slack-socket:{app.name}", app.tenant, "ingest", False, internal=True
        )
        self._client: SocketModeClient | None = None

    @property
    def client(self) -> SocketModeClient | None:
        """The running client, between :meth:`start` and :meth:`stop`."""
        return self._client

    def start(self) -> None:
        """Open the first connection; the client keeps it (and its successors) up.

        Raises :class:`ConfigError` when the log does not exist or Slack refuses the
        app-level token (``apps.connections.open`` fails), and ``OSError`` when Slack
        cannot be reached; nothing keeps running after a failed start.
        """
        if self._client is not None:
            return
        self.service.registry.log(self.app.tenant, self.app.log)  # NotFoundError early
        # Never DEBUG: slack_sdk would log the form body of apps.connections.open (with
        # the token) and every message it receives. Otherwise trailseal's own level.
        _SDK_LOGGER.setLevel(max(logging.INFO, LOGGER.getEffectiveLevel()))
        web = WebClient(
            base_url=self.app.base_url, token=self.app.app_token.reveal(), logger=_SDK_LOGGER
        )
        client = SocketModeClient(
            app_token=self.app.app_token.reveal(),
            web_client=web,
            logger=_SDK_LOGGER,
            auto_reconnect_enabled=True,
            ping_interval=self.ping_interval,
            concurrency=self.concurrency,
        )
        client.socket_mode_request_listeners.append(self._on_request)
        client.on_message_listeners.append(self._on_raw_message)
        try:
            client.connect()
        except SlackApiError as e:
            client.close()
            code = e.response.get("error", "unknown") if e.response is not None else "unknown"
            raise ConfigError(
                f"Socket Mode app {self.app.name!r}: apps.connections.open failed ({code}); "
                "check the app-level token (xapp-, scope connections:write) and that "
                "Socket Mode is on in the app's settings"
            ) from None
        except BaseException:
            client.close()
            raise
        self._client = client
        LOGGER.info(
            "socket mode started",
            extra={"app": self.app.name, "tenant": self.app.tenant, "log": self.app.log},
        )

    def stop(self) -> None:
        """Close the connection and join the client's threads (in-flight envelopes finish
        first; their acknowledgements may then fail, and Slack redelivers them)."""
        client, self._client = self._client, None
        if client is None:
            return
        # slack_sdk's close() races the client's own threads: a reconnect finishing while
        # it runs leaves a live session whose receiver never ends, and two threads
        # disconnecting one session at once raise AttributeError halfway through. So stop
        # reconnecting first, keep telling the receiver to end until close() returns, and
        # call close() again if it was interrupted.
        client.auto_reconnect_enabled = False
        client.closed = True
        # (IntervalRunner.shutdown is unannotated in slack_sdk.)
        client.current_app_monitor.shutdown()  # type: ignore[no-untyped-call]
        client.message_processor.shutdown()  # type: ignore[no-untyped-call]
        closing = threading.Event()

        def end_receiver() -> None:
            while not closing.wait(0.05):
                client.current_session_state.terminated = True

        guard = threading.Thread(target=end_receiver, name=f"socket-mode-stop-{self.app.name}")
        guard.start()
        session = client.current_session
        sock = session.sock if session is not None else None
        if sock is not None:
            # Wakes the receiver now rather than at its 3-second read timeout.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        try:
            try:
                client.close()
            except Exception as e:
                LOGGER.warning(
                    "socket mode close interrupted; closing again",
                    extra={"app": self.app.name, "error": type(e).__name__},
                )
                client.close()
        finally:
            closing.set()
            guard.join()
        LOGGER.info("socket mode stopped", extra={"app": self.app.name})

    # -- the client's callbacks, on its threads ---------------------------------------

    def _on_raw_message(self, raw: str) -> None:
        """Log connection lifecycle messages (the client itself reconnects).

        A raw-message listener, because the client acts on ``disconnect`` without passing
        it to its other listeners."""
        if '"disconnect"' not in raw and '"hello"' not in raw:
            return
        try:
            message = json.loads(raw)
        except ValueError:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "disconnect":
            reason = str(message.get("reason", ""))[:64]
            level = logging.WARNING if reason == "link_disabled" else logging.INFO
            LOGGER.log(
                level,
                "socket mode disconnect requested; reconnecting",
                extra={"app": self.app.name, "reason": reason},
            )
        elif kind == "hello":
            LOGGER.info(
                "socket mode connected",
                extra={"app": self.app.name, "connections": message.get("num_connections")},
            )

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        """Record an ``events_api`` envelope, then acknowledge it; hand the /audit app's
        envelopes to its handler and acknowledge with its answer; acknowledge the rest."""
        payload: dict[str, Any] | None = None
        if request.type == "events_api":
            if not self._ingest(request):
                return  # not acknowledged: Slack delivers it again
            opener = (
                home_tab_opener(request.payload)
                if self.home_opened is not None and isinstance(request.payload, dict)
                else None
            )
            if opener is not None and self.home_opened is not None:
                self.home_opened(opener)  # queues the publish; the ack does not wait
        elif request.type in ACK_ONLY:
            if self.interactive is not None and isinstance(request.payload, dict):
                try:
                    payload = self.interactive(request.payload)
                except Exception as e:
                    LOGGER.error(
                        "slack app envelope failed; acknowledged empty",
                        extra={"app": self.app.name, "error": type(e).__name__},
                    )
        else:
            LOGGER.warning(
                "unknown socket mode envelope type acknowledged, not recorded",
                extra={"app": self.app.name, "envelope_type": str(request.type)[:64]},
            )
        try:
            client.send_socket_mode_response(
                SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
            )
        except Exception as e:
            # Durable already; Slack redelivers, and the redelivery is deduplicated.
            LOGGER.warning(
                "socket mode acknowledgement not sent",
                extra={"app": self.app.name, "error": type(e).__name__},
            )

    def _ingest(self, request: SocketModeRequest) -> bool:
        retry = request.retry_attempt
        try:
            events = events_for(
                request.payload,
                None if retry is None else str(retry),
                request.retry_reason,
            )
            for event in events:
                if event.get("auth") == {"method": "signing-secret"}:
                    # Delivered over the link the app-level token opened, not signed.
                    event["auth"] = {"method": "token"}
            self.service.ingest(self.principal, self.app.log, events, SOURCE)
        except Exception as e:
            LOGGER.error(
                "socket mode event not stored; not acknowledged, Slack will redeliver it",
                extra={"app": self.app.name, "error": type(e).__name__},
            )
            return False
        return True
