"""The user guide's Block Kit previews are the app's own blocks."""

from __future__ import annotations

from pathlib import Path

from trailseal.slackapp.preview import END, START, render_blocks, render_previews

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "slack" / "audit-app.md"


def test_the_guide_shows_what_the_code_sends() -> None:
    text = GUIDE.read_text()
    generated = START + text.partition(START)[2].partition(END)[0] + END
    assert generated == render_previews(), (
        "docs/slack/audit-app.md is out of date: run "
        "`python -m trailseal.slackapp.preview docs/slack/audit-app.md`"
    )


def test_every_block_kind_the_app_uses_is_drawn() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
        {"type": "divider"},
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Go"}}],
        },
    ]
    assert render_blocks(blocks) == ["> **Title**", ">", "> ───", ">", "> `[ Go ]`"]
