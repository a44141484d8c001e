"""``copy-log``: SQLite to PostgreSQL and back, byte for byte, verified, resumable, refusing.

The source is a real data directory whose log has several checkpoints, level-1 tiles, a
key rotation and retirement, a checkpoint re-signed at the same size, and entries with
and without idempotency keys. PostgreSQL tests use a fresh schema each (dropped after)
and are skipped, with the reason, when the server is unreachable; the same scenarios run
against a second SQLite file and the in-memory store so the logic is always tested.
"""

from __future__ import annotations

import itertools
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import FakeClock, drop_schema, postgres_dsn
from trailseal.cli import main
from trailseal.cli.common import (
    EXIT_BAD_SIGNATURE,
    EXIT_CONFIG,
    EXIT_INCONSISTENT,
    EXIT_OK,
    EXIT_TAMPERED,
)
from trailseal.copycheck import check_copy
from trailseal.copylog import CopyLimits, copy_log
from trailseal.core.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from trailseal.core.merkle import leaf_hash, verify_consistency
from trailseal.core.note import NoteSigner, NoteVerifier
from trailseal.datadir import DataDir
from trailseal.errors import (
    ConfigError,
    InconsistencyError,
    SignatureError,
    TamperError,
)
from trailseal.ledger import Ledger, rfc3339
from trailseal.storage import KeyEvent, MemoryStorage, Storage, StoredCheckpoint
from trailseal.storage.urls import open_storage
from trailseal.verify import verify_log

ORIGIN = "example.com/acme/audit"
BATCHES = (1, 7, 300, 1, 450, 13)  # level-0 tiles in several chunks, a level-1 hash
AFTER_ROTATION = (40, 2)
SIZE = sum(BATCHES) + sum(AFTER_ROTATION)
PASSWORD = "pw-n0t-to-be-printed"


# -- building a source -------------------------------------------------------------------


def _records(start: int, n: int) -> list[dict[str, Any]]:
    """Every third record has no id (no idempotency key); the others have one."""
    return [
        {"seq": i, "msg": "x" * (i % 7), "source": "slack" if i % 2 else "github"}
        | ({} if i % 3 == 0 else {"id": f"ev-{i}"})
        for i in range(start, start + n)
    ]


