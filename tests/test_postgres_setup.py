"""Choosing PostgreSQL: storage URLs, `init --storage`, `migrate-db`, and the data
directory's [storage] table, with the errors an operator meets on the way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres_dsn
from tests.test_cli import ORIGIN, Cli
from trailseal.cli.common import EXIT_CONFIG, EXIT_OK
from trailseal.datadir import DataDir
from trailseal.errors import ConfigError, StorageError
from trailseal.storage.urls import StorageUrl, parse, redact


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """A CLI bound to a data directory that does not exist yet."""
    monkeypatch.delenv("TRAILSEAL_DATA_DIR", raising=False)
    monkeypatch.delenv("TRAILSEAL_LOG", raising=False)
    return Cli(capsys, monkeypatch, tmp_path / "data")


@pytest.fixture
def ts(run: Cli) -> Cli:
    """A CLI bound to an initialized SQLite data directory."""
    run.ok("init", "--origin", ORIGIN)
    return run


def test_storage_urls() -> None:
    assert parse("postgresql://u@h:5/db?schema=s1&sslmode=require") == StorageUrl(
        "postgresql", dsn="postgresql://u@h:5/db?sslmode=require", schema="s1"
    )
    assert parse("postgres://u@h/db").schema == "trailseal"
    assert parse("sqlite:///abs/x.db") == StorageUrl("sqlite", path=Path("/abs/x.db"))
    assert parse("rel.db", base=Path("/d")) == StorageUrl("sqlite", path=Path("/d/rel.db"))
    with pytest.raises(ConfigError, match="neither sqlite: nor postgresql://") as caught:
        parse("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(caught.value)
    assert redact("postgresql://u:hunter2@h:5/db") == "postgresql://u:***@h:5/db"
    assert "hunter2" not in str(parse("postgresql://u:hunter2@h/db?schema=x"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    dsn = postgres_dsn()
    import psycopg

    schema = "t_setup_" + uuid.uuid4().hex[:12]
    yield f"{dsn}?schema={schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute("DROP ROLE IF EXISTS " + schema + "_svc")


def test_init_on_postgresql_then_migrate_db(run: Cli, pg_url: str) -> None:
    out = run.ok("init", "--storage", pg_url).out
    assert "created data directory" in out
    config = (run.path / "trailseal.toml").read_text()
    assert 'engine = "postgresql"' in config
    assert pg_url in config
    assert not (run.path / "trailseal.db").exists()
    run.ok("append", stdin=b'{"id": "a", "action": "x"}\n')
    assert run.ok("verify").code == EXIT_OK

    again = run.ok("migrate-db").out
    assert "already at version" in again
    assert "up to date" in run.ok("migrate-db", "--check").out
    schema = pg_url.rsplit("=", 1)[1]
    granted = run.ok("migrate-db", "--grant", f"{schema}_svc").out
    assert f"granted '{schema}_svc'" in granted

    # A second init against the same store is refused, and tells how to add a node.
    other = Cli(run.capsys, run.monkeypatch, run.path.parent / "other")
    refused = other("init", "--storage", pg_url)
    assert refused.code != EXIT_OK
    assert "copy trailseal.toml and keys/" in refused.err
    assert not (other.path / "trailseal.toml").exists()


def test_migrate_db_on_a_fresh_schema_applies_everything(run: Cli, pg_url: str) -> None:
    out = run.ok("migrate-db", "--storage", pg_url).out
    assert "applied log migrations 1, 2" in out
    assert "applied registry migrations 1" in out
    assert "already at version" in run.ok("migrate-db", "--storage", pg_url).out


def test_migrate_db_check_reports_a_schema_behind(run: Cli) -> None:
    dsn = postgres_dsn()
    schema = "t_empty_" + uuid.uuid4().hex[:12]
    result = run("migrate-db", "--check", "--storage", f"{dsn}?schema={schema}")
    assert result.code == 1
    assert "not migrated" in result.out


def test_serve_never_migrates(tmp_path: Path, pg_url: str) -> None:
    """A data directory on a schema nobody migrated is refused with what to run."""
    (tmp_path / "trailseal.toml").write_text(
        f'default_log = "default"\n[storage]\nengine = "postgresql"\nurl = "{pg_url}"\n'
    )
    with pytest.raises(StorageError, match="not migrated"):
        DataDir.open(tmp_path)


def test_migrate_db_on_sqlite_is_a_no_op(ts: Cli) -> None:
    assert "nothing to do" in ts.ok("migrate-db").out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('engine = "postgresql"\n', "needs url"),
        ('engine = "postgresql"\nurl = "postgresql://u:pw@h/db"\n', "PGPASSWORD"),
        ('engine = "oracle"\n', "not one of sqlite, postgresql"),
    ],
)
def test_storage_table_errors(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "trailseal.toml").write_text(f"[storage]\n{table}")
    with pytest.raises(ConfigError, match=message) as caught:
        DataDir.open(tmp_path)
    assert "pw@" not in str(caught.value)


def test_init_refuses_a_password_in_the_url(run: Cli) -> None:
    result = run("init", "--storage", "postgresql://u:hunter2@127.0.0.1:1/db")
    assert result.code == EXIT_CONFIG
    assert "PGPASSWORD" in result.err
    assert "hunter2" not in result.err + result.out


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db?password=hunter2&schema=a",
        "postgresql://u:hunter2@h1:5432,h2:5433/db",
        "postgresql://u:hunter2@[::1]:5432/db",
    ],
)
def test_passwords_anywhere_in_a_url_are_redacted_and_refused(url: str, run: Cli) -> None:
    assert "hunter2" not in redact(url)
    assert "hunter2" not in str(parse(url))
    result = run("init", "--storage", url)
    assert result.code == EXIT_CONFIG
    assert "hunter2" not in result.err + result.out
    assert not (run.path / "trailseal.toml").exists()


def test_the_data_directory_config_is_private(ts: Cli) -> None:
    assert (ts.path / "trailseal.toml").stat().st_mode & 0o777 == 0o600
