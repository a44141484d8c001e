"""Secret redaction: the one-search fast path answers exactly as the full walk."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trailseal.policy.redaction import _redact, redact

SECRETS = [
    "xoxb-123456789012-abcdefghijkl",
    "xapp-1-A0123456789-abcdefgh",
    "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    "Bearer abcdefgh12345678",
    "AKIAABCDEFGHIJKLMNOP",
    "aws_secret_access_key=" + "a" * 40,
    "tsk_abcdefghijkl_" + "A" * 43,
    "ghp_" + "a" * 36,
    "password: hunter22",
    "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----",
]

# Text around the secrets includes what JSON escapes (quotes, backslashes, control
# characters) and what it does not (non-ASCII), right next to the secret.
fragments = st.one_of(
    st.sampled_from(SECRETS),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(['"', "\\", "\n", "\x00", "é", "😀", "PASSW", "secreT", "xo", "x"]),
)
strings = st.lists(fragments, max_size=5).map("".join)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), strings),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(strings, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_the_fast_path_finds_exactly_what_the_walk_finds(value: Any) -> None:
    assert redact(value) == _redact(value, [])


def test_a_value_without_secrets_is_returned_as_is() -> None:
    event = {"action": "message.posted", "actor": {"id": "U1"}, "n": [1, 2.5, None]}
    masked, records = redact(event)
    assert masked is event
    assert records == []


def test_a_secret_next_to_escaped_characters_is_found() -> None:
    event = {'k"\\\n': 'say "\nxoxb-123456789012-abcdef\\"', "ok": "fine"}
    masked, records = redact(event)
    assert masked == {'k"\\\n': 'say "\n[REDACTED:slack_token]\\"', "ok": "fine"}
    assert records == [{"path": '/k"\\\n', "mode": "mask", "detector": "slack_token"}]


def test_a_secret_in_a_key_is_found() -> None:
    masked, records = redact({"password=hunter22": 1})
    assert masked == {"[REDACTED:password]": 1}
    assert records == [{"path": "/[REDACTED:password]", "mode": "mask", "detector": "password"}]


def test_a_value_orjson_cannot_write_is_walked() -> None:
    big = 2**70  # past 64 bits: orjson refuses it, the walk still runs
    masked, records = redact({"n": big, "t": "Bearer abcdefgh12345678"})
    assert masked == {"n": big, "t": "[REDACTED:bearer_token]"}
    assert [r["detector"] for r in records] == ["bearer_token"]


def test_a_path_prefix_is_kept() -> None:
    _, records = redact("ghp_" + "a" * 36, ["content", "body"])
    assert records == [{"path": "/content/body", "mode": "mask", "detector": "github_token"}]
