"""The documentation cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import trailseal
from trailseal.cli.reference import render
from trailseal.errors import ConfigError
from trailseal.http.reference import render_event_schema, render_openapi
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


def test_settings_come_from_the_given_environment_only(tmp_path: Path) -> None:
    s = load({"TRAILSEAL_DATA_DIR": "/srv/ts", "TRAILSEAL_LOG": "slack", "TRAILSEAL_PORT": "9"})
    assert (str(s.data_dir), s.log, s.port) == ("/srv/ts", "slack", 9)
    d = load({}, data_dir=tmp_path)
    assert (d.log, d.port, d.host) == (None, 8080, "127.0.0.1")


def test_settings_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "trailseal.toml").write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n')
    s = load({"TRAILSEAL_HOST": "127.0.0.2"}, data_dir=tmp_path)
    assert (s.port, s.host) == (9000, "127.0.0.2")


def test_bad_settings_are_refused_with_the_culprit_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRAILSEAL_PORT"):
        load({"TRAILSEAL_PORT": "eighty"}, data_dir=tmp_path)
    (tmp_path / "trailseal.toml").write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown settings: prot"):
        load({}, data_dir=tmp_path)


def test_api_references_are_in_sync_with_the_code() -> None:
    assert (ROOT / "docs" / "event.schema.json").read_text() == render_event_schema(), (
        "docs/event.schema.json is out of date: run `python -m trailseal.http.reference docs`"
    )
    assert (ROOT / "docs" / "openapi.json").read_text() == render_openapi(), (
        "docs/openapi.json is out of date: run `python -m trailseal.http.reference docs`"
    )


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
    assert "trailseal serve" in blocks[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci, "README's test command must be what .ci/run runs"


def test_only_settings_reads_the_environment() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src").rglob("*.py")
        if p.name != "settings.py" and re.search(r"os\.environ|getenv", p.read_text())
    ]
    assert offenders == []