def _resign_at_same_size(data_dir: DataDir, ledger: Ledger) -> None:
    """A checkpoint that adds no entries: the latest tree re-signed by the active keys."""
    latest = data_dir.storage.latest_checkpoint(ledger.log.id)
    assert latest is not None
    note = sign_checkpoint(
        Checkpoint(ledger.origin, latest.tree_size, latest.root_hash), ledger.signers
    ).to_bytes()
    with data_dir.storage.write(ledger.log.id) as tx:
        tx.append(
            latest.tree_size,
            [],
            [],
            StoredCheckpoint(
                0, latest.tree_size, latest.root_hash, note, rfc3339(data_dir.clock())
            ),
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory: log ``default`` (rotated keys, a same-size checkpoint) and log
    ``other``; built once, copied per test."""
    path = tmp_path_factory.mktemp("copy") / "src"
    data_dir, info, first = DataDir.init(path, ORIGIN, clock=FakeClock())
    try:
        ledger = data_dir.ledger()
        n = 0
        for size in BATCHES:
            ledger.append(_records(n, size))
            n += size
        data_dir.rotate_key(info)
        ledger = data_dir.ledger()
        _resign_at_same_size(data_dir, ledger)  # co-signed by both keys, no new entries
        data_dir.retire_key(info, first.key_id)
        ledger = data_dir.ledger()
        for size in AFTER_ROTATION:
            ledger.append(_records(n, size))
            n += size
        data_dir.create_log("other", "example.com/acme/other")
        data_dir.ledger("other").append(_records(0, 3))
    finally:
        data_dir.close()
    return path


@pytest.fixture
def src(template: Path, tmp_path: Path) -> Path:
    """A private copy of the template data directory."""
    path = tmp_path / "src"
    path.mkdir(mode=0o700)
    for item in template.rglob("*"):
        target = path / item.relative_to(template)
        if item.is_dir():
            target.mkdir(mode=0o700)
        else:
            target.write_bytes(item.read_bytes())
            target.chmod(0o600)
    return path


@pytest.fixture
def src_store(src: Path) -> Iterator[Storage]:
    data_dir = DataDir.open(src)
    try:
        yield data_dir.storage
    finally:
        data_dir.close()


# -- destinations -------------------------------------------------------------------------


class Schemas:
    """PostgreSQL URLs with fresh schemas, dropped at the end of the test."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def url(self, password: str | None = None) -> str:
        dsn = postgres_dsn()  # skips the test, with the reason, when unreachable
        schema = f"t_{uuid.uuid4().hex}"
        self.made.append(schema)
        if password:
            dsn = dsn.replace("postgres@", f"postgres:{password}@", 1)
        return f"{dsn}?schema={schema}"


@pytest.fixture
def schemas() -> Iterator[Schemas]:
    made = Schemas()
    yield made
    for schema in made.made:
        drop_schema(schema)


DestFactory = Callable[[], Storage]


@pytest.fixture(params=["postgres", "sqlite", "memory"])
def dest_factory(
    request: pytest.FixtureRequest, schemas: Schemas, tmp_path: Path
) -> Iterator[DestFactory]:
    """Opens the same destination store again each call (as a second run would)."""
    opened: list[Storage] = []
    memory = MemoryStorage()
    url = schemas.url() if request.param == "postgres" else f"sqlite:///{tmp_path}/dest.db"

    def open_dest() -> Storage:
        if request.param == "memory":
            return memory
        store = open_storage(url)
        opened.append(store)
        return store

    yield open_dest
    for store in opened:
        store.close()


# -- what a log holds --------------------------------------------------------------------


def dump(store: Storage, name: str) -> dict[str, Any]:
    """Everything of a log but the store's own row ids."""
    info = store.get_log(name)
    return {
        "log": (info.name, info.origin, info.created_at),
        "keys": store.key_events(info.id),
        "entries": [
            (e.index, e.data, e.source, e.event_id) for e in store.read_entries(info.id, 0, 1 << 40)
        ],
        "checkpoints": [
            (c.tree_size, c.root_hash, c.note, c.signed_at) for c in store.checkpoints(info.id)
        ],
        "tiles": list(store.tile_chunks(info.id)),
    }


def original_verifiers(src: Path) -> list[NoteVerifier]:
    data_dir = DataDir.open(src)
    try:
        return [k.verifier for k in data_dir.keys(data_dir.log())]
    finally:
        data_dir.close()


def test_template_has_a_rotation_and_a_same_size_checkpoint(src_store: Storage) -> None:
    d = dump(src_store, "default")
    sizes = [c[0] for c in d["checkpoints"]]
    assert sizes[-1] == SIZE
    assert any(a == b for a, b in itertools.pairwise(sizes))  # re-signed at the same size
    assert [k.event for k in d["keys"]] == ["added", "added", "retired"]
    assert {e[3] is None for e in d["entries"]} == {True, False}
    assert {t.level for t in d["tiles"]} == {0, 1}


# -- copying ------------------------------------------------------------------------------


def test_copy_is_byte_identical_and_verifies(
    src_store: Storage, src: Path, dest_factory: DestFactory
) -> None:
    dest = dest_factory()
    result = copy_log(src_store, dest, "default")
    assert (result.entries_copied, result.tree_size, result.resumed_at) == (SIZE, SIZE, 0)
    assert result.checkpoints_copied == result.checkpoints_total == len(BATCHES) + 3
    assert dump(dest, "default") == dump(src_store, "default")

    check = check_copy(src_store, dest, "default")
    assert check.report.ok, check.report.problems
    assert check.report.entries_checked == SIZE
    assert check.consistency == f"same root as the source's checkpoint at size {SIZE}"
    # With only the original's published keys (no key read from the copy).
    copy = Ledger(dest, dest.get_log("default"))
    assert verify_log(copy, original_verifiers(src)).ok


def test_original_and_copy_checkpoints_are_consistent(
    src_store: Storage, dest_factory: DestFactory
) -> None:
    dest = dest_factory()
    copy_log(src_store, dest, "default")
    original = Ledger(src_store, src_store.get_log("default"))
    copy = Ledger(dest, dest.get_log("default"))
    verifiers = original.verifiers()
    ours = list(src_store.checkpoints(original.log.id))
    theirs = list(dest.checkpoints(copy.log.id))
    for old, new in itertools.product(ours, theirs):
        if old.tree_size > new.tree_size:
            old, new = new, old  # noqa: PLW2901 (prove from the smaller to the larger)
        for cp in (old, new):
            verify_checkpoint(cp.note, verifiers, ORIGIN)
        # Proofs built by either store verify between either's checkpoints.
        for prover in (original, copy):
            proof = prover.consistency_proof(old.tree_size, new.tree_size)
            verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash)


