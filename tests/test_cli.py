"""The `trailseal` command, run in-process through :func:`trailseal.cli.main`.

Every test works in its own data directory and asserts the exact exit status (the
``EXIT_*`` constants) and the words a person would look for in the output.
"""

from __future__ import annotations

import io
import json
import stat
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from trailseal.cli import cli as root_command
from trailseal.cli import main
from trailseal.cli.common import (
    EXIT_BAD_SIGNATURE,
    EXIT_CONFIG,
    EXIT_INCONSISTENT,
    EXIT_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TAMPERED,
    EXIT_USAGE,
)
from trailseal.core.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from trailseal.core.merkle import leaf_hash, verify_consistency
from trailseal.core.note import NoteSigner, NoteVerifier, b64decode, b64encode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.datadir import DataDir
from trailseal.errors import ProofError, SignatureError

ORIGIN = "example.com/cli"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs `trailseal --data-dir <dir> ...` in-process and captures what it printed."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, path: Path
    ) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.path = path
        self.key = ""  # the default log's verifier key, once initialized

    def __call__(self, *args: str | Path, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        self.capsys.readouterr()
        code = main(["--data-dir", str(self.path), *map(str, args)])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str | Path, stdin: bytes | None = None) -> Result:
        result = self(*args, stdin=stdin)
        assert result.code == EXIT_OK, result
        return result

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_string(self.key)

    def key_files(self) -> list[Path]:
        return sorted((self.path / "keys").iterdir())

    def checkpoint(self, size: int | None = None) -> SignedCheckpoint:
        args = ["checkpoint"] + (["--size", str(size)] if size else [])
        note = self.ok(*args).out.encode()
        return verify_checkpoint(note, [self.verifier], ORIGIN)


def _printed_key(out: str) -> str:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("verifier key:")]
    return line.split(":", 1)[1].strip()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """A CLI bound to a data directory that does not exist yet."""
    monkeypatch.delenv("TRAILSEAL_DATA_DIR", raising=False)
    monkeypatch.delenv("TRAILSEAL_LOG", raising=False)
    return Cli(capsys, monkeypatch, tmp_path / "data")


@pytest.fixture
def ts(run: Cli) -> Cli:
    """A CLI bound to an initialized data directory (origin ORIGIN)."""
    run.key = _printed_key(run.ok("init", "--origin", ORIGIN).out)
    return run


