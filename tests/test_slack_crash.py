"""Crash and restart of a real ``trailseal serve`` under Slack Events API deliveries.

A server runs as a subprocess with one Slack app configured. Client threads post signed
``event_callback`` deliveries to ``/slack/events`` as fast as it answers; some deliveries
are sent again at once with ``X-Slack-Retry-Num`` (Slack retries when an answer is slow).
Every event_id answered 200 is remembered. The server is killed (SIGKILL) mid-load
twice and restarted on the same data directory; after each restart the deliveries that
got no answer are sent again as Slack would, with ``X-Slack-Retry-Num`` 1..3. The store
is then read directly (a fresh ``SqliteStorage``) and must hold every acknowledged
event_id exactly once; delivery-attempt records ``<event_id>/retry/<n>`` are allowed, no
id is stored twice, and ``trailseal verify`` exits 0.
"""

from __future__ import annotations

import itertools
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.test_service_crash import TRAILSEAL, Server
from trailseal.ingest.slack_events import SOURCE
from trailseal.ingest.slack_signature import slack_signature
from trailseal.service.core import Service
from trailseal.storage import SqliteStorage

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

LOG = "default"
PATH = "/slack/events"
SECRET_ENV = "TS_TEST_SLACK_SIGNING_SECRET"
THREADS = 4
LOAD_SECONDS = 2.0
KILLS = 2
RETRY_EVERY = 4
"""Every 4th acknowledged delivery is sent again at once with X-Slack-Retry-Num 1."""
MAX_RETRY = 3


def envelope(event_id: str, n: int) -> bytes:
    now = time.time()
    return json.dumps(
        {
            "token": "XXYYZZ",
            "team_id": "T0CRASH01",
            "api_app_id": "A0CRASH01",
            "event": {
                "type": "message",
                "channel": f"C0CRASH{n % 7}",
                "user": f"U0CRASH{n % 11}",
                "text": f"crash test message {event_id}",
                "ts": f"{now:.6f}",
                "event_ts": f"{now:.6f}",
                "channel_type": "channel",
            },
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(now),
        }
    ).encode()


@dataclass
class Book:
    """What was delivered and what the server acknowledged, across restarts."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    """Each event_id's delivery: a retry re-sends the same body, newly signed."""
    acked: set[str] = field(default_factory=set)
    unacked: set[str] = field(default_factory=set)
    retries: Counter[str] = field(default_factory=Counter)
    """Retries sent per event_id (the next one carries X-Slack-Retry-Num retries + 1)."""
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver(client: httpx.Client, secret: bytes, body: bytes, retry_num: int) -> None:
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": slack_signature(secret, timestamp, body),
    }
    if retry_num:
        headers["x-slack-retry-num"] = str(retry_num)
        headers["x-slack-retry-reason"] = "http_timeout"
    r = client.post(PATH, content=body, headers=headers)
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}"


