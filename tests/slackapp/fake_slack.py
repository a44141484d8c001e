"""A stateful fake Slack Web API on 127.0.0.1 for the /audit app's tests.

Point slack_sdk at it with ``WebClient(token="xoxb-test", base_url=fake.base_url)``. It
parses form-encoded and JSON bodies (slack_sdk sends both: ``chat.postMessage`` and
``views.*`` as JSON, most reads as forms), answers from a small in-memory workspace
that tests seed (team, users, user groups, channels, apps), and records every call in
:attr:`FakeSlack.calls` without ever keeping the token itself (only whether one was
sent), so a failing assertion can print the calls safely.

Realism that tests rely on:

- ``not_authed`` without a bearer token; ``missing_scope`` (with ``needed`` and
  ``provided``) when :attr:`FakeSlack.scopes` lacks the method's scope. The default
  scopes are a bot token's, without ``admin.apps:read``: ``admin.apps.approved.list``
  answers ``missing_scope`` until a test grants it.
- Cursor pagination (``cursor``/``limit``, ``response_metadata.next_cursor``) on
  ``conversations.list``, ``conversations.members``, ``users.list`` and
  ``admin.apps.approved.list``; ``invalid_cursor`` on a cursor it did not issue.
- Uploads end to end: ``files.getUploadURLExternal`` hands out an upload URL on this
  server, which reads the bytes in blocks (their SHA-256, and the bytes of files up to
  1 MiB), and ``files.completeUploadExternal`` shares them (``file_upload_size_mismatch``
  when fewer bytes came than announced); :attr:`FakeSlack.files` keeps them for tests.
- Scripting: :meth:`FakeSlack.rate_limit` makes the next call(s) of a method answer
  HTTP 429 with ``Retry-After``; :meth:`FakeSlack.fail` makes them answer an error code.
- Methods it does not implement answer ``unknown_method``, so a wrong call fails a test.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

Answer = tuple[int, dict[str, str], dict[str, Any]]

REQUIRED_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "team.info": "team:read",
    "users.info": "users:read",
    "users.list": "users:read",
    "conversations.list": "channels:read",
    "conversations.info": "channels:read",
    "conversations.members": "channels:read",
    "conversations.open": "im:write",
    "usergroups.users.list": "usergroups:read",
    "chat.postMessage": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.update": "chat:write",
    "views.open": None,
    "views.update": None,
    "views.publish": None,
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "admin.apps.approved.list": "admin.apps:read",
}
"""Every method the fake implements, with the scope Slack requires for it."""

BOT_SCOPES = frozenset(
    {
        "channels:read",
        "groups:read",
        "users:read",
        "team:read",
        "usergroups:read",
        "chat:write",
        "im:write",
        "files:write",
        "commands",
    }
)
"""The scopes a freshly installed /audit bot token has (no admin scopes)."""

KEEP_BYTES = 1 << 20
"""Uploaded files up to this size are kept whole in :attr:`FakeFile.data`."""

_PRIVATE_SCOPE = "groups:read"


@dataclass
class FakeCall:
    """One recorded call: never the token, only whether one was sent."""

    method: str
    params: dict[str, Any]
    token_sent: bool
    content_type: str


@dataclass
class FakeMessage:
    """A message the app posted (``chat.postMessage``/``postEphemeral``), updated in place."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    ephemeral_user: str | None = None
    updates: int = 0


@dataclass
class FakeFile:
    """A file announced by ``files.getUploadURLExternal``. Once uploaded: ``received``
    bytes with ``sha256``, and the bytes themselves in ``data`` up to :data:`KEEP_BYTES`
    (the fake reads uploads in blocks, so a test can measure the client's memory)."""

    id: str
    filename: str
    length: int
    data: bytes | None = None
    received: int | None = None
    sha256: str | None = None
    title: str | None = None
    shared_to: list[str] = field(default_factory=list)
    initial_comment: str | None = None
    thread_ts: str | None = None


