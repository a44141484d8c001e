"""The documentation cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import trailseal
from trailseal.cli.reference import render
from trailseal.settings import SETTINGS, load

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_in_sync_with_help() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), (
        "docs/cli.md is out of date: run `python -m trailseal.cli.reference > docs/cli.md`"
    )


def test_every_setting_is_documented() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    for setting in SETTINGS.values():
        assert f"`{setting.env}`" in reference
        assert setting.help


def test_settings_come_from_the_given_environment_only() -> None:
    s = load({"TRAILSEAL_DATA_DIR": "/srv/ts", "TRAILSEAL_LOG": "slack"})
    assert (str(s.data_dir), s.log) == ("/srv/ts", "slack")
    d = load({})
    assert (str(d.data_dir), d.log) == ("trailseal-data", None)


def test_public_api_is_pinned() -> None:
    assert sorted(trailseal.__all__) == [
        "AppendResult",
        "DataDir",
        "Error",
        "Ledger",
        "__version__",
        "prepare",
    ]


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    assert "trailseal init" in blocks[0] and "trailseal verify" in blocks[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci, "README's test command must be what .ci/run runs"


def test_only_settings_reads_the_environment() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src").rglob("*.py")
        if p.name != "settings.py" and re.search(r"os\.environ|getenv", p.read_text())
    ]
    assert offenders == []