def load_until_error(server: Server, secret: bytes, book: Book, prefix: str) -> list:
    def run(name: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for n in itertools.count():
                event_id = f"Ev{prefix}{name}{n:06d}"
                body = envelope(event_id, n)
                with book.lock:
                    book.bodies[event_id] = body
                    book.unacked.add(event_id)
                try:
                    deliver(client, secret, body, 0)
                    with book.lock:
                        book.acked.add(event_id)
                        book.unacked.discard(event_id)
                    if n % RETRY_EVERY == 0:  # Slack gave up waiting and retries
                        with book.lock:
                            book.retries[event_id] += 1
                        deliver(client, secret, body, 1)
                except httpx.TransportError as e:
                    with book.lock:
                        book.failures[type(e).__name__] += 1
                    return

    threads = [threading.Thread(target=run, args=(f"T{t}",), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a client thread hung after the server stopped"


def redeliver(server: Server, secret: bytes, book: Book) -> int:
    """Slack's retries of the deliveries that got no answer: X-Slack-Retry-Num 1..3."""
    with book.lock:
        pending = sorted(book.unacked)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for event_id in pending:
            retry_num = min(book.retries[event_id] + 1, MAX_RETRY)
            book.retries[event_id] = retry_num
            deliver(client, secret, book.bodies[event_id], retry_num)
            book.acked.add(event_id)
            book.unacked.discard(event_id)
    return len(pending)


def check_store(db: Path, book: Book, *, final: bool) -> tuple[int, int]:
    """Read the store directly: every acknowledged event_id is there exactly once.

    Returns the tree size and how many deliveries without an answer were stored anyway."""
    storage = SqliteStorage(db)
    try:
        log = storage.get_log(LOG)
        latest = storage.latest_checkpoint(log.id)
        assert latest is not None
        size = latest.tree_size
        assert storage.entry_count(log.id) == size, "entries beyond the latest checkpoint"
        ids: Counter[str] = Counter()
        indexes = []
        for entry in storage.read_entries(log.id, 0, size + 1):
            indexes.append(entry.index)
            assert entry.source == SOURCE, entry
            ids[str(entry.event_id)] += 1
        assert indexes == list(range(size)), "indexes are not contiguous"
        twice = [k for k, c in ids.items() if c > 1]
        assert not twice, f"stored twice: {twice[:10]}"
        logical = {i for i in ids if "/retry/" not in i}
        lost = book.acked - logical
        assert not lost, f"{len(lost)} acknowledged events were lost: {sorted(lost)[:10]}"
        assert logical <= set(book.bodies), "the store holds events nobody sent"
        for record in set(ids) - logical:
            base, _, n = record.partition("/retry/")
            assert base in book.bodies, record
            assert n.isdigit(), record
            assert 1 <= int(n) <= MAX_RETRY, record
        if final:
            assert logical == book.acked, "sent events that were never acknowledged"
        return size, len(logical & book.unacked)
    finally:
        storage.close()


def test_sigkill_during_slack_deliveries_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    service, _ = Service.open(data_dir)  # the data directory, its default log
    service.close()
    with (data_dir / "trailseal.toml").open("a") as f:
        f.write(f'\n[[slack.apps]]\nname = "crash"\nsigning_secret_env = "{SECRET_ENV}"\n')
    secret_text = secrets.token_hex(16)
    secret = secret_text.encode()
    server = Server(data_dir, tmp_path / "server.log")
    server.env[SECRET_ENV] = secret_text
    book = Book()
    try:
        for round_ in range(KILLS):
            server.start()
            resent = redeliver(server, secret, book)
            before = len(book.acked)
            threads = load_until_error(server, secret, book, f"R{round_}")
            time.sleep(LOAD_SECONDS)
            assert all(t.is_alive() for t in threads), f"a client stopped early: {book.failures}"
            status = server.stop(signal.SIGKILL)
            join(threads)
            assert status == -signal.SIGKILL
            assert len(book.acked) > before, f"round {round_}: nothing was acknowledged"
            size, stored = check_store(data_dir / "trailseal.db", book, final=False)
            print(
                f"kill {round_ + 1}: {len(book.acked) - before} acknowledged this round "
                f"({resent} redelivered), {len(book.unacked)} without an answer "
                f"({stored} of them stored), "
                f"tree size {size}, client errors {dict(book.failures)}"
            )
        server.start()
        redelivered = redeliver(server, secret, book)
        assert not book.unacked
        assert server.stop(signal.SIGTERM) == 0, server.log_tail()
        size, _ = check_store(data_dir / "trailseal.db", book, final=True)
        retried = sum(1 for c in book.retries.values() if c)
        print(
            f"final: {len(book.acked)} events acknowledged ({redelivered} redelivered "
            f"after the last kill, {retried} retried), tree size {size}"
        )
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    # Every CLI command reads trailseal.toml, so `verify` too needs the Slack secret.
    verified = subprocess.run(
        [*TRAILSEAL, "--data-dir", str(data_dir), "verify"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=server.env,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
