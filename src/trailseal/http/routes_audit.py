"""The /audit app's HTTP endpoints: slash commands, interactions, report downloads.

``POST /slack/commands`` and ``POST /slack/interactions`` check Slack's v0 signature over
the raw body before anything else, exactly like the Events API route: a request that
fails gets 401 problem+json and its body is neither parsed nor logged. Verified requests
go to the bolt ``App`` in a worker thread (it records the request or refusal durably
before answering).

``GET /slack/reports/{rid}/{file}?token=…`` serves a report file to the holder of a
download token (:mod:`trailseal.slackapp.links`), after appending
``audit.report_downloaded``: a download that is not in the log does not happen. With many
nodes on one store, a node that did not build the report first fetches the file from the
shared registry and checks it against the SHA-256 the log recorded
(:mod:`trailseal.slackapp.report_store`); a copy that fails is refused with 500
``report-altered`` and neither served nor logged as downloaded.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from trailseal.errors import NotFoundError, TamperError
from trailseal.http.deps import PROBLEMS, Api, read_body
from trailseal.http.problems import problem
from trailseal.ingest.slack_signature import verify_slack_request
from trailseal.slackapp.journal import Actor
from trailseal.slackapp.links import LinkExpiredError
from trailseal.slackapp.model import ACTION_DOWNLOADED

if TYPE_CHECKING:  # slack_bolt loads only when the /audit app is configured
    from trailseal.slackapp.app import AuditApp

_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

RequestId = Annotated[str, Path(pattern="^ar_[0-9a-f]{6,32}$", description="Request id")]
FileName = Annotated[str, Path(max_length=128, description="A file of the report")]


def register(app: FastAPI, api: Api, audit: AuditApp) -> None:
    """Attach the app's routes."""
    secrets_ = [s.reveal().encode() for s in audit.config.signing_secrets]

    async def slack_request(request: Request) -> Response:
        body = await read_body(request, api.options.max_body_bytes)
        verify_slack_request(
            secrets_,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            body,
            api.service.clock().timestamp(),
        )
        headers: dict[str, str | Sequence[str]] = {
            k: v for k, v in request.headers.items() if k.startswith(("content-", "x-"))
        }
        status, text, content_type = await run_in_threadpool(
            audit.dispatch, body.decode("utf-8", "replace"), headers
        )
        return Response(text, status_code=status, media_type=content_type)

    doc = {
        "tags": ["slack"],
        "responses": PROBLEMS,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
            }
        },
    }
    if secrets_:
        app.add_api_route(
            "/slack/commands",
            slack_request,
            methods=["POST"],
            name="slack_commands",
            summary="The /audit slash command",
            description="Signed by Slack (v0). Answers ephemerally, or opens the request "
            "form with views.open after acknowledging.",
            **doc,  # type: ignore[arg-type]
        )
        app.add_api_route(
            "/slack/interactions",
            slack_request,
            methods=["POST"],
            name="slack_interactions",
            summary="The /audit app's modal submissions and button clicks",
            description="Signed by Slack (v0). Form errors are answered inline "
            "(response_action: errors); decisions are recorded after acknowledging.",
            **doc,  # type: ignore[arg-type]
        )

    @app.get(
        "/slack/reports/{rid}/{file}",
        tags=["slack"],
        responses={
            200: {"content": {"application/octet-stream": {}}},
            **{k: v for k, v in PROBLEMS.items() if k in (400, 403, 404, 503)},
            410: {
                "description": "The link has expired",
                "content": {"application/problem+json": {}},
            },
            500: {
                "description": "The shared store's copy of the file was altered (report-altered)",
                "content": {"application/problem+json": {}},
            },
        },
    )
    async def report_file(
        request: Request,
        rid: RequestId,
        file: FileName,
        token: Annotated[str, Query(max_length=512, description="The link's token")],
    ) -> Response:
        """A report file, for the holder of a download link from the /audit app."""
        try:
            # A token signed by another node may need the registry: off the event loop.
            grant = await run_in_threadpool(
                audit.links.check, rid, token, api.service.clock().timestamp()
            )
        except LinkExpiredError as e:
            return problem(
                410,
                "link-expired",
                "The download link has expired",
                str(e),
                instance=request.url.path,
                request_id=getattr(request.state, "request_id", None),
            )
        try:
            path = await run_in_threadpool(_record_download, audit, rid, file, grant.user)
        except TamperError as e:
            return problem(
                500,
                "report-altered",
                "The shared copy of the report file was altered",
                str(e),
                instance=request.url.path,
                request_id=getattr(request.state, "request_id", None),
                expected_sha256=e.expected.hex() if e.expected else None,
                found_sha256=e.found.hex() if e.found else None,
            )
        return FileResponse(path, filename=file, media_type="application/octet-stream")


def _record_download(audit: AuditApp, rid: str, file: str, user: str) -> str:
    journal = audit.journal
    report = journal.report(rid)
    names = (report or {}).get("raw", {}).get("sha256", {})
    if not _FILE.match(file) or file not in names:
        raise NotFoundError(f"request {rid} has no report file {file!r}")
    # Fetched from the shared store (and checked against the recorded SHA-256) when
    # another node built the report; before the event, so nothing unservable is logged.
    path = audit.workflow.reports.path(rid, file, names[file])
    request = journal.request(rid)
    journal.append(
        ACTION_DOWNLOADED,
        f"download:{rid}:{secrets.token_hex(8)}",
        Actor(user, request.team_id if request else "", "hmac"),
        rid=rid,
        # DESIGN §5: a read is recorded with who, what and why; the why of a report
        # download is the purpose the request stated.
        raw={
            "request_id": rid,
            "file": file,
            "sha256": names[file],
            "purpose": request.purpose if request else None,
        },
        targets=[{"type": "audit_request", "id": rid}, {"type": "file", "id": file}],
    )
    return str(path)
