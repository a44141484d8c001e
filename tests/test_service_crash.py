"""Crash and shutdown of a real ``trailseal serve`` process under sustained ingest.

A server runs as a subprocess on a free port. Several client threads send events
(batches and single events) as fast as it answers, and remember every event it
acknowledged: a 2xx with a receipt. Then the server is killed (SIGKILL) mid-ingest,
restarted on the same data directory, and killed again, three times. After each kill the
database is read directly (a fresh ``SqliteStorage``: reads through the API would append
access events), and must hold every acknowledged event at the index and leaf hash it was
acknowledged with, under the very checkpoint its receipt carries; each receipt verifies
offline; indexes are contiguous and no ``(source, id)`` is stored twice. Events that
were in flight when the server died may or may not be stored (durable, but the answer
was lost); sent again after the restart they are answered ``appended`` or
``duplicate`` with their original index, never stored twice. Finally
``trailseal verify`` exits 0.

SIGTERM is a graceful stop: in-flight requests finish, the process exits 0 within
seconds, and every acknowledged event is stored.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import leaf_hash
from trailseal.core.note import NoteVerifier, b64decode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.storage import SqliteStorage, Storage

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TRAILSEAL = [sys.executable, "-c", "from trailseal.cli import entry_point; entry_point()"]
SOURCE = "crash"
LOG = "default"
BATCH_THREADS = 3
SINGLE_THREADS = 3
BATCH = 50
INGEST_SECONDS = 2.5
KILLS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "source": SOURCE,
        "action": "crash.write",
        "actor": {"type": "service", "id": "crash-test"},
        "raw": {"id": event_id},
    }


class Server:
    """``trailseal --data-dir D serve --port P`` as a subprocess, stderr to a file."""

    def __init__(self, data_dir: Path, log_file: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.log_file = log_file
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILSEAL_")}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        for _ in range(3):
            if self._spawn():
                return
        pytest.fail(f"no free port for the server after 3 tries:\n{self.log_tail()}")

    def _spawn(self) -> bool:
        """Start the server and wait until it is healthy; False if its port was taken."""
        self.port = free_port()  # another process may take it before the server binds
        logged = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [
                    *TRAILSEAL,
                    "--data-dir",
                    str(self.data_dir),
                    "serve",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self.env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with self.log_file.open("rb") as f:
                    f.seek(logged)
                    if b"address already in use" in f.read():
                        return False
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        pytest.fail(f"the server did not answer /healthz within 60 s:\n{self.log_tail()}")

    def bootstrap_token(self) -> str:
        lines = self.log_file.read_text().splitlines()
        for i, line in enumerate(lines[:-1]):
            if "bootstrap operator API key" in line:
                token = lines[i + 1].strip()
                assert token.startswith("tsk_"), token
                return token
        pytest.fail(f"no bootstrap token on stderr:\n{self.log_tail()}")

    def stop(self, sig: int, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@dataclass
class Ack:
    index: int
    leaf: bytes
    receipt: str
    status: str


@dataclass
class Ledgerbook:
    """What the clients sent and what the server acknowledged, across restarts."""

    acked: dict[str, Ack] = field(default_factory=dict)
    unacked: set[str] = field(default_factory=set)
    """Sent, with no answer: the server may have stored them or not."""
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, results: list[dict[str, Any]]) -> None:
        with self.lock:
            for r in results:
                assert r["status"] in ("appended", "duplicate"), r
                ack = Ack(r["index"], b64decode(r["leaf_hash"], "leaf"), r["receipt"], r["status"])
                old = self.acked.get(r["id"])
                if old is not None:
                    # Only a resend of an event whose answer was lost meets an old ack.
                    assert (old.index, old.leaf) == (ack.index, ack.leaf), r["id"]
                self.acked[r["id"]] = ack
                self.unacked.discard(r["id"])


def post(client: httpx.Client, ids: list[str], book: Ledgerbook, single: bool) -> None:
    """Send ``ids``; record the answer, or raise (and leave them unacknowledged)."""
    with book.lock:
        book.unacked.update(ids)
    if single:
        (event_id,) = ids
        r = client.post(f"/v1/logs/{LOG}/events", json=event(event_id))
        assert r.status_code in (200, 201), r.text
        book.record([r.json()])
    else:
        r = client.post(f"/v1/logs/{LOG}/events/batch", json=[event(i) for i in ids])
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["id"] for x in results] == ids
        book.record(results)


def ingest_until_error(server: Server, token: str, book: Ledgerbook, prefix: str) -> list:
    """Start client threads that send until the server stops answering."""

    def run(name: str, single: bool) -> None:
        with httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            n = 0
            while True:
                ids = [f"{prefix}-{name}-{n + i}" for i in range(1 if single else BATCH)]
                n += len(ids)
                try:
                    post(client, ids, book, single)
                except httpx.TransportError as e:
                    with book.lock:
                        book.failures[type(e).__name__] += 1
                    return

    threads = [
        threading.Thread(target=run, args=(f"b{t}", False), daemon=True)
        for t in range(BATCH_THREADS)
    ] + [
        threading.Thread(target=run, args=(f"s{t}", True), daemon=True)
        for t in range(SINGLE_THREADS)
    ]
    for t in threads:
        t.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a client thread hung after the server stopped"


def resend_unacked(server: Server, token: str, book: Ledgerbook) -> int:
    """Send again what was in flight when the server died: appended or duplicate, once."""
    with book.lock:
        pending = sorted(book.unacked)
    with httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        for start in range(0, len(pending), BATCH):
            post(client, pending[start : start + BATCH], book, single=False)
    assert not book.unacked
    return len(pending)


def check_store(db: Path | Storage, book: Ledgerbook) -> int:
    """Read the database directly; every acknowledged event is there as acknowledged."""
    storage = SqliteStorage(db) if isinstance(db, Path) else db
    try:
        log = storage.get_log(LOG)
        latest = storage.latest_checkpoint(log.id)
        assert latest is not None
        size = latest.tree_size
        verifiers = [NoteVerifier.from_string(k.verifier) for k in storage.key_events(log.id)]
        verify_checkpoint(latest.note, verifiers, log.origin)
        assert storage.entry_count(log.id) == size, "entries beyond the latest checkpoint"

        seen: Counter[tuple[str | None, str | None]] = Counter()
        indexes = []
        stored: dict[str, tuple[int, bytes]] = {}
        for entry in storage.read_entries(log.id, 0, size + 1):
            indexes.append(entry.index)
            seen[(entry.source, entry.event_id)] += 1
            stored[str(entry.event_id)] = (entry.index, leaf_hash(entry.data))
        assert indexes == list(range(size)), "indexes are not contiguous"
        twice = [k for k, c in seen.items() if c > 1]
        assert not twice, f"stored twice: {twice[:10]}"

        checkpoints: dict[int, bytes] = {}
        for event_id, ack in book.acked.items():
            assert event_id in stored, f"acknowledged event {event_id} was lost"
            assert stored[event_id] == (ack.index, ack.leaf), f"{event_id} differs from its ack"
            receipt = Receipt.from_text(ack.receipt)
            assert receipt.index == ack.index
            signed = verify_receipt(receipt, verifiers, origin=log.origin, entry_leaf_hash=ack.leaf)
            # The checkpoint the client was given is the one the store kept.
            if signed.tree_size not in checkpoints:
                found = storage.checkpoint_at(log.id, signed.tree_size)
                assert found is not None, f"checkpoint {signed.tree_size} was lost"
                checkpoints[signed.tree_size] = found.note
            assert checkpoints[signed.tree_size] == receipt.checkpoint
        return size
    finally:
        storage.close()


def run_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAILSEAL, "--data-dir", str(data_dir), "verify"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sigkill_mid_ingest_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir, tmp_path / "server.log")
    book = Ledgerbook()
    token = ""
    try:
        for round_ in range(KILLS):
            server.start()
            if round_ == 0:
                token = server.bootstrap_token()
            resent = resend_unacked(server, token, book)
            before = len(book.acked)
            threads = ingest_until_error(server, token, book, f"r{round_}")
            time.sleep(INGEST_SECONDS)
            assert all(t.is_alive() for t in threads), f"a client stopped early: {book.failures}"
            status = server.stop(signal.SIGKILL)
            join(threads)
            assert status == -signal.SIGKILL
            assert len(book.acked) > before, f"round {round_}: nothing was acknowledged"
            size = check_store(data_dir / "trailseal.db", book)
            print(
                f"kill {round_ + 1}: {len(book.acked) - before} acknowledged this round "
                f"({resent} resent), {len(book.unacked)} in flight, tree size {size}, "
                f"client errors {dict(book.failures)}"
            )
        # After the last kill: the server comes back, takes the lost answers' retries,
        # serves and stops cleanly; the whole log verifies.
        server.start()
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        resend_unacked(server, token, book)
        assert server.stop(signal.SIGTERM) == 0, server.log_tail()
        size = check_store(data_dir / "trailseal.db", book)
        assert size == len(book.acked), "the store holds events nobody sent"
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    verified = run_verify(data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_sigterm_mid_ingest_exits_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir, tmp_path / "server.log")
    book = Ledgerbook()
    try:
        server.start()
        token = server.bootstrap_token()
        threads = ingest_until_error(server, token, book, "t")
        time.sleep(1.5)
        assert all(t.is_alive() for t in threads), f"a client stopped early: {book.failures}"
        stopping = time.monotonic()
        status = server.stop(signal.SIGTERM, timeout=30)
        stop_seconds = time.monotonic() - stopping
        join(threads)
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    assert status == 0, f"exit status {status}:\n{server.log_tail()}"
    assert stop_seconds < 10, f"SIGTERM took {stop_seconds:.1f} s"
    assert '"msg":"stopped"' in server.log_tail(), server.log_tail()
    assert book.acked
    size = check_store(data_dir / "trailseal.db", book)
    assert size >= len(book.acked)
    print(f"SIGTERM: stopped in {stop_seconds:.2f} s; {len(book.acked)} acknowledged, size {size}")
    verified = run_verify(data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
