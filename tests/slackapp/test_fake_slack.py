"""The fake Slack Web API answers slack_sdk the way Slack does (and refuses what Slack refuses)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web import WebClient

from tests.slackapp.fake_slack import FakeSlack


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        server.add_team("T0EXT", "Partner Co", "partner")
        server.add_user("U1", "alice")
        server.add_user("U2", "bob")
        server.add_user("UX", "eve", team_id="T0EXT", is_stranger=True)
        server.add_usergroup("S1", ["U1"])
        server.add_channel("C1", "general", members=["U1", "U2", "UBOT"])
        server.add_channel("C2", "shared", members=["U1", "UX"], is_ext_shared=True)
        server.add_channel("G1", "secret", members=["U2"], is_private=True)
        server.add_app("A1", "Deploy Bot", ["chat:write"])
        yield server


def client(fake: FakeSlack, token: str | None = "xoxb-test") -> WebClient:
    return WebClient(token=token, base_url=fake.base_url)


def test_reads_answer_from_the_seeded_workspace(fake: FakeSlack) -> None:
    web = client(fake)
    assert web.auth_test()["team_id"] == "T0HOME"
    assert web.team_info()["team"]["name"] == "Home Org"
    assert web.team_info(team="T0EXT")["team"]["domain"] == "partner"
    user = web.users_info(user="UX")["user"]
    assert (user["team_id"], user["is_stranger"]) == ("T0EXT", True)
    channel = web.conversations_info(channel="C2")["channel"]
    assert channel["is_ext_shared"] is True
    assert channel["num_members"] == 2
    assert web.usergroups_users_list(usergroup="S1")["users"] == ["U1"]
    with pytest.raises(SlackApiError) as err:
        web.users_info(user="U404")
    assert err.value.response["error"] == "user_not_found"


def test_cursor_pagination_and_types(fake: FakeSlack) -> None:
    web = client(fake)
    seen: list[str] = []
    cursor = None
    while True:
        page = web.conversations_list(
            types="public_channel,private_channel", limit=1, cursor=cursor
        )
        seen += [c["id"] for c in page["channels"]]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert seen == ["C1", "C2", "G1"]
    assert [c["id"] for c in web.conversations_list()["channels"]] == ["C1", "C2"]
    first = web.conversations_members(channel="C1", limit=2)
    assert first["members"] == ["U1", "U2"]
    rest = web.conversations_members(channel="C1", cursor=first["response_metadata"]["next_cursor"])
    assert rest["members"] == ["UBOT"]
    assert rest["response_metadata"]["next_cursor"] == ""
    with pytest.raises(SlackApiError, match="invalid_cursor"):
        web.conversations_members(channel="C1", cursor="bm9wZQ==")


def test_calls_are_recorded_without_the_token(fake: FakeSlack) -> None:
    client(fake).chat_postMessage(channel="C1", text="hi")
    call = fake.calls_to("chat.postMessage")[0]
    assert call.token_sent
    assert call.content_type.startswith("application/json")
    assert "xoxb-test" not in repr(fake.calls)
    with pytest.raises(SlackApiError, match="not_authed"):
        client(fake, token=None).auth_test()
    assert fake.calls[-1].token_sent is False


def test_messages_views_and_ephemerals(fake: FakeSlack) -> None:
    web = client(fake)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*req*"}}]
    posted = web.chat_postMessage(channel="C1", text="req", blocks=blocks)
    web.chat_update(channel="C1", ts=posted["ts"], text="done")
    assert fake.messages[0].text == "done"
    assert fake.messages[0].updates == 1
    dm = web.chat_postMessage(channel="U1", text="to you")
    assert dm["channel"].startswith("D")
    web.chat_postEphemeral(channel="C1", user="U1", text="only you")
    with pytest.raises(SlackApiError, match="user_not_in_channel"):
        web.chat_postEphemeral(channel="C2", user="U2", text="no")
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Audit"}, "blocks": []}
    opened = web.views_open(trigger_id="t1", view=view)["view"]
    web.views_update(view_id=opened["id"], view=view, hash=opened["hash"])
    with pytest.raises(SlackApiError, match="hash_conflict"):
        web.views_update(view_id=opened["id"], view=view, hash=opened["hash"])
    with pytest.raises(SlackApiError, match="exchanged_trigger_id"):
        web.views_open(trigger_id="t1", view=view)
    web.views_publish(user_id="U1", view={"type": "home", "blocks": []})
    assert fake.home_views["U1"]["type"] == "home"


def test_files_upload_v2_end_to_end(fake: FakeSlack) -> None:
    web = client(fake)
    result = web.files_upload_v2(
        file_uploads=[
            {"content": b"a,b\n1,2\n", "filename": "r.csv", "title": "CSV"},
            {"content": b"\x00\x01zip", "filename": "b.zip", "title": "Bundle"},
        ],
        channel="C1",
        initial_comment="report",
        thread_ts="1700000000.000001",
    )
    ids = [f["id"] for f in result["files"]]
    assert [fake.files[i].data for i in ids] == [b"a,b\n1,2\n", b"\x00\x01zip"]
    assert fake.files[ids[1]].title == "Bundle"
    assert fake.files[ids[1]].shared_to == ["C1"]
    assert fake.files[ids[0]].thread_ts == "1700000000.000001"


def test_missing_scope_and_scripted_failures(fake: FakeSlack) -> None:
    web = client(fake)
    with pytest.raises(SlackApiError) as err:
        web.admin_apps_approved_list()
    assert err.value.response["needed"] == "admin.apps:read"
    fake.scopes.add("admin.apps:read")
    apps = web.admin_apps_approved_list()["approved_apps"]
    assert [a["app"]["name"] for a in apps] == ["Deploy Bot"]
    fake.fail("team.info", "fatal_error")
    with pytest.raises(SlackApiError, match="fatal_error"):
        web.team_info()
    assert web.team_info()["ok"]
    with pytest.raises(SlackApiError, match="unknown_method"):
        web.api_call("conversations.nonsense")


def test_rate_limit_answers_429_with_retry_after(fake: FakeSlack) -> None:
    fake.rate_limit("users.info", retry_after_s=0)
    with pytest.raises(SlackApiError) as err:
        client(fake).users_info(user="U1")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "0"
    fake.rate_limit("users.info", retry_after_s=0)
    retrying = client(fake)
    retrying.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    assert retrying.users_info(user="U1")["user"]["name"] == "alice"
    assert len(fake.calls_to("users.info")) == 3