class SlackFailure(Exception):
    """Raised inside a handler to answer ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _json_param(value: Any) -> Any:
    """Slack takes JSON-valued params (blocks, view, files) as a string in forms."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as e:
            raise SlackFailure("invalid_arguments") from e
    return value


def _required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise SlackFailure("invalid_arguments", response_metadata={"messages": [name]})
    return value


def _body_params(raw: bytes, content_type: str) -> dict[str, Any]:
    """The params of a JSON or form-encoded body, as Slack accepts them."""
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise SlackFailure("invalid_json") from e
        if not isinstance(body, dict):
            raise SlackFailure("invalid_json")
        return body
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode(), keep_blank_values=True))
    raise SlackFailure("invalid_form_data")


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _page(
    params: dict[str, Any], items: list[Any], default_limit: int = 100
) -> tuple[list[Any], str]:
    """Slack's cursor pagination: a page of ``items`` and the next cursor ("" at the end)."""
    cursor = params.get("cursor") or ""
    offset = 0
    if cursor:
        try:
            kind, _, number = base64.b64decode(cursor, validate=True).decode().partition(":")
            offset = int(number)
            if kind != "offset" or offset < 0:
                raise ValueError(cursor)
        except ValueError as e:
            raise SlackFailure("invalid_cursor") from e
    try:
        limit = int(params.get("limit") or default_limit)
    except ValueError as e:
        raise SlackFailure("invalid_limit") from e
    limit = max(1, min(limit, 1000))
    page = items[offset : offset + limit]
    more = offset + limit < len(items)
    return page, _encode_cursor(offset + limit) if more else ""