def test_round_trip_sqlite_postgres_sqlite(
    src_store: Storage, schemas: Schemas, tmp_path: Path
) -> None:
    pg = open_storage(schemas.url())
    back = open_storage(f"sqlite:///{tmp_path}/back.db")
    try:
        for name in ("default", "other"):
            copy_log(src_store, pg, name)
            copy_log(pg, back, name)
            assert check_copy(pg, back, name).report.ok
            assert dump(back, name) == dump(pg, name) == dump(src_store, name)
    finally:
        pg.close()
        back.close()


class Interrupted(Exception):
    """Raised from the progress callback, as a Ctrl-C or a crash between batches would."""


def test_resume_after_an_interrupted_copy(src_store: Storage, dest_factory: DestFactory) -> None:
    dest = dest_factory()

    def stop(n: int) -> None:
        raise Interrupted(n)

    limits = CopyLimits(max_batch_entries=100)
    with pytest.raises(Interrupted):
        copy_log(src_store, dest, "default", limits=limits, progress=stop)
    partial = dump(dest, "default")
    held = partial["checkpoints"][-1][0]
    assert 0 < held < SIZE
    assert partial["checkpoints"] == dump(src_store, "default")["checkpoints"][:3]
    # What was written is a verified prefix, consistent with the source.
    check = check_copy(src_store, dest, "default")
    assert check.report.ok
    assert check.consistency.startswith(f"consistency proof from size {held} to {SIZE} verified")

    dest = dest_factory()  # a second run, as a new process would
    seen: list[int] = []
    result = copy_log(src_store, dest, "default", limits=limits, progress=seen.append)
    assert result.resumed_at == held
    assert result.entries_copied == sum(seen) == SIZE - held
    assert not result.created
    assert dump(dest, "default") == dump(src_store, "default")
    assert check_copy(src_store, dest, "default").report.ok

    again = copy_log(src_store, dest, "default")  # a third run has nothing to do
    assert (again.entries_copied, again.checkpoints_copied, again.resumed_at) == (0, 0, SIZE)


def test_resume_when_only_the_log_was_created(
    src_store: Storage, dest_factory: DestFactory
) -> None:
    dest = dest_factory()
    info = src_store.get_log("default")
    dest.create_log(info.name, info.origin, info.created_at)
    dest.add_key_event(dest.get_log("default").id, src_store.key_events(info.id)[0])
    result = copy_log(src_store, dest, "default")
    assert result.key_events_copied == 2
    assert dump(dest, "default") == dump(src_store, "default")


# -- refusals -----------------------------------------------------------------------------


def _other_history(tmp_path: Path) -> Path:
    """A data directory with the same log name, origin and creation time, other entries."""
    path = tmp_path / "fork"
    data_dir, _, _ = DataDir.init(path, ORIGIN, clock=FakeClock())
    try:
        data_dir.ledger().append([{"forged": True}])
    finally:
        data_dir.close()
    return path


def test_destination_with_other_keys_is_refused_and_untouched(
    src_store: Storage, dest_factory: DestFactory, tmp_path: Path
) -> None:
    fork = DataDir.open(_other_history(tmp_path))
    try:
        dest = dest_factory()
        copy_log(fork.storage, dest, "default")
        before = dump(dest, "default")
        with pytest.raises(InconsistencyError, match=r"key history .* diverged"):
            copy_log(src_store, dest, "default")
        assert dump(dest, "default") == before
    finally:
        fork.close()


