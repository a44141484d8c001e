"""The approval workflow: request → decision (approved, denied, expired) → report.

Every step is first an event in the log (:class:`~trailseal.slackapp.journal.Journal`),
then Slack is told. A step that lost a race (a second click, a second node, the expiry
sweep) finds the winner's event and reports that instead of its own; Slack calls that
fail are logged and do not undo a step, because the log, not Slack, is the record.

The approvers' message goes out through :class:`~trailseal.ingest.delivery.SlackPoster`
with the request id as its delivery id: its queued/sent/acknowledged events share the
request's correlation id, the acknowledged one holds the message ``ts`` that later
``chat.update`` calls and the report thread need, and a rate-limited post is retried.
Notices to people go through the Web API client directly: a lost notice is not a lost
step, and the step itself is already in the log.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import timedelta
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from trailseal.errors import Error, SlackError
from trailseal.ingest.delivery import DeliveryError, SlackPoster
from trailseal.settings import AuditAppConfig
from trailseal.slackapp import messages
from trailseal.slackapp.background import Background
from trailseal.slackapp.journal import (
    SYSTEM,
    Actor,
    Journal,
    Written,
    at,
    new_request_id,
    parse_time,
    request_record_raw,
)
from trailseal.slackapp.links import DownloadLinks
from trailseal.slackapp.modal import Submission
from trailseal.slackapp.model import (
    ACTION_REPORT,
    ACTION_REQUESTED,
    DECISION_ACTIONS,
    AuditRequest,
    decision_event_id,
    report_event_id,
    request_event_id,
)
from trailseal.slackapp.report_store import ReportStore
from trailseal.slackapp.reports import build_report, upload_report
from trailseal.slackapp.roles import RoleResolver

LOGGER = logging.getLogger("trailseal.slackapp")


class Workflow:
    """The app's steps, each recorded before Slack hears of it."""

    def __init__(
        self,
        config: AuditAppConfig,
        journal: Journal,
        web: WebClient,
        poster: SlackPoster,
        roles: RoleResolver,
        links: DownloadLinks,
        background: Background,
        reports: ReportStore,
        report_queue: Background | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.web = web
        self.poster = poster
        self.roles = roles
        self.links = links
        self.background = background
        # Reports take minutes on a big log: they get their own workers, so that a
        # modal or a click is never queued behind one (a trigger_id lasts 3 seconds).
        self.report_queue = report_queue or background
        self.reports = reports
        self.reports_dir = reports.directory
        self._dm: dict[str, str] = {}
        self._reporting: set[str] = set()
        self._failed: set[str] = set()  # reports that failed on this node since start
        self._lock = threading.Lock()

    # -- Slack helpers ------------------------------------------------------------------

    def call_slack(self, what: str, call: Any, **kwargs: Any) -> Any:
        """One Web API call; a failure is logged (method and error code) and None."""
        try:
            return call(**kwargs)
        except SlackApiError as e:
            code = e.response.get("error", "unknown") if e.response is not None else "unknown"
            LOGGER.warning("slack call failed", extra={"call": what, "error": str(code)[:64]})
        except OSError as e:
            LOGGER.warning("slack call failed", extra={"call": what, "error": type(e).__name__})
        return None

    def dm_channel(self, user: str) -> str | None:
        """The app's direct-message channel with ``user`` (``conversations.open``)."""
        with self._lock:
            if user in self._dm:
                return self._dm[user]
        response = self.call_slack("conversations.open", self.web.conversations_open, users=user)
        if response is None:
            return None
        channel = str(response["channel"]["id"])
        with self._lock:
            self._dm[user] = channel
        return channel

    def dm(self, user: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """A direct message to ``user``."""
        channel = self.dm_channel(user)
        if channel is not None:
            self.call_slack(
                "chat.postMessage",
                self.web.chat_postMessage,
                channel=channel,
                text=text,
                blocks=blocks or [messages.section(text)],
            )

    def tell(self, user: str, text: str, channel: str | None = None) -> None:
        """An ephemeral message in ``channel`` when there is one, a DM otherwise."""
        if channel and not channel.startswith("D"):
            sent = self.call_slack(
                "chat.postEphemeral",
                self.web.chat_postEphemeral,
                channel=channel,
                user=user,
                text=text,
            )
            if sent is not None:
                return
        self.dm(user, text)

    # -- requests -----------------------------------------------------------------------

    def refuse(self, actor: Actor, role: str, attempted: str, rid: str | None = None) -> str:
        """Record a refusal for lack of ``role``; returns what to tell the user."""
        reason = "not an approver" if role == "approver" else f"not a {role}"
        self.journal.refused(actor, attempted, reason, rid)
        return messages.refusal(role, self.roles.approvers_hint())

    def submit(self, actor: Actor, submission: Submission) -> AuditRequest:
        """Record a valid request (before the modal closes); Slack is told after."""
        now = self.journal.now()
        expires = now + timedelta(hours=self.config.request_expiry_hours)
        request = AuditRequest(
            id=new_request_id(),
            requester=actor.user,
            team_id=actor.team,
            scope=submission.scope,
            purpose=submission.purpose,
            requested_at=at(now),
            expires_at=at(expires),
        )
        targets = [{"type": "audit_request", "id": request.id}]
        targets += [{"type": "channel", "id": c} for c in submission.scope.channels[:40]]
        targets += [{"type": "user", "id": u} for u in submission.scope.users[:40]]
        self.journal.append(
            ACTION_REQUESTED,
            request_event_id(request.id),
            actor,
            rid=request.id,
            raw=request_record_raw(request),
            targets=targets,
        )
        self.background.submit("announce", self.announce, request)
        return request

    def announce(self, request: AuditRequest) -> None:
        """Post the request to the approvers and confirm it to the requester."""
        text, blocks = messages.approval_message(request)
        try:
            self.poster.post_message(
                self.config.approvers_channel, text, blocks, correlation_id=request.id
            )
        except DeliveryError as e:
            LOGGER.error(
                "approvers' message not delivered", extra={"rid": request.id, "error": str(e)}
            )
            # Not "sent to the approvers": the requester would wait for nobody.
            self.dm(request.requester, messages.undelivered_notice(request, str(e)))
            return
        self.dm(request.requester, messages.submitted_notice(request))

    # -- decisions ----------------------------------------------------------------------

    def decide(self, actor: Actor, rid: str, decision: str, channel: str | None) -> None:
        """An approver clicked Approve or Deny (runs after the click was acknowledged).

        ``channel`` is None for a click on the Home tab: replies go by DM, and the tab
        is published again so that it shows the outcome."""
        self._decide(actor, rid, decision, channel)
        if channel is None:
            self.publish_home(actor.user)

    def _decide(self, actor: Actor, rid: str, decision: str, channel: str | None) -> None:
        self.sweep()
        # The role first: a click by a non-approver is a recorded refusal whatever it names.
        if not self.roles.is_approver(actor.user):
            self.tell(actor.user, self.refuse(actor, "approver", decision, rid), channel)
            return
        request = self.journal.request(rid)
        if request is None:
            self.journal.refused(actor, decision, "no such request", rid[:64] or None)
            self.tell(actor.user, f"There is no audit request `{messages.escape(rid)}`.", channel)
            return
        if actor.user == request.requester:
            self.journal.refused(actor, decision, "self-approval", rid)
            self.tell(
                actor.user,
                f":no_entry_sign: You cannot decide on your own request `{rid}`; another "
                "approver must. This attempt was recorded.",
                channel,
            )
            return
        if parse_time(request.expires_at) <= self.journal.now():
            expired_now = self.expire(request)
            existing = self.journal.decision(rid) or {}
            if not expired_now and existing:
                self._show_outcome(request, existing)  # stale buttons, as below
            if existing.get("raw", {}).get("decision") == "expired":
                self.journal.refused(actor, decision, "expired", rid)
            self._tell_existing(actor.user, rid, existing, channel)
            return
        written = self._write_decision(actor, request, decision)
        if written.first:
            self._after_decision(request, decision, actor.user, written.record)
        else:
            # A click on buttons that should be gone: the update after the decision
            # failed (or has not run yet), so show the recorded outcome again.
            self._show_outcome(request, written.record)
            self._tell_existing(actor.user, rid, written.record, channel)

    def _write_decision(self, actor: Actor, request: AuditRequest, decision: str) -> Written:
        return self.journal.append(
            DECISION_ACTIONS[decision],
            decision_event_id(request.id),
            actor,
            rid=request.id,
            raw={"request_id": request.id, "decision": decision},
        )

    def _tell_existing(
        self, user: str, rid: str, record: dict[str, Any], channel: str | None
    ) -> None:
        decision = str(record.get("raw", {}).get("decision", "decided"))
        by = str(record.get("actor", {}).get("id", ""))
        who = "by expiry" if decision == "expired" else f"by <@{by}>"
        self.tell(
            user,
            f"Request `{rid}` was already {decision} {who} at {record.get('time', '?')}; "
            "your click changed nothing.",
            channel,
        )

    def _after_decision(
        self, request: AuditRequest, decision: str, by: str, record: dict[str, Any]
    ) -> None:
        self._show_outcome(request, record)
        self.dm(request.requester, messages.outcome_notice(request, decision, by))
        if decision == "approved":
            self.report_queue.submit("report", self.run_report, request.id)

    def _show_outcome(self, request: AuditRequest, record: dict[str, Any]) -> None:
        """Replace the buttons of the approvers' message with the recorded decision."""
        message = self.journal.approval_message(request.id)
        if message is None:
            return
        decision = str(record.get("raw", {}).get("decision", "decided"))
        by = str(record.get("actor", {}).get("id", ""))
        text, blocks = messages.approval_message(
            request, (decision, by, str(record.get("time", "")))
        )
        self.call_slack(
            "chat.update",
            self.web.chat_update,
            channel=message[0],
            ts=message[1],
            text=text,
            blocks=blocks,
        )

    def expire(self, request: AuditRequest) -> bool:
        """Write the ``expired`` decision; True when this call wrote it."""
        written = self._write_decision(SYSTEM, request, "expired")
        if written.first:
            self._after_decision(request, "expired", SYSTEM.user, written.record)
        return written.first

    def sweep(self) -> int:
        """Expire every pending request past its expiry; returns how many this call did."""
        now = self.journal.now()
        done = 0
        for request in self.journal.pending():
            if parse_time(request.expires_at) <= now and self.expire(request):
                done += 1
        return done

    # -- reports ------------------------------------------------------------------------

    def resume(self, *, retry_failed: bool = True) -> int:
        """Queue the report of every approved request that has none (crash recovery).

        At start every one; from the sweeper (``retry_failed=False``) the ones this node
        has not seen fail since it started: those of a node that died mid-report, so that
        another node finishes them within a sweep, while a report Slack keeps refusing is
        not tried (and its requester told) again every minute.
        """
        todo = self.journal.approved_without_report()
        with self._lock:
            if not retry_failed:
                todo = [r for r in todo if r.id not in self._failed]
        for request in todo:
            self.report_queue.submit("report", self.run_report, request.id)
        return len(todo)

    def run_report(self, rid: str) -> None:
        """Build, upload and record the report of an approved request: once per node
        (a set of the reports in progress), and on one node at a time (a claim on a
        shared store, held while building, so that a node resuming it waits its turn and
        then finds the report event)."""
        with self._lock:
            if rid in self._reporting:
                return
            self._reporting.add(rid)
        try:
            with self.journal.service.claim(f"slackapp-report:{rid}") as mine:
                if mine:
                    self._run_report(rid)
            with self._lock:
                self._failed.discard(rid)
        except Exception as e:
            with self._lock:
                self._failed.add(rid)
            # Slack refused an upload, the scope selects nothing readable, the disk is
            # full, ...: the requester hears of it; the report is tried again when serve
            # restarts. Only trailseal's own errors are worded for people.
            LOGGER.error("report failed", extra={"rid": rid, "error": type(e).__name__})
            why = e.diagnostics()[:500] if isinstance(e, Error) else "an internal error"
            request = self.journal.request(rid)
            if request is not None:
                self.dm(
                    request.requester,
                    f":warning: The report for `{rid}` could not be built: {why}. It will "
                    "be tried again when trailseal restarts; an admin can see the details "
                    "in the server log.",
                )
            raise
        finally:
            with self._lock:
                self._reporting.discard(rid)

    def _run_report(self, rid: str) -> None:
        if self.journal.report(rid) is not None:
            return
        request = self.journal.request(rid)
        if request is None:
            return
        self.reports_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        out_dir = self.reports_dir / rid
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a crash left a partial report: build it again
        files = build_report(
            self.journal.service, self.journal.tlog(), request, out_dir, web=self.web
        )
        # On a shared store, into the registry before Slack or the log hears of the
        # report: once the report event exists, links to it are handed out and any node
        # must be able to serve them, and a crash before the event (here or during the
        # uploads) is redone by `resume`, since resuming keys on the missing event.
        self.reports.share(rid, files.directory, files.sha256)
        file_ids: list[str] = []
        dm = self.dm_channel(request.requester)
        if dm is not None:
            file_ids += upload_report(self.web, dm, None, request, files)
        message = self.journal.approval_message(rid)
        if message is not None:
            try:
                file_ids += upload_report(self.web, message[0], message[1], request, files)
            except SlackError as e:
                # When the requester already holds the files, the report is delivered
                # and is recorded below: failing here would tell them it "could not be
                # built" and send it again after a restart, with no event for this
                # delivery.
                if not file_ids:
                    raise
                LOGGER.warning(
                    "report not shared in the approvers' thread",
                    extra={"rid": rid, "error": e.code or type(e).__name__},
                )
        self.journal.append(
            ACTION_REPORT,
            report_event_id(rid),
            SYSTEM,
            rid=rid,
            raw={
                "request_id": rid,
                "rows": files.rows,
                "log_entries": files.log_entries,
                "tree_size": files.tree_size,
                "sha256": files.sha256,
                "slack_file_ids": file_ids,
            },
        )
        text, blocks = messages.report_notice(
            request, files.rows, self.download_links(rid, request.requester)
        )
        self.dm(request.requester, text, [*blocks[:1], *files.summary_blocks, *blocks[1:]][:50])

    def download_links(self, rid: str, user: str) -> list[tuple[str, str]]:
        """Fresh download URLs for ``user`` to the files of ``rid``'s report."""
        report = self.journal.report(rid)
        if report is None:
            return []
        expires = int(
            (self.journal.now() + timedelta(hours=self.config.download_link_hours)).timestamp()
        )
        names = sorted(report.get("raw", {}).get("sha256", {}))
        return [(name, self.links.url(rid, user, expires, name)) for name in names]

    # -- listings -----------------------------------------------------------------------

    def listed(self, user: str, limit: int = 20) -> list[messages.Listed]:
        """``user``'s recent requests with state and (when ready) links."""
        out = []
        for request in self.journal.requests(requester=user, limit=limit):
            state = self.journal.state(request.id, request)
            links = self.download_links(request.id, user) if state == "ready" else []
            out.append(messages.Listed(request, state, links))
        return out

    def publish_home(self, user: str) -> None:
        """Publish ``user``'s App Home tab."""
        self.sweep()
        awaiting = None
        if self.roles.is_approver(user):
            awaiting = [
                messages.Listed(r, "pending") for r in self.journal.pending() if r.requester != user
            ]
        view = messages.home_view(self.listed(user), awaiting)
        self.call_slack("views.publish", self.web.views_publish, user_id=user, view=view)
