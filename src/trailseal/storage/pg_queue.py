"""The pending queue: entries a node accepted for a log that another node integrates.

PostgreSQL only. Any node may accept a write, but one node per log (the integrator,
elected by :mod:`trailseal.cluster`) sequences and signs. A node that is not the
integrator stores the entries here (durably, in one transaction) and waits; the
integrator claims them in submission order, appends them through its ledger, then marks
each row with the index, leaf hash, tree size and status the append gave. The waiting
node reads those marks back and answers its client.

Nothing here is acknowledged to a client before the integrator's append has committed:
a queued row is only a promise. If the integrator dies after its append but before it
marks the rows, the next one appends them again; the log's idempotency key
(source, event id), which every queued entry must have, turns that into "duplicate"
with the original index, so nothing is written twice.

Notifications (``LISTEN trailseal``) wake the integrator when rows arrive and the
waiting nodes when rows are marked; they are a latency optimisation only, every wait
also polls.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from trailseal.storage.postgres import PostgresStorage

CHANNEL = "trailseal"
"""The NOTIFY channel; payloads read ``<schema>:<kind>:<log id>``."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued entry, as the integrator claims it."""

    id: int
    data: bytes
    source: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Where the integrator put a queued entry."""

    index: int
    leaf_hash: bytes
    tree_size: int
    status: str


class PendingQueue:
    """The queue of one store (one PostgreSQL schema)."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage

    def _notify(self, conn: psycopg.Connection[Any], kind: str, log_id: int) -> None:
        conn.execute(
            "SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.storage.schema}:{kind}:{log_id}")
        )

    def submit(
        self, log_id: int, node: str, entries: Sequence[tuple[bytes, str, str]]
    ) -> list[int]:
        """Queue ``(data, source, event_id)`` entries in one transaction; their row ids."""
        with self.storage.connection("queueing entries") as conn, conn.transaction():
            ids = []
            with conn.cursor() as cur:
                # One round trip (pipelined); one result set per row, in row order.
                cur.executemany(
                    "INSERT INTO pending (log_id, data, source, event_id, node)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    [(log_id, data, source, event_id, node) for data, source, event_id in entries],
                    returning=True,
                )
                while True:
                    row = cur.fetchone()
                    assert row is not None
                    ids.append(int(row[0]))
                    if not cur.nextset():
                        break
            self._notify(conn, "pending", log_id)
        return ids

    def claim(self, log_id: int, limit: int) -> list[Pending]:
        """The oldest unmarked rows of a log (only the integrator calls this)."""
        with self.storage.connection("reading the queue") as conn:
            rows = conn.execute(
                "SELECT id, data, source, event_id FROM pending"
                " WHERE log_id = %s AND status IS NULL ORDER BY id LIMIT %s",
                (log_id, limit),
            ).fetchall()
        return [Pending(int(r[0]), bytes(r[1]), r[2], r[3]) for r in rows]

    def mark(self, log_id: int, marks: Sequence[tuple[int, Mark]]) -> None:
        """Record where each claimed row went, and wake the nodes waiting for them."""
        with self.storage.connection("marking queued entries") as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(
                    # The first mark stands: a row integrated twice (an integrator died
                    # between its append and its mark) keeps the answer of the first.
                    "UPDATE pending SET idx = %s, leaf_hash = %s, tree_size = %s, status = %s,"
                    " done_at = now() WHERE id = %s AND log_id = %s AND status IS NULL",
                    [
                        (m.index, m.leaf_hash, m.tree_size, m.status, pid, log_id)
                        for pid, m in marks
                    ],
                )
            self._notify(conn, "done", log_id)

    def marks(self, ids: Sequence[int]) -> dict[int, Mark]:
        """The marks of those of ``ids`` the integrator has handled."""
        with self.storage.connection("reading queue marks") as conn:
            rows = conn.execute(
                "SELECT id, idx, leaf_hash, tree_size, status FROM pending"
                " WHERE id = ANY(%s) AND status IS NOT NULL",
                (list(ids),),
            ).fetchall()
        return {int(r[0]): Mark(int(r[1]), bytes(r[2]), int(r[3]), r[4]) for r in rows}

    def purge(self, older_than_s: float) -> int:
        """Delete marked rows older than ``older_than_s`` seconds; how many went."""
        with self.storage.connection("purging the queue") as conn:
            cur = conn.execute(
                "DELETE FROM pending WHERE status IS NOT NULL"
                " AND done_at < now() - make_interval(secs => %s)",
                (older_than_s,),
            )
            return cur.rowcount

    def depths(self) -> dict[int, int]:
        """Rows still waiting for an integrator, by log id (logs with none left out)."""
        with self.storage.connection("reading the queue") as conn:
            rows = conn.execute(
                "SELECT log_id, count(*) FROM pending WHERE status IS NULL GROUP BY log_id"
            ).fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    def depth(self, log_id: int) -> int:
        """Rows of a log still waiting for the integrator."""
        with self.storage.connection("reading the queue") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pending WHERE log_id = %s AND status IS NULL", (log_id,)
            ).fetchone()
        return int(row[0]) if row else 0


class Listener:
    """One connection that LISTENs on :data:`CHANNEL` and wakes whoever waits.

    ``wait(kind, log_id, seq, timeout)`` returns when a notification of that kind for
    that log arrives after ``seq`` (from :meth:`seq`), or at the timeout. Missing a
    notification is harmless: callers poll after each wait.
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._cond = threading.Condition()
        self._seqs: dict[tuple[str, int], int] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trailseal-listen", daemon=True)
        self._thread.start()

    def seq(self, kind: str, log_id: int) -> int:
        """The count of notifications seen for ``kind`` and ``log_id`` so far."""
        with self._cond:
            return self._seqs.get((kind, log_id), 0)

    def wait(self, kind: str, log_id: int, seq: int, timeout: float) -> None:
        """Sleep until a newer notification than ``seq`` or ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._seqs.get((kind, log_id), 0) > seq or self._stopping.is_set(),
                timeout=timeout,
            )

    def _run(self) -> None:
        prefix = f"{self._storage.schema}:"
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._storage.dsn, autocommit=True, connect_timeout=10
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if not note.payload.startswith(prefix):
                                continue
                            _, kind, log = note.payload.split(":", 2)
                            with self._cond:
                                key = (kind, int(log))
                                self._seqs[key] = self._seqs.get(key, 0) + 1
                                self._cond.notify_all()
            except (psycopg.Error, ValueError):
                # The database went away: waiters keep polling; reconnect shortly.
                self._stopping.wait(1.0)

    def close(self) -> None:
        """Stop listening."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)


__all__ = ["CHANNEL", "Listener", "Mark", "Pending", "PendingQueue"]