def test_destination_with_another_history_is_refused_and_untouched(
    src: Path, src_store: Storage, dest_factory: DestFactory
) -> None:
    """The log's own key signed a different history into the destination (a fork)."""
    data_dir = DataDir.open(src)
    try:
        info = src_store.get_log("default")
        first = src_store.key_events(info.id)[0]
        signer = data_dir.load_signer(info, NoteVerifier.from_string(first.verifier))
    finally:
        data_dir.close()
    dest = dest_factory()
    forked = dest.create_log(info.name, info.origin, info.created_at)
    dest.add_key_event(forked.id, first)
    Ledger(dest, forked, [signer], clock=FakeClock()).append([{"forged": True}])
    before = dump(dest, "default")
    with pytest.raises(InconsistencyError, match="has diverged: its checkpoint number 1") as caught:
        copy_log(src_store, dest, "default")
    assert caught.value.older  # both checkpoints, as evidence
    assert caught.value.newer
    assert dump(dest, "default") == before


def test_another_log_of_the_same_name_is_refused(
    src_store: Storage, dest_factory: DestFactory
) -> None:
    dest = dest_factory()
    dest.create_log("default", "example.com/someone-else", "2020-01-01T00:00:00.000000Z")
    with pytest.raises(InconsistencyError, match="another log"):
        copy_log(src_store, dest, "default")
    assert list(dest.checkpoints(dest.get_log("default").id)) == []


def test_destination_ahead_of_the_source_is_refused(
    src_store: Storage, dest_factory: DestFactory, src: Path
) -> None:
    dest = dest_factory()
    copy_log(src_store, dest, "default")
    # The source is the copy now, the original store grew: copy the original's prefix?
    data_dir = DataDir.open(src)
    try:
        data_dir.ledger().append(_records(SIZE, 5))
        grown = dump(data_dir.storage, "default")
        with pytest.raises(ConfigError, match="more checkpoints than the source"):
            copy_log(dest, data_dir.storage, "default")
        assert dump(data_dir.storage, "default") == grown
    finally:
        data_dir.close()


def _tamper_entry(db: Path, index: int) -> None:
    """Change one byte of entry ``index`` of log 1 behind the store's back."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        rowid = (1 << 40) | index
        (data,) = conn.execute("SELECT data FROM entries WHERE id = ?", (rowid,)).fetchone()
        conn.execute("UPDATE entries SET data = ? WHERE id = ?", (data[:-1] + b" ", rowid))
        conn.commit()
    finally:
        conn.close()


def test_tampered_source_is_refused_naming_the_entry(src: Path, dest_factory: DestFactory) -> None:
    _tamper_entry(src / "trailseal.db", 500)  # inside the batch that ends at size 759
    data_dir = DataDir.open(src)
    try:
        dest = dest_factory()
        with pytest.raises(TamperError, match="entry 500 does not match") as caught:
            copy_log(data_dir.storage, dest, "default", limits=CopyLimits(max_batch_entries=1))
        assert caught.value.index == 500
        assert "size 759" in str(caught.value)
        # Only the checkpoints before the tampered one were written; they verify.
        sizes = [c[0] for c in dump(dest, "default")["checkpoints"]]
        assert sizes == [1, 8, 308, 309]
        copy = Ledger(dest, dest.get_log("default"))
        assert verify_log(copy, copy.verifiers()).ok
    finally:
        data_dir.close()


def test_tampered_entry_and_tile_is_refused_naming_the_range(
    src: Path, dest_factory: DestFactory
) -> None:
    """The attacker fixed up the level-0 tile too: the root still gives them away."""
    db = src / "trailseal.db"
    _tamper_entry(db, 500)
    conn = sqlite3.connect(db)
    try:
        (data,) = conn.execute(
            "SELECT data FROM entries WHERE id = ?", ((1 << 40) | 500,)
        ).fetchone()
        conn.execute("DROP TRIGGER tiles_no_update")
        row_id, start, hashes = conn.execute(
            "SELECT id, start, hashes FROM tiles WHERE level = 0 AND idx = 1 AND start <= 244"
            " ORDER BY start DESC LIMIT 1"
        ).fetchone()
        at = (244 - start) * 32
        fixed = hashes[:at] + leaf_hash(data) + hashes[at + 32 :]
        conn.execute("UPDATE tiles SET hashes = ? WHERE id = ?", (fixed, row_id))
        conn.commit()
    finally:
        conn.close()
    data_dir = DataDir.open(src)
    try:
        with pytest.raises(TamperError, match=r"size 759\) .*\(entries 309\.\.758\)"):
            copy_log(data_dir.storage, dest_factory(), "default")
    finally:
        data_dir.close()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param(
            "DELETE FROM entries WHERE id = (1 << 40) | 17", "entries were deleted", id="deleted"
        ),
        pytest.param(
            f"INSERT INTO entries (id, log_id, data) VALUES ((1 << 40) | {SIZE}, 1, x'7b7d')",
            "entries were added",
            id="added",
        ),
    ],
)
def test_source_with_uncommitted_or_missing_entries_is_refused_before_writing(
    src: Path, dest_factory: DestFactory, sql: str, message: str
) -> None:
    conn = sqlite3.connect(src / "trailseal.db")
    try:
        conn.execute("DROP TRIGGER entries_no_delete")
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()
    data_dir = DataDir.open(src)
    try:
        dest = dest_factory()
        with pytest.raises(TamperError, match=message):
            copy_log(data_dir.storage, dest, "default")
        assert dest.list_logs() == []
    finally:
        data_dir.close()


def test_badly_signed_source_checkpoint_is_refused(src: Path, dest_factory: DestFactory) -> None:
    conn = sqlite3.connect(src / "trailseal.db")
    try:
        conn.execute("DROP TRIGGER checkpoints_no_update")
        row_id, size, root = conn.execute(
            "SELECT id, tree_size, root_hash FROM checkpoints ORDER BY id LIMIT 1 OFFSET 2"
        ).fetchone()
        # The same size and root, signed by a key that is not the log's.
        forged = sign_checkpoint(
            Checkpoint(ORIGIN, size, root), [NoteSigner.generate(ORIGIN)]
        ).to_bytes()
        conn.execute("UPDATE checkpoints SET note = ? WHERE id = ?", (forged, row_id))
        conn.commit()
    finally:
        conn.close()
    data_dir = DataDir.open(src)
    try:
        dest = dest_factory()
        with pytest.raises(SignatureError, match=r"#\d+ \(size 308\) .* not validly signed"):
            copy_log(data_dir.storage, dest, "default", limits=CopyLimits(max_batch_entries=1))
        sizes = [c[0] for c in dump(dest, "default")["checkpoints"]]
        assert sizes == [1, 8]
    finally:
        data_dir.close()


# -- the command --------------------------------------------------------------------------


def cli(*args: str | Path) -> tuple[int, str, str]:
    """Run ``trailseal`` in-process under click's CliRunner (no terminal, captured)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main([str(a) for a in args])
    return code, out.getvalue().decode(), err.getvalue().decode()