def _ndjson(records: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _events(n: int, start: int = 0) -> list[dict[str, object]]:
    """Records with ids, two sources, a nested actor and a time a day apart."""
    return [
        {
            "id": f"e{i}",
            "source": "slack" if i % 2 else "github",
            "time": f"2025-01-{i + 1:02d}T12:00:00Z",
            "actor": {"name": "alice" if i % 3 == 0 else "bob"},
            "action": "login",
        }
        for i in range(start, start + n)
    ]


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_bytes(_ndjson(_events(6)))
    return path


# -- init ------------------------------------------------------------------------------


def test_init_prints_a_verifier_key_and_creates_private_files(run: Cli) -> None:
    result = run.ok("init", "--origin", ORIGIN)
    assert f"origin:        {ORIGIN}" in result.out
    verifier = NoteVerifier.from_string(_printed_key(result.out))
    assert verifier.name == ORIGIN
    assert "--origin" not in result.err  # no localhost warning

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(run.path) == 0o700
    assert mode(run.path / "keys") == 0o700
    (key_file,) = run.key_files()
    assert key_file.name == f"default.{verifier.key_id:08x}.key"
    assert mode(key_file) == 0o600
    assert key_file.read_text().startswith(f"PRIVATE+KEY+{ORIGIN}+{verifier.key_id:08x}+")
    assert mode(run.path / "trailseal.db") == 0o600
    assert (run.path / "trailseal.toml").is_file()


def test_init_without_origin_warns_about_localhost(run: Cli) -> None:
    result = run.ok("init")
    assert "origin:        localhost/trailseal/default" in result.out
    assert "--origin" in result.err


def test_init_exist_ok_prints_the_existing_keys(run: Cli) -> None:
    first = run.ok("init", "--exist-ok", "--origin", ORIGIN)  # creates it
    key = _printed_key(first.out)
    again = run.ok("init", "--exist-ok", "--origin", ORIGIN)
    assert "already exists with log 'default'" in again.out
    assert f"origin:        {ORIGIN}" in again.out
    assert _printed_key(again.out) == key
    assert len(run.key_files()) == 1

    new_key = _printed_key(run.ok("signing-key", "rotate").out)
    keys = [
        ln.split(":", 1)[1].strip()
        for ln in run.ok("init", "--exist-ok").out.splitlines()
        if ln.startswith("verifier key:")
    ]
    assert keys == [key, new_key]


def test_init_twice_is_refused(ts: Cli) -> None:
    before = ts.key_files()
    result = ts("init", "--origin", "example.com/other")
    # AlreadyExistsError is not in the exit status map: it falls back to EXIT_CONFIG.
    assert result.code == EXIT_CONFIG
    assert "already a trailseal data directory" in result.err
    assert "log create" in result.err
    assert ts.key_files() == before


@pytest.mark.parametrize(
    "args", [["append"], ["verify"], ["show", "0"], ["checkpoint"], ["log", "list"]]
)
def test_unknown_data_dir_hints_at_init(run: Cli, args: list[str]) -> None:
    result = run(*args, stdin=b"")
    assert result.code == EXIT_CONFIG
    assert "not a trailseal data directory" in result.err
    assert "trailseal init" in result.err
    assert not run.path.exists()


def test_data_dir_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAILSEAL_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.delenv("TRAILSEAL_LOG", raising=False)
    assert main(["init", "--origin", ORIGIN]) == EXIT_OK
    assert (tmp_path / "env-data" / "trailseal.toml").is_file()
    capsys.readouterr()
    assert main(["log", "list"]) == EXIT_OK
    assert "* default\texample.com/cli\tsize 0" in capsys.readouterr().out


# -- append ----------------------------------------------------------------------------


def test_append_from_a_file(ts: Cli, events_file: Path) -> None:
    result = ts.ok("append", events_file)
    assert "appended 6 entries (0 duplicates, 0 conflicts); tree size 6" in result.out
    assert ts.checkpoint().tree_size == 6


def test_append_from_stdin(ts: Cli) -> None:
    data = _ndjson(_events(3)) + b"\n   \n" + _ndjson(_events(2, start=3))
    result = ts.ok("append", stdin=data)
    assert "appended 5 entries" in result.out
    result = ts.ok("append", "-", stdin=_ndjson([{"k": 1}]))
    assert "appended 1 entries (0 duplicates, 0 conflicts); tree size 6" in result.out


def test_append_json_results(ts: Cli, events_file: Path) -> None:
    result = ts.ok("append", "--json", "--batch-size", "4", events_file)
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["tree_size"] for r in rows] == [4, 4, 4, 4, 6, 6]  # two batches
    assert {r["status"] for r in rows} == {"appended"}
    raw = ts.ok("show", "--raw", "2").out.encode()
    assert rows[2]["leaf_hash"] == b64encode(leaf_hash(raw))
    assert "appended 6 entries" in result.err  # the summary goes to stderr with --json


def test_append_writes_receipts_that_verify(ts: Cli, events_file: Path, tmp_path: Path) -> None:
    receipts = tmp_path / "receipts" / "nested"
    ts.ok("append", "--receipts", receipts, events_file)
    files = sorted(receipts.iterdir(), key=lambda p: int(p.name.split(".")[0]))
    assert [p.name for p in files] == [f"{i}.tlog-proof" for i in range(6)]
    for i, path in enumerate(files):
        receipt = Receipt.from_text(path.read_text())
        assert receipt.index == i
        entry = ts.ok("show", "--raw", str(i)).out.encode()
        signed = verify_receipt(receipt, [ts.verifier], origin=ORIGIN, entry=entry)
        assert signed.tree_size == 6
        with pytest.raises(ProofError):
            verify_receipt(receipt, [ts.verifier], origin=ORIGIN, entry=entry + b" ")


def test_rerun_reports_duplicates_and_conflicts(ts: Cli, events_file: Path) -> None:
    ts.ok("append", events_file)
    result = ts.ok("append", events_file)
    assert "appended 0 entries (6 duplicates, 0 conflicts); tree size 6" in result.out

    changed = _events(1)
    changed[0]["action"] = "logout"  # same source + id, other content
    result = ts.ok("append", "--json", stdin=_ndjson(changed))
    (row,) = [json.loads(line) for line in result.out.splitlines()]
    assert (row["status"], row["index"]) == ("conflict", 0)
    assert "1 conflicts" in result.err
    assert "the original was kept" in result.err
    assert json.loads(ts.ok("show", "--raw", "0").out)["action"] == "login"


