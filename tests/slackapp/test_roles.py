"""Roles from users and user groups; group membership cached for a TTL, outages fail
closed and are not cached."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk.web import WebClient

from tests.slackapp.fake_slack import FakeSlack
from trailseal.settings import AuditRoles
from trailseal.slackapp.roles import RoleResolver


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_user("U0A", "a")
        fake.add_user("U0B", "b")
        fake.add_usergroup("S0G", ["U0B"])
        yield fake


def test_users_and_groups_hold_roles_and_groups_are_cached(fake: FakeSlack) -> None:
    ticks = Ticks()
    roles = RoleResolver(
        AuditRoles(requesters=("*",), approvers=("U0A", "S0G")),
        WebClient(token="xoxb-test", base_url=fake.base_url),
        ttl_s=60,
        monotonic=ticks,
    )
    assert roles.is_requester("U0ANYONE")
    assert roles.is_approver("U0A")
    assert roles.is_approver("U0B")
    assert not roles.is_approver("U0C")
    assert len(fake.calls_to("usergroups.users.list")) == 1  # U0A needed no lookup
    fake.add_usergroup("S0G", [])  # U0B leaves the group; the cache still says yes
    assert roles.is_approver("U0B")
    ticks.now = 61
    assert not roles.is_approver("U0B")
    assert roles.approvers_hint() == "<@U0A>, <!subteam^S0G>"


def test_an_unreachable_group_counts_as_empty_and_is_asked_again(fake: FakeSlack) -> None:
    roles = RoleResolver(
        AuditRoles(approvers=("S0G",)),
        WebClient(token="xoxb-test", base_url=fake.base_url),
        ttl_s=60,
        monotonic=Ticks(),
    )
    fake.fail("usergroups.users.list", "ratelimited")
    assert not roles.is_approver("U0B")
    assert not roles.is_requester("U0B")  # nobody is a requester without a list
    assert roles.is_approver("U0B")  # the failure was not cached
