"""Uploading report files to Slack in bounded memory.

Slack's upload has three steps (https://docs.slack.dev/messaging/working-with-files):
``files.getUploadURLExternal`` (the name and the length in bytes) hands out an upload
URL, the bytes are POSTed to it, and ``files.completeUploadExternal`` shares the files in
a channel or thread with a comment. slack_sdk's ``files_upload_v2`` does the same but
reads each file whole into memory first; a report's CSV of a million rows is hundreds
of megabytes, and it is uploaded twice (the requester's DM and the approvers' thread).
Here the POST streams the file from disk in blocks, so an upload holds a few kilobytes
whatever the report's size.

Slack refuses files over 1 GB (a CSV of about four million rows). Such a file is not
sent; the comment says so and points to the download links, which serve every file.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web import WebClient

from trailseal.errors import SlackError
from trailseal.slackapp.directory import slack_error

SLACK_FILE_LIMIT = 1_000_000_000
"""Bytes: Slack refuses a larger file (files.getUploadURLExternal's documented maximum)."""


@dataclass(frozen=True)
class Upload:
    """One file to share: where it is and the title Slack shows."""

    path: Path
    title: str


def too_large(uploads: list[Upload]) -> list[Upload]:
    """The files Slack would refuse for their size."""
    return [u for u in uploads if u.path.stat().st_size > SLACK_FILE_LIMIT]


def share_files(
    web: WebClient,
    uploads: list[Upload],
    channel: str,
    thread_ts: str | None,
    comment: str,
) -> list[str]:
    """Upload ``uploads`` and share them in ``channel`` (or its thread ``thread_ts``) in
    one message with ``comment``; returns Slack's file ids. Every failure is a
    :class:`~trailseal.errors.SlackError` naming the step."""
    announced: list[dict[str, str | None]] = []
    for upload in uploads:
        size = upload.path.stat().st_size
        try:
            answer = web.files_getUploadURLExternal(filename=upload.path.name, length=size)
        except SlackApiError as e:
            raise slack_error("files.getUploadURLExternal", e) from e
        except SlackRequestError as e:
            raise SlackError(
                f"asking Slack for an upload URL failed: {e}", code="upload_failed"
            ) from e
        url, file_id = answer.get("upload_url"), answer.get("file_id")
        if (
            not isinstance(url, str)
            or not isinstance(file_id, str)
            or urlsplit(url).scheme not in ("https", "http")
        ):
            raise SlackError(
                "Slack's files.getUploadURLExternal answer has no usable upload_url or file_id",
                code="upload_failed",
            )
        _post_file(web, url, upload.path, size)
        announced.append({"id": file_id, "title": upload.title})
    try:
        response = web.files_completeUploadExternal(
            files=announced, channel_id=channel, thread_ts=thread_ts, initial_comment=comment
        )
    except SlackApiError as e:
        raise slack_error("files.completeUploadExternal", e) from e
    except SlackRequestError as e:
        raise SlackError(f"sharing the report files failed: {e}", code="upload_failed") from e
    return [str(f["id"]) for f in response.get("files") or []]


def _post_file(web: WebClient, url: str, path: Path, size: int) -> None:
    """POST the file to Slack's upload URL, read from disk block by block.

    With the length given, urllib hands the open file to http.client, which reads and
    sends it in blocks of 8 KiB. The URL accepts bytes for this file id, so it is never
    logged.
    """
    handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=web.ssl)]
    if web.proxy:
        handlers.append(urllib.request.ProxyHandler({"http": web.proxy, "https": web.proxy}))
    opener = urllib.request.build_opener(*handlers)
    with path.open("rb") as body:
        request = urllib.request.Request(  # noqa: S310 -- scheme checked in share_files
            url,
            data=body,  # http.client sends a file object in blocks
            method="POST",
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        try:
            with opener.open(request, timeout=web.timeout) as response:
                response.read()
        except urllib.error.HTTPError as e:
            e.close()  # the error is also the response: release its connection
            raise SlackError(
                f"Slack refused the upload of {path.name} (HTTP {e.code}); "
                "the report is tried again when trailseal restarts",
                code=f"http_{e.code}",
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SlackError(
                f"uploading {path.name} to Slack failed: {reason}", code="upload_failed"
            ) from None


__all__ = ["SLACK_FILE_LIMIT", "Upload", "share_files", "too_large"]