def test_malformed_line_3_stops_after_appending_lines_1_and_2(ts: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_bytes(_ndjson(_events(2)) + b'{"id": "e2", "oops"\n' + _ndjson(_events(2, 3)))
    result = ts("append", path)
    assert result.code == EXIT_INPUT
    assert "line 3" in result.err
    assert "not valid JSON" in result.err
    assert "2 entries before it were appended" in result.err
    assert ts.checkpoint().tree_size == 2
    assert json.loads(ts.ok("show", "--raw", "1").out)["id"] == "e1"
    assert ts("show", "2").code == EXIT_NOT_FOUND

    # Fixed and re-run: the first two are duplicates, nothing is appended twice.
    path.write_bytes(_ndjson(_events(5)))
    result = ts.ok("append", path)
    assert "appended 3 entries (2 duplicates, 0 conflicts); tree size 5" in result.out


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"[1, 2, 3]", "JSON object"),
        (b'"just a string"', "JSON object"),
        (b'{"id": [1]}', "'id' must be a string or an integer"),
        (b'{"id": 1, "source": 5}', "'source' must be a string"),
        (b'{"id": true}', "'id' must be a string or an integer"),
    ],
)
def test_entries_that_cannot_be_appended(ts: Cli, line: bytes, words: str) -> None:
    result = ts("append", stdin=b'{"ok": true}\n' + line + b"\n")
    assert result.code == EXIT_INPUT
    assert "line 2" in result.err
    assert words in result.err
    assert ts.checkpoint().tree_size == 1


def test_oversized_entry_is_refused(ts: Cli) -> None:
    result = ts("append", stdin=_ndjson([{"blob": "x" * 70_000}]))
    assert result.code == EXIT_INPUT
    assert "line 1" in result.err
    assert "limit is 65535" in result.err


@pytest.mark.parametrize(
    "args",
    [
        ["prove", "0", "-o", "{missing}/0.tlog-proof"],
        ["export", "-o", "{missing}/bundle.zip"],
    ],
    ids=["prove", "export"],
)
def test_output_into_a_missing_directory(ts: Cli, tmp_path: Path, args: list[str]) -> None:
    """A message and EXIT_NOT_FOUND, not a traceback (whose status 1 means tampered)."""
    ts.ok("append", stdin=_ndjson(_events(1)))
    missing = tmp_path / "no" / "such" / "dir"
    result = ts(*[a.format(missing=missing) for a in args])
    assert result.code == EXIT_NOT_FOUND
    assert "error: " in result.err
    assert "No such file or directory" in result.err
    assert str(missing) in result.err


