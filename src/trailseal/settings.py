"""Settings: the only module that reads the environment.

Every setting is declared once, with its environment variable, default and help text;
the CLI reference and ``trailseal --help`` are generated from these declarations, and a
test fails when one is undocumented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its environment variable, default and help text."""

    env: str
    default: str
    help: str


SETTINGS: dict[str, Setting] = {
    "data_dir": Setting(
        "TRAILSEAL_DATA_DIR",
        "trailseal-data",
        "Data directory holding the database, signing keys (0600) and trailseal.toml.",
    ),
    "log": Setting(
        "TRAILSEAL_LOG",
        "",
        "Name of the log to use; empty means the data directory's default log.",
    ),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings, passed down as plain values."""

    data_dir: Path
    log: str | None


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (the process environment by default)."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str:
        s = SETTINGS[name]
        return env.get(s.env, s.default)

    return Settings(data_dir=Path(get("data_dir")), log=get("log") or None)