class FakeSlack:
    """The fake server plus its workspace. Seed with the ``add_*`` methods."""

    def __init__(self, team_id: str = "T0HOME", team_name: str = "Home Org") -> None:
        self.team_id = team_id
        self.teams: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.apps: dict[str, dict[str, Any]] = {}
        self.scopes: set[str] = set(BOT_SCOPES)
        self.bot_user_id = "UBOT"
        self.calls: list[FakeCall] = []
        self.messages: list[FakeMessage] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.files: dict[str, FakeFile] = {}
        self.used_trigger_ids: set[str] = set()
        self.removed_from: set[str] = set()
        """Channels the app was removed from: sharing files there is ``not_in_channel``."""
        self._scripted: dict[str, deque[Answer]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)
        self.add_team(team_id, team_name, "home")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.base_url = f"{self.origin}/api/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- seeding ---------------------------------------------------------------------

    def add_team(self, team_id: str, name: str, domain: str) -> dict[str, Any]:
        """A workspace (the home team, or an external Slack Connect organization)."""
        team = {"id": team_id, "name": name, "domain": domain, "email_domain": f"{domain}.example"}
        self.teams[team_id] = team
        return team

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        team_id: str | None = None,
        is_bot: bool = False,
        is_stranger: bool = False,
        deleted: bool = False,
    ) -> dict[str, Any]:
        """A user; ``team_id`` other than the home team makes a Slack Connect member."""
        real = real_name if real_name is not None else name.title()
        user = {
            "id": user_id,
            "team_id": team_id or self.team_id,
            "name": name,
            "real_name": real,
            "deleted": deleted,
            "is_bot": is_bot,
            "is_app_user": False,
            "profile": {"real_name": real, "display_name": name},
        }
        if is_stranger:
            user["is_stranger"] = True
        self.users[user_id] = user
        return user

    def add_usergroup(self, group_id: str, members: list[str]) -> None:
        """A user group (``S…``) and its members."""
        self.usergroups[group_id] = list(members)

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        members: list[str] | None = None,
        is_private: bool = False,
        is_ext_shared: bool = False,
        is_archived: bool = False,
        shared_team_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        """A channel; ``is_ext_shared`` marks a Slack Connect channel."""
        channel = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_private,
            "is_group": is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": is_private,
            "is_archived": is_archived,
            "is_shared": is_ext_shared,
            "is_ext_shared": is_ext_shared,
            "is_org_shared": False,
            "context_team_id": self.team_id,
            "shared_team_ids": shared_team_ids or [self.team_id],
            "created": 1_700_000_000,
            "members": list(members or ()),
        }
        self.channels[channel_id] = channel
        return channel

    def add_app(self, app_id: str, name: str, scopes: list[str] | None = None) -> dict[str, Any]:
        """An installed app, listed by ``admin.apps.approved.list`` when the scope allows."""
        app = {"id": app_id, "name": name, "scopes": list(scopes or ())}
        self.apps[app_id] = app
        return app

    # -- scripting -------------------------------------------------------------------

    def rate_limit(self, method: str, retry_after_s: int = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer 429 with ``Retry-After``."""
        for _ in range(times):
            answer = {"ok": False, "error": "ratelimited"}
            self._scripted[method].append((429, {"Retry-After": str(retry_after_s)}, answer))

    def fail(self, method: str, error: str, times: int = 1, **extra: Any) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        for _ in range(times):
            self._scripted[method].append((200, {}, {"ok": False, "error": error, **extra}))

    def calls_to(self, method: str) -> list[FakeCall]:
        """The recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dispatch --------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                url = urlsplit(self.path)
                if url.path.startswith("/upload/"):
                    status, body = fake._upload(url.path.rsplit("/", 1)[-1], self.rfile, length)
                    self._send(status, {"content-type": "text/plain"}, body.encode())
                    return
                self._serve(self.rfile.read(length))

            def _serve(self, raw: bytes) -> None:
                url = urlsplit(self.path)
                content_type = self.headers.get("content-type", "")
                status, headers, answer = fake._dispatch(
                    url.path.rsplit("/", 1)[-1],
                    dict(parse_qsl(url.query, keep_blank_values=True)),
                    raw,
                    content_type,
                    self.headers.get("authorization", ""),
                )
                headers = {"content-type": "application/json; charset=utf-8", **headers}
                self._send(status, headers, json.dumps(answer).encode())

            def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler

    def _dispatch(
        self, method: str, query: dict[str, str], raw: bytes, content_type: str, auth: str
    ) -> Answer:
        try:
            params = {**query, **_body_params(raw, content_type)}
        except SlackFailure as e:
            return 200, {}, {"ok": False, "error": e.error}
        token_in_body = bool(params.pop("token", None))
        token_sent = (auth.lower().startswith("bearer ") and len(auth) > 7) or token_in_body
        with self._lock:
            self.calls.append(FakeCall(method, params, token_sent, content_type))
            scripted = self._scripted.get(method)
            if scripted:
                return scripted.popleft()
            try:
                return 200, {}, {"ok": True, **self._answer(method, params, token_sent)}
            except SlackFailure as e:
                return 200, {}, {"ok": False, "error": e.error, **e.extra}

    def _answer(self, method: str, params: dict[str, Any], token_sent: bool) -> dict[str, Any]:
        """Slack's checks in Slack's order: method, token, scope, then the method itself."""
        if method not in REQUIRED_SCOPES:
            raise SlackFailure("unknown_method", req_method=method)
        if not token_sent:
            raise SlackFailure("not_authed")
        needed = REQUIRED_SCOPES[method]
        if needed is not None and needed not in self.scopes:
            provided = ",".join(sorted(self.scopes))
            raise SlackFailure("missing_scope", needed=needed, provided=provided)
        result: dict[str, Any] = getattr(self, "_m_" + method.replace(".", "_"))(params)
        return result

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _upload(self, file_id: str, body: BinaryIO, length: int) -> tuple[int, str]:
        with self._lock:
            self.calls.append(FakeCall("upload", {"file_id": file_id}, False, ""))
            upload = self.files.get(file_id)
            if upload is None or upload.received is not None:
                return 404, "Not Found"
        digest, kept, left = hashlib.sha256(), bytearray(), length
        while left:
            block = body.read(min(left, 64 * 1024))
            if not block:
                break
            left -= len(block)
            digest.update(block)
            if len(kept) + len(block) <= KEEP_BYTES:
                kept += block
        with self._lock:
            upload.received = length - left
            upload.sha256 = digest.hexdigest()
            upload.data = bytes(kept) if upload.received <= KEEP_BYTES else None
            return 200, f"OK - {upload.received}"

    # -- methods ---------------------------------------------------------------------

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            raise SlackFailure("user_not_found")
        return user

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise SlackFailure("channel_not_found")
        if channel["is_private"] and _PRIVATE_SCOPE not in self.scopes:
            raise SlackFailure("channel_not_found")
        return channel

    @staticmethod
    def _public(channel: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in channel.items() if k != "members"}
        shown["num_members"] = len(channel["members"])
        return shown

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        team = self.teams[self.team_id]
        return {
            "url": f"https://{team['domain']}.slack.com/",
            "team": team["name"],
            "team_id": self.team_id,
            "user": "audit",
            "user_id": self.bot_user_id,
            "bot_id": "BAUDIT",
        }

    def _m_team_info(self, params: dict[str, Any]) -> dict[str, Any]:
        team = self.teams.get(params.get("team") or self.team_id)
        if team is None:
            raise SlackFailure("team_not_found")
        return {"team": dict(team)}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"user": dict(self._user(_required(params, "user")))}

    def _m_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        page, cursor = _page(params, [dict(u) for u in self.users.values()])
        return {"members": page, "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        types = set(str(params.get("types") or "public_channel").split(","))
        unknown = types - {"public_channel", "private_channel", "mpim", "im"}
        if unknown:
            raise SlackFailure("invalid_types")
        if "private_channel" in types and _PRIVATE_SCOPE not in self.scopes:
            raise SlackFailure("missing_scope", needed=_PRIVATE_SCOPE)
        exclude_archived = str(params.get("exclude_archived", "")).lower() in {"1", "true"}
        selected = [
            self._public(c)
            for c in self.channels.values()
            if ("private_channel" if c["is_private"] else "public_channel") in types
            and not (exclude_archived and c["is_archived"])
            and not c["is_im"]
        ]
        page, cursor = _page(params, selected)
        return {"channels": page, "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._public(self._channel(_required(params, "channel")))}

    def _m_conversations_members(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(_required(params, "channel"))
        page, cursor = _page(params, list(channel["members"]))
        return {"members": page, "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = str(_required(params, "users")).split(",")
        for user_id in users:
            self._user(user_id)
        members = sorted({*users, self.bot_user_id})
        for channel in self.channels.values():
            if channel["is_im"] and sorted(channel["members"]) == members:
                return {"channel": {"id": channel["id"]}, "already_open": True}
        channel = self.add_channel(self._next_id("D"), "", members=members, is_private=True)
        channel.update(is_im=True, is_channel=False, is_group=False)
        return {"channel": {"id": channel["id"]}}

    def _m_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        members = self.usergroups.get(_required(params, "usergroup"))
        if members is None:
            raise SlackFailure("no_such_subteam")
        return {"users": list(members)}

    def _post_target(self, channel_id: str) -> str:
        """A channel id, or a user id (Slack posts those to the app's DM with the user)."""
        if channel_id in self.users:
            return str(self._m_conversations_open({"users": channel_id})["channel"]["id"])
        self._channel(channel_id)
        return channel_id

    def _text_and_blocks(self, params: dict[str, Any]) -> tuple[str | None, Any]:
        text = params.get("text")
        blocks = _json_param(params["blocks"]) if params.get("blocks") else None
        if not text and not blocks:
            raise SlackFailure("no_text")
        if blocks is not None and (not isinstance(blocks, list) or len(blocks) > 50):
            raise SlackFailure("invalid_blocks")
        return text, blocks

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._post_target(_required(params, "channel"))
        text, blocks = self._text_and_blocks(params)
        thread_ts = params.get("thread_ts") or None
        message = FakeMessage(channel, self._next_ts(), text, blocks, thread_ts)
        self.messages.append(message)
        shown = {"type": "message", "text": text or "", "ts": message.ts, "blocks": blocks}
        return {"channel": channel, "ts": message.ts, "message": shown}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._post_target(_required(params, "channel"))
        user = _required(params, "user")
        self._user(user)
        if user not in self.channels[channel]["members"]:
            raise SlackFailure("user_not_in_channel")
        text, blocks = self._text_and_blocks(params)
        message = FakeMessage(channel, self._next_ts(), text, blocks, ephemeral_user=user)
        self.messages.append(message)
        return {"message_ts": message.ts}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = _required(params, "channel")
        ts = _required(params, "ts")
        message = next((m for m in self.messages if m.channel == channel and m.ts == ts), None)
        if message is None or message.ephemeral_user is not None:
            raise SlackFailure("message_not_found")
        message.text, message.blocks = self._text_and_blocks(params)
        message.updates += 1
        return {"channel": channel, "ts": ts, "text": message.text or ""}

    def _store_view(self, view: Any, view_id: str | None = None) -> dict[str, Any]:
        view = _json_param(view)
        if not isinstance(view, dict) or view.get("type") not in {"modal", "home"}:
            raise SlackFailure("invalid_arguments")
        if len(view.get("blocks") or []) > 100:
            raise SlackFailure("invalid_arguments")
        stored = {**view, "id": view_id or self._next_id("V"), "hash": self._next_ts()}
        self.views[stored["id"]] = stored
        return stored

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger_id = _required(params, "trigger_id")
        if trigger_id in self.used_trigger_ids:
            raise SlackFailure("exchanged_trigger_id")
        self.used_trigger_ids.add(trigger_id)
        return {"view": self._store_view(_required(params, "view"))}

    def _m_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = params.get("view_id")
        if not view_id and params.get("external_id"):
            view_id = next(
                (k for k, v in self.views.items() if v.get("external_id") == params["external_id"]),
                None,
            )
        current = self.views.get(view_id or "")
        if current is None:
            raise SlackFailure("not_found")
        if params.get("hash") and params["hash"] != current["hash"]:
            raise SlackFailure("hash_conflict")
        return {"view": self._store_view(_required(params, "view"), current["id"])}

    def _m_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = _required(params, "user_id")
        self._user(user_id)
        view = self._store_view(_required(params, "view"))
        if view["type"] != "home":
            raise SlackFailure("invalid_arguments")
        self.home_views[user_id] = view
        return {"view": view}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = _required(params, "filename")
        try:
            length = int(_required(params, "length"))
        except ValueError as e:
            raise SlackFailure("invalid_arguments") from e
        file_id = self._next_id("F")
        self.files[file_id] = FakeFile(file_id, filename, length)
        return {"upload_url": f"{self.origin}/upload/v1/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        items = _json_param(_required(params, "files"))
        if not isinstance(items, list) or not items:
            raise SlackFailure("invalid_arguments")
        channel = params.get("channel_id") or None
        if channel is not None:
            self._channel(channel)
            if channel in self.removed_from:
                raise SlackFailure("not_in_channel")
        shown = []
        for item in items:
            upload = self.files.get(str(item.get("id")))
            if upload is None or upload.received is None or upload.shared_to:
                raise SlackFailure("file_not_found")
            if upload.received != upload.length:
                raise SlackFailure("file_upload_size_mismatch")
        for item in items:
            upload = self.files[item["id"]]
            upload.title = item.get("title") or upload.filename
            upload.initial_comment = params.get("initial_comment") or None
            upload.thread_ts = params.get("thread_ts") or None
            if channel is not None:
                upload.shared_to.append(channel)
            shown.append(
                {
                    "id": upload.id,
                    "name": upload.filename,
                    "title": upload.title,
                    "size": upload.length,
                }
            )
        return {"files": shown}

    def _m_admin_apps_approved_list(self, params: dict[str, Any]) -> dict[str, Any]:
        listed = [
            {
                "app": {"id": a["id"], "name": a["name"], "is_internal": False},
                "scopes": [{"name": s, "token_type": "bot"} for s in a["scopes"]],
                "date_updated": 1_700_000_000,
            }
            for a in self.apps.values()
        ]
        page, cursor = _page(params, listed)
        return {"approved_apps": page, "response_metadata": {"next_cursor": cursor}}