def test_receipts_into_an_unwritable_place(ts: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = ts("append", "--receipts", blocker / "receipts", stdin=_ndjson(_events(1)))
    assert result.code in (EXIT_CONFIG, EXIT_NOT_FOUND)
    assert "error: " in result.err


def test_missing_input_file_is_a_usage_error(ts: Cli, tmp_path: Path) -> None:
    result = ts("append", tmp_path / "nope.ndjson")
    assert result.code == EXIT_USAGE


# -- show ------------------------------------------------------------------------------


def test_show_by_index_and_by_id(ts: Cli, events_file: Path) -> None:
    ts.ok("append", events_file)
    raw = ts.ok("show", "--raw", "3").out.encode()
    result = ts.ok("show", "3")
    assert result.out.startswith("index:     3\n")
    assert f"leaf hash: {b64encode(leaf_hash(raw))}" in result.out
    assert json.loads(result.out.split("\n", 2)[2]) == json.loads(raw)
    assert '"id": "e3"' in result.out  # indented, sorted JSON

    by_id = ts.ok("show", "--id", "e3", "--source", "slack")
    assert by_id.out == result.out
    assert ts("show", "--id", "e3").code == EXIT_NOT_FOUND  # source defaults to ""
    assert ts("show", "--id", "e3", "--source", "github").code == EXIT_NOT_FOUND
    assert ts("show", "99").code == EXIT_NOT_FOUND
    assert ts("show").code == EXIT_USAGE
    assert ts("show", "3", "--id", "e3", "--source", "slack").code == EXIT_USAGE
    assert ts("show", "-1").code == EXIT_USAGE


def test_show_raw_prints_the_exact_canonical_bytes(ts: Cli) -> None:
    ts.ok(
        "append",
        stdin='{"z": 1, "a": "caf\u00e9 \U0001f600", "m": {"b": [1, 2], "a": null}}\n'.encode(),
    )
    out = ts.ok("show", "--raw", "0").out
    assert out.encode() == '{"a":"caf\u00e9 \U0001f600","m":{"a":null,"b":[1,2]},"z":1}'.encode()
    assert not out.endswith("\n")


# -- prove -----------------------------------------------------------------------------


def test_prove_by_index_and_by_id(ts: Cli, events_file: Path, tmp_path: Path) -> None:
    ts.ok("append", events_file)
    entry = ts.ok("show", "--raw", "4").out.encode()
    text = ts.ok("prove", "4").out
    receipt = Receipt.from_text(text)
    assert receipt.index == 4
    assert verify_receipt(receipt, [ts.verifier], origin=ORIGIN, entry=entry).tree_size == 6

    assert ts.ok("prove", "--id", "e4", "--source", "github").out == text

    out = tmp_path / "4.tlog-proof"
    result = ts.ok("prove", "4", "-o", out)
    assert out.read_text() == text
    assert f"to {out}" in result.err

    assert ts("prove", "6").code == EXIT_NOT_FOUND
    assert ts("prove", "--id", "nope").code == EXIT_NOT_FOUND
    assert ts("prove").code == EXIT_USAGE


def test_prove_into_an_older_checkpoint(ts: Cli) -> None:
    ts.ok("append", stdin=_ndjson(_events(3)))
    ts.ok("append", stdin=_ndjson(_events(4, start=3)))
    entry = ts.ok("show", "--raw", "1").out.encode()

    receipt = Receipt.from_text(ts.ok("prove", "1", "--tree-size", "3").out)
    signed = verify_receipt(receipt, [ts.verifier], origin=ORIGIN, entry=entry)
    assert signed.tree_size == 3
    assert receipt.checkpoint == ts.ok("checkpoint", "--size", "3").out.encode()

    assert ts("prove", "4", "--tree-size", "3").code == EXIT_NOT_FOUND  # not in that tree
    assert ts("prove", "1", "--tree-size", "5").code == EXIT_NOT_FOUND  # no such checkpoint
    assert ts("prove", "1", "--tree-size", "0").code == EXIT_USAGE


# -- consistency -----------------------------------------------------------------------


def _parse_consistency(out: str) -> tuple[int, int, list[bytes], bytes]:
    head, _, note = out.partition("\n\n")
    first, *hashes = head.split("\n")
    word, size1, size2 = first.split()
    assert word == "consistency"
    proof = [b64decode(h, "proof hash") for h in hashes]
    return int(size1), int(size2), proof, note.encode()


@pytest.fixture
def three_checkpoints(ts: Cli) -> Cli:
    """Checkpoints at sizes 3, 7 and 12."""
    ts.ok("append", stdin=_ndjson(_events(3)))
    ts.ok("append", stdin=_ndjson(_events(4, start=3)))
    ts.ok("append", stdin=_ndjson(_events(5, start=7)))
    return ts


def test_consistency_from_a_size(three_checkpoints: Cli) -> None:
    ts = three_checkpoints
    size1, size2, proof, note = _parse_consistency(ts.ok("consistency", "--from", "3").out)
    assert (size1, size2) == (3, 12)
    assert proof
    new = verify_checkpoint(note, [ts.verifier], ORIGIN)
    old = ts.checkpoint(3)
    verify_consistency(3, 12, proof, old.root_hash, new.root_hash)

    out = ts.ok("consistency", "--from", "3", "--to", "7").out
    size1, size2, proof, note = _parse_consistency(out)
    assert (size1, size2) == (3, 7)
    verify_consistency(3, 7, proof, old.root_hash, ts.checkpoint(7).root_hash)

    assert _parse_consistency(ts.ok("consistency", "--from", "12").out)[2] == []
    assert ts("consistency", "--from", "5").code == EXIT_NOT_FOUND  # no checkpoint at 5
    # A reversed range is a usage error, not a verification failure.
    result = ts("consistency", "--from", "7", "--to", "3")
    assert result.code == EXIT_USAGE
    assert "--to 3 is smaller than --from 7" in result.err
    assert ts("consistency").code == EXIT_USAGE


def test_consistency_from_a_held_checkpoint(three_checkpoints: Cli, tmp_path: Path) -> None:
    ts = three_checkpoints
    held = tmp_path / "held.checkpoint"
    held.write_text(ts.ok("checkpoint", "--size", "7").out)
    result = ts.ok("consistency", "--from-checkpoint", held)
    assert result.out == ts.ok("consistency", "--from", "7").out
    assert ts("consistency", "--from-checkpoint", held, "--from", "7").code == EXIT_USAGE


def test_held_checkpoint_with_another_root_is_a_fork(
    three_checkpoints: Cli, tmp_path: Path
) -> None:
    ts = three_checkpoints
    data_dir = DataDir.open(ts.path)
    try:
        log = data_dir.log()
        signer = data_dir.load_signer(log, data_dir.keys(log)[0].verifier)
    finally:
        data_dir.close()
    forged = sign_checkpoint(Checkpoint(ORIGIN, 7, b"\x42" * 32), [signer]).to_bytes()
    held = tmp_path / "forked.checkpoint"
    held.write_bytes(forged)

    result = ts("consistency", "--from-checkpoint", held)
    assert result.code == EXIT_INCONSISTENT
    assert "forked" in result.err
    assert b64encode(b"\x42" * 32) in result.err  # both checkpoints are shown as evidence
    assert b64encode(ts.checkpoint(7).root_hash) in result.err


def test_held_checkpoint_signed_by_another_key(three_checkpoints: Cli, tmp_path: Path) -> None:
    ts = three_checkpoints
    other = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(ts.checkpoint(7).checkpoint, [other]).to_bytes()
    held = tmp_path / "other.checkpoint"
    held.write_bytes(note)
    result = ts("consistency", "--from-checkpoint", held)
    assert result.code == EXIT_BAD_SIGNATURE
    assert "not signed by a trusted key" in result.err


# -- checkpoint and logs ---------------------------------------------------------------


def test_checkpoint_of_an_empty_log(ts: Cli) -> None:
    result = ts("checkpoint")
    assert result.code == EXIT_NOT_FOUND
    assert "empty" in result.err


def test_checkpoint_prints_the_signed_note(ts: Cli) -> None:
    ts.ok("append", stdin=_ndjson(_events(2)))
    out = ts.ok("checkpoint").out
    assert out.startswith(f"{ORIGIN}\n2\n")
    assert f"\n\n\u2014 {ORIGIN} " in out
    assert verify_checkpoint(out.encode(), [ts.verifier], ORIGIN).tree_size == 2
    assert ts("checkpoint", "--size", "1").code == EXIT_NOT_FOUND


def test_log_create_and_list(ts: Cli) -> None:
    result = ts.ok("log", "create", "audit", "--origin", "example.com/audit")
    assert "created log 'audit' with origin example.com/audit" in result.out
    audit_key = _printed_key(result.out)
    assert NoteVerifier.from_string(audit_key).name == "example.com/audit"
    assert (ts.path / "keys" / f"audit.{audit_key.split('+')[1]}.key").is_file()

    ts.ok("append", stdin=_ndjson(_events(2)))
    ts.ok("--log", "audit", "append", stdin=_ndjson(_events(3)))
    listing = ts.ok("log", "list").out.splitlines()
    assert listing == [
        f"* default\t{ORIGIN}\tsize 2",
        "  audit\texample.com/audit\tsize 3",
    ]
    note = ts.ok("--log", "audit", "checkpoint").out.encode()
    verify_checkpoint(note, [NoteVerifier.from_string(audit_key)], "example.com/audit")

    assert ts("log", "create", "audit", "--origin", "example.com/x").code == EXIT_CONFIG
    assert ts("log", "create", "dup", "--origin", "example.com/audit").code == EXIT_CONFIG
    assert ts("log", "create", "bad/name", "--origin", "example.com/y").code == EXIT_CONFIG
    assert ts("log", "create", "spaces", "--origin", "example.com/a b").code == EXIT_CONFIG
    assert ts("log", "create", "noorigin").code == EXIT_USAGE
    assert ts("--log", "nope", "show", "0").code == EXIT_NOT_FOUND


def test_every_log_of_a_data_dir_verifies(ts: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logs 1, 2 and 3 share one entries table, partitioned by rowid: each sees its own."""
    ts.ok("log", "create", "b", "--origin", "example.com/b")
    ts.ok("log", "create", "c", "--origin", "example.com/c")
    for n, log in [(4, "default"), (5, "b"), (6, "c")]:
        ts.ok("--log", log, "append", stdin=_ndjson([{"log": log, "n": i} for i in range(n)]))
    for n, log in [(4, "default"), (5, "b"), (6, "c")]:
        result = ts.ok("--log", log, "verify")
        assert f"OK example.com/{'cli' if log == 'default' else log}: {n} entries" in result.out
        assert json.loads(ts.ok("--log", log, "show", "--raw", str(n - 1)).out) == {
            "log": log,
            "n": n - 1,
        }
        assert ts("--log", log, "show", str(n)).code == EXIT_NOT_FOUND
    monkeypatch.setenv("TRAILSEAL_LOG", "c")
    assert "tree size 6" in ts.ok("verify").out


# -- keys ------------------------------------------------------------------------------


def test_key_rotation_co_signs_and_retire(ts: Cli) -> None:
    old = ts.verifier
    ts.ok("append", stdin=_ndjson(_events(2)))

    result = ts.ok("signing-key", "rotate")
    assert "co-signed" in result.out
    new = NoteVerifier.from_string(_printed_key(result.out))
    assert new.name == ORIGIN
    assert new.key_id != old.key_id
    assert len(ts.key_files()) == 2

    ts.ok("append", stdin=_ndjson(_events(2, start=2)))
    note = ts.ok("checkpoint").out.encode()
    assert note.count("\u2014 ".encode()) == 2
    assert verify_checkpoint(note, [old], ORIGIN).tree_size == 4
    assert verify_checkpoint(note, [new], ORIGIN).tree_size == 4

    assert ts.ok("verify", "--key", old.to_string()).code == EXIT_OK
    # The first checkpoint predates the new key: trusting only it fails.
    result = ts("verify", "--key", new.to_string())
    assert result.code == EXIT_BAD_SIGNATURE
    assert "FAIL [signature]" in result.err

    listing = ts.ok("signing-key", "list").out
    assert listing.count("\tactive\t") == 2
    assert old.to_string() in listing
    assert new.to_string() in listing

    result = ts.ok("signing-key", "retire", f"{old.key_id:08x}")
    assert f"retired key {old.key_id:08x}" in result.out
    assert "retired " in ts.ok("signing-key", "list").out
    ts.ok("append", stdin=_ndjson(_events(1, start=4)))
    note = ts.ok("checkpoint").out.encode()
    assert note.count("\u2014 ".encode()) == 1
    verify_checkpoint(note, [new], ORIGIN)
    with pytest.raises(SignatureError):
        verify_checkpoint(note, [old], ORIGIN)

    # Checkpoints signed before still verify with the retired key.
    result = ts.ok("verify")
    assert "OK example.com/cli: 5 entries, 3 checkpoints" in result.out
    verify_checkpoint(ts.ok("checkpoint", "--size", "2").out.encode(), [old], ORIGIN)

    assert ts("signing-key", "retire", f"{old.key_id:08x}").code == EXIT_CONFIG  # already retired
    assert ts("signing-key", "retire", f"{new.key_id:08x}").code == EXIT_CONFIG  # the only active
    assert ts("signing-key", "retire", "0badc0de").code == EXIT_NOT_FOUND
    assert ts("signing-key", "retire", "not-hex").code == EXIT_USAGE


def test_retiring_the_only_key_is_refused(ts: Cli) -> None:
    result = ts("signing-key", "retire", f"{ts.verifier.key_id:08x}")
    assert result.code == EXIT_CONFIG
    assert "only active key" in result.err
    assert "signing-key rotate" in result.err
    ts.ok("append", stdin=_ndjson(_events(1)))  # still signing


def test_readable_key_file_is_refused(ts: Cli) -> None:
    ts.ok("append", stdin=_ndjson(_events(1)))
    (key_file,) = ts.key_files()
    key_file.chmod(0o644)
    result = ts("append", stdin=_ndjson(_events(1, start=1)))
    assert result.code == EXIT_CONFIG
    assert f"chmod 600 {key_file}" in result.err
    assert "0644" in result.err
    # Reading and verifying need no key.
    ts.ok("show", "0")
    ts.ok("verify")
    key_file.chmod(0o600)
    ts.ok("append", stdin=_ndjson(_events(1, start=1)))


def test_missing_key_file_is_refused(ts: Cli) -> None:
    (key_file,) = ts.key_files()
    key_file.unlink()
    result = ts("append", stdin=_ndjson(_events(1)))
    assert result.code == EXIT_CONFIG
    assert "restore it from backup" in result.err


# -- export and verify-bundle ----------------------------------------------------------


@pytest.fixture
def exported(ts: Cli) -> Cli:
    """Ten events in checkpoints of sizes 4 and 10."""
    ts.ok("append", stdin=_ndjson(_events(4)))
    ts.ok("append", stdin=_ndjson(_events(6, start=4)))
    return ts


def _bundle_indexes(path: Path) -> list[int]:
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        names = [n for n in zf.namelist() if n.startswith("entries/")]
    indexes = [e["index"] for e in manifest["entries"]]
    assert sorted(names) == sorted(f"entries/{i}.json" for i in indexes)
    return indexes


@pytest.mark.parametrize(
    ("args", "indexes"),
    [
        ([], list(range(10))),
        (["--where", "source=slack"], [1, 3, 5, 7, 9]),
        (["--where", "source=slack", "--where", "actor.name=alice"], [3, 9]),
        (["--where", 'actor={"name":"bob"}'], [1, 2, 4, 5, 7, 8]),
        (["--since", "2025-01-03T00:00:00Z"], [2, 3, 4, 5, 6, 7, 8, 9]),
        (["--until", "2025-01-03T12:00:00Z"], [0, 1]),
        (["--since", "2025-01-02T00:00:00+01:00", "--until", "2025-01-05T00:00:00Z"], [1, 2, 3]),
        (["--from-index", "2", "--to-index", "5"], [2, 3, 4]),
        (["--from-index", "8"], [8, 9]),
        (["--from-index", "7", "--where", "source=github"], [8]),
        (["--where", "source=nobody"], []),
    ],
)
def test_export_selections_verify(
    exported: Cli, tmp_path: Path, args: list[str], indexes: list[int]
) -> None:
    out = tmp_path / "bundle.zip"
    result = exported.ok("export", "-o", out, *args)
    assert f"wrote {len(indexes)} entries to {out} (proven into tree size 10)" in result.out
    assert _bundle_indexes(out) == indexes
    assert not out.with_name(out.name + ".partial").exists()

    result = exported.ok("verify-bundle", out, "--key", exported.key)
    assert f"OK {ORIGIN}: {len(indexes)} entries proven into tree size 10" in result.out


def test_export_chunked_verifies(exported: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    exported.ok("export", "-o", out, "--chunked", "--where", "source=slack", "--since-size", "4")
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "trailseal-evidence-bundle/v2"
    assert manifest["entry_count"] == 5
    result = exported.ok("verify-bundle", out, "--key", exported.key, "--json")
    report = json.loads(result.out)
    assert (report["ok"], report["entries_checked"], report["consistency_checked"]) == (True, 5, 1)


def test_export_since_size_includes_a_consistency_proof(exported: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    exported.ok("export", "-o", out, "--since-size", "4", "--where", "source=slack")
    with zipfile.ZipFile(out) as zf:
        assert "checkpoints/4" in zf.namelist()
        assert "consistency/4-10" in zf.namelist()
    key_file = tmp_path / "trusted.keys"
    key_file.write_text(exported.key + "\n")
    result = exported.ok("verify-bundle", out, "--key-file", key_file, "--json")
    report = json.loads(result.out)
    assert report["ok"] is True
    assert report["consistency_checked"] == 1
    assert report["entries_checked"] == 5

    missing = tmp_path / "missing.zip"
    assert exported("export", "-o", missing, "--since-size", "5").code == EXIT_NOT_FOUND
    assert not missing.exists()
    assert not missing.with_name("missing.zip.partial").exists()  # nothing half-written


def test_export_bad_options(exported: Cli, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    assert exported("export", "-o", out, "--where", "novalue").code == EXIT_USAGE
    assert exported("export", "-o", out, "--since", "yesterday").code == EXIT_USAGE
    result = exported("export", "-o", out, "--since", "2025-01-01T00:00:00")
    assert result.code == EXIT_USAGE
    assert "time zone" in result.err
    assert exported("export").code == EXIT_USAGE
    assert not out.exists()


def test_export_of_an_empty_log(ts: Cli, tmp_path: Path) -> None:
    result = ts("export", "-o", tmp_path / "b.zip")
    assert result.code == EXIT_INPUT
    assert "empty" in result.err


def test_verify_bundle_with_another_key(exported: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    exported.ok("export", "-o", out)
    other = NoteSigner.generate(ORIGIN).verifier.to_string()
    result = exported("verify-bundle", out, "--key", other)
    assert result.code == EXIT_BAD_SIGNATURE
    assert "not signed by a trusted key" in result.err
    assert exported("verify-bundle", out).code == EXIT_USAGE  # a key is required


def _rewrite_zip(path: Path, name: str, edit: Callable[[bytes], bytes]) -> None:
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    assert name in [info.filename for info, _ in members]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, edit(data) if info.filename == name else data)


def test_verify_bundle_with_an_altered_entry(exported: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    exported.ok("export", "-o", out)
    _rewrite_zip(out, "entries/6.json", lambda d: d.replace(b'"login"', b'"logon"'))
    result = exported("verify-bundle", out, "--key", exported.key, "--json")
    assert result.code == EXIT_TAMPERED
    report = json.loads(result.out)
    assert report["ok"] is False
    assert "entries/6.json does not match its hash in the manifest" in report["problems"]
    assert any(p.startswith("entry 6:") for p in report["problems"])
    assert "FAIL entry 6:" in result.err


def test_verify_bundle_with_an_altered_consistency_proof(exported: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    exported.ok("export", "-o", out, "--since-size", "4")
    _rewrite_zip(out, "consistency/4-10", lambda d: d.replace(d[:4], b"AAAA", 1))
    result = exported("verify-bundle", out, "--key", exported.key)
    assert result.code == EXIT_TAMPERED
    assert "consistency 4->10" in result.err


def test_verify_bundle_of_a_non_bundle(ts: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    assert ts("verify-bundle", junk, "--key", ts.key).code == EXIT_INPUT


# -- verify on the local store ---------------------------------------------------------


def test_verify_empty_and_full_log(ts: Cli, events_file: Path) -> None:
    result = ts.ok("verify", "--json")
    assert json.loads(result.out)["tree_size"] == 0
    ts.ok("append", events_file)
    report = json.loads(ts.ok("verify", "--json").out)
    assert report["ok"] is True
    assert report["entries_checked"] == 6
    assert report["root_hash"] == b64encode(ts.checkpoint().root_hash)


def test_verify_with_an_untrusted_key(ts: Cli, events_file: Path) -> None:
    ts.ok("append", events_file)
    other = NoteSigner.generate(ORIGIN).verifier.to_string()
    result = ts("verify", "--key", other)
    assert result.code == EXIT_BAD_SIGNATURE
    assert "FAIL [signature]" in result.err


# -- help ------------------------------------------------------------------------------


def _command_paths(command: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(root_command)


def test_every_command_is_listed() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert names >= {
        "",
        "init",
        "append",
        "show",
        "prove",
        "consistency",
        "checkpoint",
        "verify",
        "export",
        "verify-bundle",
        "log",
        "log create",
        "log list",
        "signing-key",
        "signing-key list",
        "signing-key rotate",
        "signing-key retire",
        "serve",
        "tenants",
        "tenants create",
        "tenants add-log",
        "tenants list",
        "keys",
        "keys create",
        "keys list",
        "keys revoke",
    }


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "trailseal")
def test_help_of_every_command(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> None:
    assert main([*path, "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: trailseal {' '.join(path)}".rstrip())


def test_top_level_help_documents_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Exit status:" in out
    assert "the data directory, a key file or a setting is missing or unsafe" in out


def test_version_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert "trailseal, version" in capsys.readouterr().out
    assert main(["frobnicate"]) == EXIT_USAGE
    assert "No such command" in capsys.readouterr().err
