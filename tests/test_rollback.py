"""A store rolled back (an old backup restored) or forked is refused before serving.

The service remembers the newest checkpoint it saw of each log in
``<data dir>/witness/``; ``serve`` checks the store against it before it listens.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_service_crash import TRAILSEAL
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.errors import SignatureError, TamperError
from trailseal.ledger import Ledger
from trailseal.service import core
from trailseal.service.core import Service
from trailseal.service.registry import Principal
from trailseal.storage import SqliteStorage

ADMIN = Principal("k", "default", "admin", True)


def ingest(service: Service, ids: list[str]) -> None:
    service.ingest(ADMIN, "default", [{"id": i, "source": "rb", "action": "rb.write"} for i in ids])


def open_service(path: Path) -> Service:
    service, _ = Service.open(path)
    return service


def test_a_restored_old_database_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = open_service(data)
    ingest(service, ["a", "b"])
    service.close()
    shutil.copy(data / "trailseal.db", tmp_path / "backup.db")  # the old backup

    service = open_service(data)
    service.check_history()  # the store matches what the node saw
    ingest(service, ["c", "d", "e"])
    service.close()
    assert (data / "witness" / "default.checkpoint").stat().st_mode & 0o777 == 0o600

    for suffix in ("", "-wal", "-shm"):
        (data / f"trailseal.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", data / "trailseal.db")
    service = open_service(data)
    try:
        with pytest.raises(TamperError, match="rolled back") as caught:
            service.check_history()
        assert "5" in str(caught.value)  # the size the node saw
    finally:
        service.close()

    # serve refuses to start on it, saying why.
    served = subprocess.run(
        [*TRAILSEAL, "--data-dir", str(data), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert served.returncode != 0
    assert "rolled back" in served.stderr


def test_a_forked_store_of_the_same_size_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = open_service(data)
    ingest(service, ["a"])
    service.close()
    pristine = tmp_path / "pristine"
    shutil.copytree(data, pristine)

    service = open_service(data)
    ingest(service, ["b"])
    service.close()
    # Another history of the same length, signed by the same key: a fork.
    service = open_service(pristine)
    ingest(service, ["other"])
    service.close()
    shutil.copy(data / "witness" / "default.checkpoint", pristine / "witness")

    service = open_service(pristine)
    try:
        with pytest.raises(TamperError, match="not an extension"):
            service.check_history()
    finally:
        service.close()


def test_a_witness_file_not_signed_by_the_log_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = open_service(data)
    ingest(service, ["a"])
    service.close()
    path = data / "witness" / "default.checkpoint"
    path.write_bytes(path.read_bytes().replace(b"\n1\n", b"\n9\n", 1))
    service = open_service(data)
    try:
        with pytest.raises(TamperError, match="not a checkpoint signed"):
            service.check_history()
    finally:
        service.close()


def test_a_store_ahead_of_the_witness_is_accepted(tmp_path: Path) -> None:
    """Another node (or a CLI append) moved the log on: that is not a rollback."""
    data = tmp_path / "data"
    service = open_service(data)
    ingest(service, ["a"])
    service.close()
    other = tmp_path / "other"
    shutil.copytree(data, other)
    service = open_service(other)
    ingest(service, ["b", "c"])
    service.close()
    shutil.copy(other / "trailseal.db", data / "trailseal.db")
    for suffix in ("-wal", "-shm"):
        (data / f"trailseal.db{suffix}").unlink(missing_ok=True)
    service = open_service(data)
    try:
        saved = service.memory.check(service.ledger(service.registry.log("default", "default")))
        assert saved is not None
        assert saved.tree_size == 1
    finally:
        service.close()


def _rolled_back_under_a_running_service(tmp_path: Path) -> tuple[Service, Path]:
    """A running service whose database is swapped for an older copy (a failover to a
    replica that lacks the last commits), without a restart."""
    data = tmp_path / "data"
    service = open_service(data)
    ingest(service, ["a", "b"])
    service.data_dir.storage.close()
    shutil.copy(data / "trailseal.db", tmp_path / "old.db")
    service.data_dir.storage = SqliteStorage(data / "trailseal.db")
    ledger = service.ledger(service.registry.log("default", "default"))
    ledger.storage = service.data_dir.storage
    ingest(service, ["c", "d", "e"])
    service.memory.flush()
    old = SqliteStorage(tmp_path / "old.db")
    ledger.storage = old
    service.data_dir.storage = old
    return service, data


def test_a_running_ledger_refuses_a_tree_that_shrank(tmp_path: Path) -> None:
    service, _ = _rolled_back_under_a_running_service(tmp_path)
    try:
        with pytest.raises(TamperError, match="rolled back"):
            ingest(service, ["f"])
    finally:
        service.close()


def test_the_witness_keeps_a_checkpoint_the_store_contradicts(tmp_path: Path) -> None:
    """A fork grown past the remembered size must not overwrite the evidence."""
    service, data = _rolled_back_under_a_running_service(tmp_path)
    witness = data / "witness" / "default.checkpoint"
    seen = witness.read_bytes()
    tlog = service.registry.log("default", "default")
    ledger = service.ledger(tlog)
    try:
        # Another process (which never saw size 5) writes a different history to size 6.
        fork = Ledger(ledger.storage, ledger.log, ledger.signers)
        fork.append([{"id": f"x{i}", "source": "rb", "action": "rb.fork"} for i in range(4)])
        service.memory.observe(ledger, 6)
        service.memory.flush()
        assert witness.read_bytes() == seen
        with pytest.raises(TamperError, match="not an extension"):
            service.memory.check(ledger)
    finally:
        service.close()


def test_a_running_service_follows_key_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`signing-key rotate|retire` run beside `serve` takes effect without a restart."""
    monkeypatch.setattr(core, "KEY_CHECK_INTERVAL_S", 0.0)
    service = open_service(tmp_path / "data")
    try:
        ingest(service, ["a"])
        ledger = service.ledger(service.registry.log("default", "default"))
        info = service.data_dir.log("default")
        (old,) = [k.verifier for k in service.data_dir.keys(info)]
        new = service.data_dir.rotate_key(info)  # what the CLI command does
        ingest(service, ["b"])
        signed = ledger.checkpoint()
        assert signed is not None
        verify_checkpoint(signed.to_bytes(), [new.verifier], ledger.origin)
        service.data_dir.retire_key(info, old.key_id)
        ingest(service, ["c"])
        signed = ledger.checkpoint()
        assert signed is not None
        with pytest.raises(SignatureError):
            verify_checkpoint(signed.to_bytes(), [old], ledger.origin)
    finally:
        service.close()