def _secret_keys(path: Path) -> list[str]:
    return [p.read_text().strip() for p in sorted((path / "keys").iterdir())]


def test_cli_end_to_end(src: Path, schemas: Schemas, tmp_path: Path) -> None:
    url = schemas.url(password=PASSWORD)
    new_dir = tmp_path / "pg-data"
    code, out, err = cli("--data-dir", src, "copy-log", "--to", url, "--keys-to", new_dir)
    assert code == EXIT_OK, err
    assert f"log 'default' ({ORIGIN})" in out
    assert f"copied {SIZE} entries, {len(BATCHES) + 3} checkpoints, 3 key events" in out
    assert f"consistent with the source: same root as the source's checkpoint at size {SIZE}" in out
    assert "log 'other'" in out
    assert "postgres:***@" in out
    # The signer keys: 0700 folder, 0600 files, the same keys, never printed.
    keys_dir = new_dir / "keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in keys_dir.iterdir()} == {0o600}
    assert _secret_keys(new_dir) == _secret_keys(src)
    for secret in _secret_keys(src):
        assert secret.split("+", 4)[4] not in out + err

    # And back into a SQLite file, one log only.
    back = tmp_path / "back.db"
    code, out2, err2 = cli(
        "copy-log", "--from", url, "--to", f"sqlite:///{back}", "--log", "default"
    )
    assert code == EXIT_OK, err2
    assert "copying 1 log(s)" in out2
    for text in (out, err, out2, err2):
        assert PASSWORD not in text
    store = open_storage(f"sqlite:///{back}")
    original = DataDir.open(src)
    try:
        assert dump(store, "default") == dump(original.storage, "default")
        assert [lg.name for lg in store.list_logs()] == ["default"]
    finally:
        store.close()
        original.close()

    # A second run resumes with nothing to copy; key files already there are kept.
    code, out3, err3 = cli("--data-dir", src, "copy-log", "--to", url, "--keys-to", new_dir)
    assert code == EXIT_OK, err3
    assert f"already up to date at size {SIZE}: nothing to copy" in out3
    assert "already in" in out3


