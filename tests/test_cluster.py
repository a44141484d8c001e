"""Many ``trailseal serve`` nodes on one PostgreSQL store, and the integrator's failover.

Three nodes share a PostgreSQL schema, each with its own data directory (the same
configuration and keys, as an operator would deploy them). Client threads write to every
node, single events and batches, and remember each acknowledged event. Then the node that
integrates the log is killed with SIGKILL mid-ingest; the clients of that node move to
another one and resend what had no answer. Another node must take the lock and carry
on; afterwards the database, read directly, holds every acknowledged event at the index
and leaf hash it was acknowledged with under the checkpoint its receipt carries, no
index twice, no event twice, and ``trailseal verify`` passes.

A read-only node (no signing key) serves search, proofs and tiles and refuses ingest;
its reads are audited through the integrator.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import postgres_dsn
from tests.test_service_crash import (
    BATCH,
    LOG,
    TRAILSEAL,
    Ledgerbook,
    Server,
    check_store,
    post,
)
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.errors import SignatureError
from trailseal.service.core import Service
from trailseal.service.registry import Principal

NODES = 3
INGEST_BEFORE_KILL_S = 2.0
INGEST_AFTER_KILL_S = 3.0


@pytest.fixture
def store_url() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL schema as a storage URL; dropped afterwards."""
    dsn = postgres_dsn()
    import psycopg

    schema = "t_cluster_" + uuid.uuid4().hex[:12]
    yield f"{dsn}?schema={schema}", schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def init_node(path: Path, url: str) -> None:
    """``trailseal init --storage URL`` into ``path``."""
    done = subprocess.run(
        [*TRAILSEAL, "--data-dir", str(path), "init", "--storage", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def make_nodes(tmp: Path, url: str, count: int) -> tuple[list[Path], str]:
    """``init`` one data directory on the store, bootstrap it, copy it per node."""
    first = tmp / "node0"
    init_node(first, url)
    service, token = Service.open(first)
    service.close()
    assert token
    dirs = [first]
    for i in range(1, count):
        dirs.append(tmp / f"node{i}")
        shutil.copytree(first, dirs[-1])
    for d in dirs:  # each node indexes for search on its own
        (d / "search.db").unlink(missing_ok=True)
    return dirs, token


def readyz(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/readyz", timeout=5).json()
    return body


def wait_for_integrator(servers: list[Server], timeout: float = 20) -> tuple[Server, float]:
    """The live node that integrates the log, and how long it took to find one."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for s in servers:
            if s.proc is None or s.proc.poll() is not None:
                continue
            try:
                if LOG in readyz(s).get("cluster", {}).get("integrating", []):
                    return s, time.monotonic() - start
            except httpx.TransportError:
                continue
        time.sleep(0.05)
    pytest.fail("no node took over the integration of the log")


def writers(
    servers: list[Server], token: str, book: Ledgerbook, stop: threading.Event
) -> list[threading.Thread]:
    """Two client threads per node (one single, one batch); a client whose node dies
    moves to the next live node and resends what had no answer."""

    def run(home: int, single: bool) -> None:
        at = home
        n = 0
        pending: list[str] = []
        while not stop.is_set():
            server = servers[at % len(servers)]
            if server.proc is None or server.proc.poll() is not None:
                at += 1
                continue
            with httpx.Client(
                base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60
            ) as client:
                while not stop.is_set():
                    if not pending:
                        pending = [
                            f"n{home}{'s' if single else 'b'}-{n + i}"
                            for i in range(1 if single else BATCH)
                        ]
                        n += len(pending)
                    try:
                        post(client, pending, book, single)
                        pending = []
                    except httpx.TransportError:
                        at += 1  # the node died: the same ids go to the next one
                        break
                    except AssertionError as e:
                        if "503" in str(e) or "overloaded" in str(e):
                            time.sleep(0.2)  # no integrator yet: retry the same ids
                            continue
                        raise

    threads = [
        threading.Thread(target=run, args=(i, single), daemon=True)
        for i in range(len(servers))
        for single in (True, False)
    ]
    for t in threads:
        t.start()
    return threads


def test_sigkill_the_integrator_loses_nothing(tmp_path: Path, store_url: tuple[str, str]) -> None:
    url, schema = store_url
    dirs, token = make_nodes(tmp_path, url, NODES)
    servers = [Server(d, tmp_path / f"{d.name}.log") for d in dirs]
    book = Ledgerbook()
    stop = threading.Event()
    try:
        for s in servers:
            s.start()
        integrator, _ = wait_for_integrator(servers)
        others = [s for s in servers if s is not integrator]
        assert all(LOG not in readyz(s)["cluster"]["integrating"] for s in others)

        threads = writers(servers, token, book, stop)
        time.sleep(INGEST_BEFORE_KILL_S)
        before = len(book.acked)
        assert before > 0, "nothing was acknowledged before the kill"
        assert integrator.stop(signal.SIGKILL) == -signal.SIGKILL
        successor, took = wait_for_integrator(others)
        time.sleep(INGEST_AFTER_KILL_S)
        stop.set()
        for t in threads:
            t.join(timeout=90)
            assert not t.is_alive(), "a client thread hung"
        after = len(book.acked) - before
        assert after > 0, "nothing was acknowledged after the kill"

        # What was in flight at the kill may be stored or not: resent, it is stored once.
        with httpx.Client(
            base_url=successor.url, headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            with book.lock:
                unanswered = sorted(book.unacked)
            for start in range(0, len(unanswered), BATCH):
                post(client, unanswered[start : start + BATCH], book, single=False)
        assert not book.unacked
        print(
            f"{before} acknowledged before the kill, {after} after; node {successor.port} "
            f"took over in {took:.2f} s; {len(unanswered)} resent"
        )
        for s in others:
            assert s.stop(signal.SIGTERM) == 0, s.log_tail()
    finally:
        stop.set()
        for s in servers:
            if s.proc is not None and s.proc.poll() is None:
                s.stop(signal.SIGKILL)

    from trailseal.storage.postgres import PostgresStorage

    dsn = url.split("?", 1)[0]
    size = check_store(PostgresStorage(dsn, schema=schema, migrate=False), book)
    assert size == len(book.acked), "the store holds events nobody sent"
    verified = subprocess.run(
        [*TRAILSEAL, "--data-dir", str(dirs[1]), "verify"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_read_only_node_serves_reads_and_refuses_writes(
    tmp_path: Path, store_url: tuple[str, str]
) -> None:
    url, _ = store_url
    (writer_dir, reader_dir), token = make_nodes(tmp_path, url, 2)
    for key in (reader_dir / "keys").glob("*.key"):
        key.unlink()  # a read-only node needs no signing key
    writer = Server(writer_dir, tmp_path / "writer.log")
    reader = Server(reader_dir, tmp_path / "reader.log", "--read-only")
    auth = {"authorization": f"Bearer {token}"}
    try:
        writer.start()
        reader.start()
        wait_for_integrator([writer])
        assert readyz(reader)["cluster"] == {
            "node": readyz(reader)["cluster"]["node"],
            "read_only": True,
            "integrating": [],
            "queued": {},
        }
        ids = [f"ro-{i}" for i in range(5)]
        r = httpx.post(
            f"{writer.url}/v1/logs/{LOG}/events/batch",
            json=[{"id": i, "source": "ro", "action": "ro.write"} for i in ids],
            headers=auth,
        )
        assert r.status_code == 200, r.text

        refused = httpx.post(
            f"{reader.url}/v1/logs/{LOG}/events",
            json={"id": "x", "source": "ro", "action": "ro.write"},
            headers=auth,
        )
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:trailseal:problem:read-only-node"
        assert "read-only" in refused.json()["detail"]

        found = httpx.get(
            f"{reader.url}/v1/logs/{LOG}/events", params={"action": "ro.write"}, headers=auth
        )
        assert found.status_code == 200, found.text
        assert sorted(h["entry"]["id"] for h in found.json()["hits"]) == ids
        proof = httpx.get(
            f"{reader.url}/v1/logs/{LOG}/proof/inclusion", params={"index": 0}, headers=auth
        )
        assert proof.status_code == 200, proof.text
        checkpoint = httpx.get(f"{reader.url}/v1/logs/{LOG}/checkpoint", headers=auth)
        assert checkpoint.status_code == 200
        # The reader's reads were audited: the writer integrated its access events.
        audited = httpx.get(
            f"{writer.url}/v1/logs/{LOG}/events",
            params={"source": "trailseal.access"},
            headers=auth,
        )
        actions = {h["entry"]["action"] for h in audited.json()["hits"]}
        assert {"access.search", "access.proof"} <= actions
    finally:
        for s in (reader, writer):
            if s.proc is not None and s.proc.poll() is None:
                s.stop(signal.SIGKILL)


def wait_until(condition: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_one_node_runs_a_singleton_task_and_another_takes_over(
    tmp_path: Path, store_url: tuple[str, str]
) -> None:
    """The Slack Audit Logs poller runs on one node: the one holding the task's lock."""
    url, _ = store_url
    dirs, _ = make_nodes(tmp_path, url, 3)
    first, _ = Service.open(dirs[0])
    second, _ = Service.open(dirs[1])
    reader, _ = Service.open(dirs[2])
    try:
        first.join_cluster(election_interval_s=0.1)
        assert wait_until(lambda: first.leads("slack-audit"))
        second.join_cluster(election_interval_s=0.1)
        reader.join_cluster(read_only=True)
        time.sleep(0.5)
        assert not second.leads("slack-audit")
        assert not reader.leads("slack-audit")
        first.close()  # its session ends: the lock is free
        assert wait_until(lambda: second.leads("slack-audit"))
        assert not reader.leads("slack-audit")
    finally:
        second.close()
        reader.close()


def test_nodes_starting_together_bootstrap_once(tmp_path: Path, store_url: tuple[str, str]) -> None:
    """Two nodes opening a fresh deployment at once: one operator key, both start."""
    url, _ = store_url
    first = tmp_path / "a"
    init_node(first, url)
    second = tmp_path / "b"
    shutil.copytree(first, second)
    tokens: list[str | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def start(path: Path) -> None:
        try:
            barrier.wait()
            service, token = Service.open(path)
            tokens.append(token)
            service.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(p,)) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sum(t is not None for t in tokens) == 1


def test_the_first_mark_of_a_queued_entry_stands(store_url: tuple[str, str]) -> None:
    """An integrator that appended but died before marking: the next one appends the
    same rows again (a duplicate) and must not overwrite the first answer."""
    from trailseal.storage.pg_queue import Mark, PendingQueue
    from trailseal.storage.postgres import PostgresStorage

    url, schema = store_url
    storage = PostgresStorage(url.split("?", 1)[0], schema=schema)
    try:
        log = storage.create_log("q", "example.org/q", "2026-01-01T00:00:00Z")
        queue = PendingQueue(storage)
        (row,) = queue.submit(log.id, "node-a", [(b"{}", "s", "e1")])
        assert [p.id for p in queue.claim(log.id, 10)] == [row]
        queue.mark(log.id, [(row, Mark(0, b"\x01" * 32, 1, "appended"))])
        queue.mark(log.id, [(row, Mark(0, b"\x01" * 32, 2, "duplicate"))])
        assert queue.marks([row])[row] == Mark(0, b"\x01" * 32, 1, "appended")
        assert queue.claim(log.id, 10) == []
    finally:
        storage.close()


def integrating(service: Service) -> list[str]:
    assert service.node is not None
    return service.node.integrating()


def test_keys_rotated_and_retired_on_one_node_reach_the_integrator(
    tmp_path: Path, store_url: tuple[str, str]
) -> None:
    """A new key joins the integrator's signers once its file is copied there; a retired
    one stops signing; an integrator left without an active key hands the log over."""
    url, _ = store_url
    dirs, _ = make_nodes(tmp_path, url, 2)
    a, _ = Service.open(dirs[0])
    b, _ = Service.open(dirs[1])
    admin = Principal("k", "default", "admin", True)
    try:
        for s in (a, b):
            node = s.join_cluster(election_interval_s=0.1)
            assert node is not None
            node.key_check_interval_s = 0.1
            if s is a:
                assert wait_until(lambda: LOG in integrating(a))
        ledger_a = a.ledger(a.registry.log("default", LOG))
        info = b.data_dir.log(LOG)
        (old,) = [k.verifier for k in b.data_dir.keys(info)]
        new = b.data_dir.rotate_key(info)  # made on node b: its file is only there
        time.sleep(0.5)
        assert [s.verifier for s in ledger_a.signers] == [old]  # a cannot sign with it yet
        key_file = f"{LOG}.{new.verifier.key_id:08x}.key"
        shutil.copy(dirs[1] / "keys" / key_file, dirs[0] / "keys" / key_file)
        assert wait_until(lambda: len(ledger_a.signers) == 2)

        (r,) = b.ingest(admin, LOG, [{"id": "rot-1", "source": "rot", "action": "rot.write"}])
        verify_checkpoint(r.receipt.checkpoint, [new.verifier], ledger_a.origin)

        b.data_dir.retire_key(info, old.key_id)
        assert wait_until(lambda: [s.verifier for s in ledger_a.signers] == [new.verifier])
        (r,) = b.ingest(admin, LOG, [{"id": "rot-2", "source": "rot", "action": "rot.write"}])
        with pytest.raises(SignatureError):
            verify_checkpoint(r.receipt.checkpoint, [old], ledger_a.origin)

        # Rotated again on b and the key a holds retired: a has no active key left.
        third = b.data_dir.rotate_key(info)
        b.data_dir.retire_key(info, new.verifier.key_id)
        assert wait_until(lambda: LOG in integrating(b))
        assert LOG not in integrating(a)
        (r,) = a.ingest(admin, LOG, [{"id": "rot-3", "source": "rot", "action": "rot.write"}])
        verify_checkpoint(r.receipt.checkpoint, [third.verifier], ledger_a.origin)
    finally:
        a.close()
        b.close()
