"""The /audit app: a slack_bolt ``App`` behind trailseal's own signature check.

Requests reach it two ways, both ending in :meth:`AuditApp.dispatch`: over HTTP (the
routes in :mod:`trailseal.http.routes_audit` verify the v0 signature over the raw body
first) and over Socket Mode (the ingestor hands ``slash_commands`` and ``interactive``
envelopes to :meth:`AuditApp.dispatch_socket_mode`).

Bolt runs with ``process_before_response=True``: a listener's return is the response, so
each listener does only what must precede the answer — validating the form and
recording the request, or refusing — then acknowledges and hands Slack calls and report
generation to :class:`~trailseal.slackapp.background.Background`. Slack's 3-second
deadline is then met by construction, and the background queue can be waited on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from slack_bolt import Ack, App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.web import WebClient

from trailseal.errors import ConfigError
from trailseal.ingest.delivery import SlackPoster
from trailseal.ledger import rfc3339
from trailseal.service.core import Service
from trailseal.settings import AuditAppConfig
from trailseal.slackapp import messages
from trailseal.slackapp.background import Background
from trailseal.slackapp.directory import RetryAfterHandler
from trailseal.slackapp.journal import Actor, Journal
from trailseal.slackapp.links import DownloadLinks, load_key, register_key
from trailseal.slackapp.modal import CALLBACK_ID, Submission, parse_submission, request_modal
from trailseal.slackapp.report_store import ReportStore
from trailseal.slackapp.roles import RoleResolver
from trailseal.slackapp.workflow import Workflow

LOGGER = logging.getLogger("trailseal.slackapp")
_SDK_LOGGER = logging.getLogger("trailseal.slackapp.sdk")
_BOLT_LOGGER = logging.getLogger("trailseal.slackapp.bolt")

AUTH_KEY = "trailseal_auth"
"""Context key saying how a request was authenticated (signing-secret or token)."""


def _actor(body: dict[str, Any], context: BoltContext) -> Actor:
    user = body.get("user_id") or (body.get("user") or {}).get("id") or context.user_id or ""
    team = (
        body.get("team_id")
        or (body.get("team") or {}).get("id")
        or (body.get("user") or {}).get("team_id")
        or context.team_id
        or ""
    )
    return Actor(str(user), str(team), str(context.get(AUTH_KEY, "signing-secret")))


class AuditApp:
    """The app: its bolt ``App``, workflow, background workers and expiry sweeper."""

    def __init__(
        self,
        service: Service,
        config: AuditAppConfig,
        *,
        sweep_interval_s: float = 60.0,
        workers: int = 4,
        report_workers: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.config = config
        self.sweep_interval_s = sweep_interval_s
        token = config.bot_token.reveal()
        # Never DEBUG: slack_sdk would log request bodies, the token among them. Bolt
        # logs the body of a request no listener handles at WARNING (people's input):
        # only its errors pass, and unhandled requests are logged here by type alone.
        _SDK_LOGGER.setLevel(max(logging.INFO, LOGGER.getEffectiveLevel()))
        _BOLT_LOGGER.setLevel(logging.ERROR)
        # Rate limits: a 429 is retried after Slack's Retry-After (capped), so a busy
        # workspace delays a notice instead of losing it.
        self.web = WebClient(
            token=token,
            base_url=config.base_url,
            logger=_SDK_LOGGER,
            retry_handlers=[
                ConnectionErrorRetryHandler(),
                RetryAfterHandler(sleep, max_retry_count=3, cap_s=30.0),
            ],
        )
        self.journal = Journal(service, config.tenant, config.log)
        self.background = Background(workers)
        self.report_queue = Background(report_workers)
        self.roles = RoleResolver(config.roles, self.web, ttl_s=config.group_cache_s)
        # Behind one load balancer a link made on one node is followed to another: every
        # node registers its link key's public half, and on a shared store the nodes
        # share the report files too. One node just finds its own key there.
        link_key = load_key(service.data_dir.path / "keys")
        register_key(service.registry, link_key, rfc3339(service.clock()))
        self.links = DownloadLinks(link_key, service.registry, config.public_url)
        shared = service.registry if service.shared else None
        self.poster = SlackPoster(
            token,
            self._append_delivery,
            base_url=config.base_url,
            sleep=sleep,
        )
        self.workflow = Workflow(
            config,
            self.journal,
            self.web,
            self.poster,
            self.roles,
            self.links,
            self.background,
            ReportStore(service.data_dir.path / "reports", shared, service.clock),
            self.report_queue,
        )
        self.bolt = self._build_bolt(token)
        self._stop = threading.Event()
        self._resumed = False  # unfinished reports resumed (by the elected node)
        self._sweeper: threading.Thread | None = None

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until no Slack call or report is queued or running (tests, shutdown)."""
        while True:
            if not (
                self.background.wait_idle(timeout_s) and self.report_queue.wait_idle(timeout_s)
            ):
                return False
            # A report queues notices and a notice may queue a report: both idle at once.
            if self.background.wait_idle(0) and self.report_queue.wait_idle(0):
                return True

    def _append_delivery(self, events: list[dict[str, Any]]) -> None:
        self.service.ingest(self.journal.principal, self.config.log, events, "trailseal.delivery")

    # -- lifecycle ----------------------------------------------------------------------

    def check(self) -> None:
        """Fail early when the configured log does not exist."""
        try:
            self.journal.tlog()
        except Exception as e:
            raise ConfigError(
                f"[slack.audit_app]: log {self.config.log!r} of tenant "
                f"{self.config.tenant!r} does not exist ({e})"
            ) from e

    def start(self) -> None:
        """Resume unfinished reports and start the expiry sweeper thread (for ``serve``).

        With many nodes on one PostgreSQL store, one node at a time (elected like a log's
        integrator) resumes reports and sweeps expiries; at every sweep it also resumes
        reports left unfinished by a node that died (a report is built under a claim on
        the store, so it is never built by two nodes at once).
        """
        self.check()
        self._resumed = False
        if self._leads():
            self.workflow.resume()
            self._resumed = True
        self._sweeper = threading.Thread(target=self._sweep_loop, name="slackapp-sweeper")
        self._sweeper.daemon = True
        self._sweeper.start()

    def _leads(self) -> bool:
        return self.service.leads(f"slackapp:{self.config.tenant}/{self.config.log}")

    def _sweep_loop(self) -> None:
        # Until elected, look every second, so a node takes over quickly from a dead one.
        while not self._stop.wait(self.sweep_interval_s if self._resumed else 1.0):
            if not self._leads():
                continue
            try:
                if not self._resumed:
                    self.workflow.resume()
                    self._resumed = True
                else:  # a report another node was building when it died
                    self.workflow.resume(retry_failed=False)
                self.workflow.sweep()
            except Exception as e:
                LOGGER.error("expiry sweep failed", extra={"error": type(e).__name__})

    def stop(self) -> None:
        """Stop the sweeper, finish background jobs, release connections."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.background.close()
        # A queued report is not lost: the next start resumes approved requests
        # without a report. Only the ones already running are waited for.
        self.report_queue.close(cancel_queued=True)
        self.poster.close()

    # -- entry points -------------------------------------------------------------------

    def dispatch(
        self, raw_body: str, headers: dict[str, str | Sequence[str]]
    ) -> tuple[int, str, str]:
        """Handle a verified HTTP request; returns (status, body, content type)."""
        request = BoltRequest(body=raw_body, headers=headers, context={AUTH_KEY: "signing-secret"})
        response = self._dispatch(request)
        content_type = response.headers.get("content-type", ["text/plain"])[0]
        return response.status, str(response.body or ""), content_type

    def dispatch_socket_mode(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Handle a ``slash_commands`` or ``interactive`` envelope's payload; returns the
        acknowledgement's payload (None for an empty one), as Socket Mode expects."""
        request = BoltRequest(body=payload, mode="socket_mode", context={AUTH_KEY: "token"})
        response = self._dispatch(request)
        if response.status != 200 or not response.body:
            return None
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            value = json.loads(response.body)
            return value if isinstance(value, dict) else None
        return {"text": response.body}

    def _dispatch(self, request: BoltRequest) -> BoltResponse:
        response = self.bolt.dispatch(request)
        if response.status == 404:
            kind = request.body.get("type") or request.body.get("command") or "unknown"
            LOGGER.info("slack request not handled by the app", extra={"type": str(kind)[:64]})
        return response

    def app_home_opened(self, user: str) -> None:
        """The Events API delivered ``app_home_opened`` (already stored): publish the tab."""
        if not user:
            return
        try:
            self.background.submit("home", self.workflow.publish_home, user)
        except RuntimeError:  # shutting down: the event is stored, the tab waits
            LOGGER.info("home tab not published: the app is stopping")

    # -- bolt ---------------------------------------------------------------------------

    def _build_bolt(self, token: str) -> App:
        def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            # A single-workspace app with a configured bot token: no auth.test per
            # request (bolt's default would call Slack before every first request).
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

        bolt = App(
            # Listeners use self.web; bolt gets a token-less client so that the token
            # comes from authorize() alone.
            client=WebClient(base_url=self.config.base_url, logger=_SDK_LOGGER),
            authorize=authorize,
            # trailseal verified the v0 signature over the raw body before dispatching
            # (with both secrets during a rotation and the service clock), and Socket Mode
            # envelopes are not signed at all; bolt's own check would need the secret a
            # second time and a wall clock, so it is off.
            request_verification_enabled=False,
            process_before_response=True,
            logger=_BOLT_LOGGER,
            raise_error_for_unhandled_request=False,
        )
        bolt.command("/audit")(self._on_command)
        bolt.view_submission(CALLBACK_ID)(self._on_submission)
        bolt.action(messages.ACTION_APPROVE)(self._on_approve)
        bolt.action(messages.ACTION_DENY)(self._on_deny)
        bolt.action({"action_id": r"^download:\d+$"})(self._on_link_click)
        return bolt

    def _on_command(self, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        actor = _actor(body, context)
        words = str(body.get("text") or "").strip().lower().split()
        sub = words[0] if words else ""
        if sub == "help":
            ack(text=messages.HELP, response_type="ephemeral")
            return
        if sub not in ("", "status"):
            ack(text=f"Unknown `/audit {sub}`.\n\n{messages.HELP}", response_type="ephemeral")
            return
        if not (self.roles.is_requester(actor.user) or self.roles.is_approver(actor.user)):
            text = self.workflow.refuse(actor, "requester", f"/audit {sub}".strip())
            ack(text=text, response_type="ephemeral")
            return
        if sub == "status":
            # The state already reads "expired" past the expiry; writing it (and telling
            # Slack) is the sweep's job, after the answer.
            self.background.submit("sweep", self.workflow.sweep)
            blocks = messages.status_blocks(self.workflow.listed(actor.user))
            ack(text="Your audit requests", blocks=blocks, response_type="ephemeral")
            return
        if not self.roles.is_requester(actor.user):
            text = self.workflow.refuse(actor, "requester", "/audit")
            ack(text=text, response_type="ephemeral")
            return
        ack()
        view = request_modal(
            self.journal.now(), self.config.max_range_days, str(body.get("channel_id") or "")
        )
        trigger_id = str(body.get("trigger_id") or "")
        self.background.submit("views.open", self._open_modal, trigger_id, view)

    def _open_modal(self, trigger_id: str, view: dict[str, Any]) -> None:
        self.workflow.call_slack(
            "views.open", self.web.views_open, trigger_id=trigger_id, view=view
        )

    def _on_submission(self, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        actor = _actor(body, context)
        if not self.roles.is_requester(actor.user):
            text = self.workflow.refuse(actor, "requester", "submit")
            ack(response_action="errors", errors={"purpose": text[:300]})
            return
        values = body.get("view", {}).get("state", {}).get("values", {})
        parsed = parse_submission(
            values,
            team_id=actor.team,
            now=self.journal.now(),
            max_range_days=self.config.max_range_days,
        )
        if not isinstance(parsed, Submission):
            ack(response_action="errors", errors=parsed)
            return
        request = self.workflow.submit(actor, parsed)
        ack(response_action="update", view=messages.submitted_view(request))

    def _decision(
        self, decision: str, ack: Ack, body: dict[str, Any], context: BoltContext
    ) -> None:
        ack()
        actor = _actor(body, context)
        actions = body.get("actions") or [{}]
        rid = str(actions[0].get("value") or "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        self.background.submit(
            "decide", self.workflow.decide, actor, rid, decision, str(channel or "") or None
        )

    def _on_approve(self, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        self._decision("approved", ack, body, context)

    def _on_deny(self, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        self._decision("denied", ack, body, context)

    def _on_link_click(self, ack: Ack) -> None:
        ack()  # a URL button: the browser opens the link; Slack still wants an ack