def test_cli_never_overwrites_another_key_file(src: Path, tmp_path: Path) -> None:
    new_dir = tmp_path / "new"
    code, out, err = cli(
        "--data-dir", src, "copy-log", "--to", f"sqlite:///{tmp_path}/a.db", "--keys-to", new_dir
    )
    assert code == EXIT_OK, err
    victim = sorted((new_dir / "keys").iterdir())[0]
    other = NoteSigner.generate(ORIGIN).to_string() + "\n"
    victim.write_text(other)
    code, out, err = cli(
        "--data-dir", src, "copy-log", "--to", f"sqlite:///{tmp_path}/a.db", "--keys-to", new_dir
    )
    assert code == EXIT_CONFIG
    assert "was not overwritten" in err
    assert victim.read_text() == other
    assert other.strip().split("+", 4)[4] not in out + err


def test_cli_exit_codes_for_refusals(src: Path, tmp_path: Path, schemas: Schemas) -> None:
    fork = _other_history(tmp_path)
    dest = f"sqlite:///{tmp_path}/d.db"
    assert cli("--data-dir", fork, "copy-log", "--to", dest, "--log", "default")[0] == EXIT_OK
    code, _, err = cli("--data-dir", src, "copy-log", "--to", dest, "--log", "default")
    assert code == EXIT_INCONSISTENT
    assert "has diverged" in err

    _tamper_entry(src / "trailseal.db", 3)
    code, _, err = cli("--data-dir", src, "copy-log", "--to", schemas.url(PASSWORD))
    assert code == EXIT_TAMPERED
    assert "entry 3 does not match the leaf hash" in err
    assert PASSWORD not in err

    code, _, err = cli("copy-log", "--from", f"sqlite:///{tmp_path}/none.db", "--to", dest)
    assert code == 6
    assert "no SQLite database" in err
    assert not (tmp_path / "none.db").exists()


def test_cli_bad_signature_exit_code(src: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(src / "trailseal.db")
    try:
        conn.execute("DROP TRIGGER checkpoints_no_update")
        forged = sign_checkpoint(
            Checkpoint(ORIGIN, 1, bytes(32)), [NoteSigner.generate(ORIGIN)]
        ).to_bytes()
        conn.execute("UPDATE checkpoints SET note = ? WHERE tree_size = 1", (forged,))
        conn.commit()
    finally:
        conn.close()
    code, _, err = cli("--data-dir", src, "copy-log", "--to", f"sqlite:///{tmp_path}/x.db")
    assert code == EXIT_BAD_SIGNATURE
    assert "(size 1)" in err
    assert "not validly signed" in err


def test_copy_log_help_has_an_example() -> None:
    code, out, _ = cli("copy-log", "--help")
    assert code == EXIT_OK
    assert "Examples:" in out
    assert "--keys-to" in out
    assert "Exit status:" in out


def test_an_empty_log_is_copied_with_its_keys(dest_factory: DestFactory) -> None:
    source = MemoryStorage()
    info = source.create_log("empty", "example.com/empty", "2025-01-01T00:00:00.000000Z")
    signer = NoteSigner.generate(info.origin)
    source.add_key_event(info.id, KeyEvent(signer.verifier.to_string(), "added", "2025-01-01"))
    dest = dest_factory()
    result = copy_log(source, dest, "empty")
    assert (result.created, result.tree_size, result.key_events_copied) == (True, 0, 1)
    assert dump(dest, "empty") == dump(source, "empty")
    check = check_copy(source, dest, "empty")
    assert check.report.ok
    assert check.consistency == "both empty"


def test_cli_unknown_log_is_refused_before_copying(src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "d.db"
    args = ["--data-dir", src, "copy-log", "--to", f"sqlite:///{dest}"]
    code, _, err = cli(*args, "--log", "default", "--log", "nope")
    assert code == 6
    assert "no log named 'nope'" in err
    assert not dest.exists()  # the destination was not even created
