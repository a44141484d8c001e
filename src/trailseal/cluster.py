"""Many nodes on one PostgreSQL database: one integrator per log, elected by an advisory lock.

Every ``trailseal serve`` process on a PostgreSQL store is a :class:`Node`. Any node
accepts writes; for each log, exactly one node at a time is its *integrator*: the one
holding the log's session-level advisory lock (kind ``INTEGRATOR_LOCK``, keyed by schema
and log id: :func:`~trailseal.storage.postgres.lock_key`) on its election connection. The
integrator appends through its own ledger (group commit, one signed checkpoint per
batch); every other node queues its entries in the pending queue
(:mod:`trailseal.storage.pg_queue`) and waits for the integrator to mark them.

Failover: PostgreSQL releases a session lock the moment the session ends, and a killed
process's session ends when the kernel closes its socket. Every node that can integrate
(it holds the log's signing key and is not read-only) tries the lock every
``election_interval_s``, so another node takes over within about that long, and first
integrates whatever the dead one left queued.

Safety does not rest on the election: every append still runs under the per-log
transaction lock of :meth:`PostgresStorage.write` and rereads the tree's edge when
another writer moved it, so even two nodes that both believed they were integrator
(a partitioned election connection) would build one consistent tree. The election is
what keeps signing in one place and batches large.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from trailseal.core.merkle import leaf_hash
from trailseal.errors import EntryError, Error, OverloadedError
from trailseal.ledger import AppendResult, Ledger, PreparedEntry
from trailseal.storage.base import LogInfo
from trailseal.storage.pg_queue import Listener, Mark, PendingQueue
from trailseal.storage.postgres import PostgresStorage, lock_key

INTEGRATOR_LOCK = 0x7453_0003
"""Kind of ``pg_try_advisory_lock(hashtext(lock_key(INTEGRATOR_LOCK, schema)), log_id)``, held
by a log's integrator."""
TASK_LOCK = 0x7453_0004
"""Kind of ``pg_try_advisory_lock(hashtext(lock_key(TASK_LOCK, schema)), hashtext(name))``,
held by the one node that runs a singleton task (the Slack Audit Logs poller)."""
CLAIM_LOCK = 0x7453_0005
"""Kind of ``pg_try_advisory_lock(hashtext(lock_key(CLAIM_LOCK, schema)), hashtext(name))``,
held by the node doing one piece of work for as long as it takes (:meth:`Node.claim`)."""

LOGGER = logging.getLogger("trailseal.cluster")

SESSION_OPTIONS: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 10,
    # A host that crashes or drops off the network never closes its socket: without
    # these, PostgreSQL would keep its session, and the integrator lock with it, until TCP
    # gives up (hours). The client side notices a dead server as fast.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""How the election connection is opened (libpq keywords)."""
IDLE_SESSION_TIMEOUT = "10s"
"""The election connection queries twice a second; silent this long, the server ends its
session and so releases its locks (PostgreSQL 14+; ignored where unknown)."""


def node_name() -> str:
    """``host:pid``, as recorded on queued rows and shown by /readyz."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Node:
    """This process's part in a PostgreSQL deployment.

    ``ledger_for(name)`` returns the (shared, cached) ledger of a log; a ledger without
    signers means this node cannot integrate that log. ``integrate=False`` makes a
    read-only node: it never takes part in elections.
    """

    def __init__(
        self,
        storage: PostgresStorage,
        ledger_for: Callable[[str], Ledger],
        *,
        name: str | None = None,
        integrate: bool = True,
        election_interval_s: float = 0.5,
        wait_timeout_s: float = 30.0,
        batch_entries: int = 4000,
        purge_after_s: float = 3600.0,
        refresh_signers: Callable[[Ledger], None] | None = None,
        key_check_interval_s: float = 5.0,
    ) -> None:
        self.storage = storage
        self.name = name or node_name()
        self.integrate = integrate
        self.election_interval_s = election_interval_s
        self.wait_timeout_s = wait_timeout_s
        self.batch_entries = batch_entries
        self.purge_after_s = purge_after_s
        self.queue = PendingQueue(storage)
        self._ledger_for = ledger_for
        self._listener = Listener(storage)
        self._held: dict[int, str] = {}  # log id -> log name, while this node integrates it
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()
        self._workers: dict[int, threading.Thread] = {}
        self._elector: threading.Thread | None = None
        self._skipped: set[str] = set()
        self._tasks: dict[str, bool] = {}  # singleton task -> whether this node runs it
        self._refresh_signers = refresh_signers
        """Reloads a ledger's signers from the log's key history (rotated or retired on
        another node); checked every ``key_check_interval_s``."""
        self.key_check_interval_s = key_check_interval_s

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start taking part in elections (no-op for a read-only node)."""
        if self.integrate and self._elector is None:
            self._elector = threading.Thread(
                target=self._elect, name="trailseal-elect", daemon=True
            )
            self._elector.start()

    def close(self) -> None:
        """Stop integrating (the locks go with the election connection) and listening."""
        self._stopping.set()
        if self._elector is not None:
            self._elector.join(timeout=10)
        for worker in list(self._workers.values()):
            worker.join(timeout=10)
        self._listener.close()

    def integrating(self) -> list[str]:
        """Names of the logs this node integrates now."""
        with self._held_lock:
            return sorted(self._held.values())

    def leads(self, task: str) -> bool:
        """Whether this node runs the singleton ``task``; the first call enters it into
        the elections (a read-only node never runs one)."""
        with self._held_lock:
            return self._tasks.setdefault(task, False)

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[bool]:
        """Hold the lock ``name`` across nodes for the block; yields whether this node got
        it (False: another node is doing that work now).

        The lock lives on a connection of its own, opened with keepalives like the
        election's, so a node that dies mid-work (even its host) lets it go within
        seconds and another node can take the work over. No idle timeout here: the
        connection is silent for as long as the work takes.
        """
        conn = psycopg.connect(self.storage.dsn, **SESSION_OPTIONS)
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))",
                (lock_key(CLAIM_LOCK, self.storage.schema), name),
            ).fetchone()
            yield bool(row and row[0])
        finally:
            conn.close()  # ends the session, and the lock with it

    def is_integrator(self, log_id: int) -> bool:
        """Whether this node holds the integrator lock of ``log_id``."""
        with self._held_lock:
            return log_id in self._held

    # -- writes -------------------------------------------------------------------------

    def append(self, ledger: Ledger, entries: Sequence[PreparedEntry]) -> list[AppendResult]:
        """Append through the integrator: directly when it is this node, else queued.

        Returns once every entry is committed under a signed checkpoint; every result
        names the same (largest) checkpoint size, which covers them all.
        """
        if not entries:
            return []
        log_id = ledger.log.id
        if self.is_integrator(log_id):
            return ledger.append_prepared(entries)
        rows = []
        for e in entries:
            if e.key is None:
                raise EntryError("an entry written through another node's integrator needs an id")
            rows.append((e.data, e.key[0], e.key[1]))
        ids = self.queue.submit(log_id, self.name, rows)
        deadline = time.monotonic() + self.wait_timeout_s
        marks: dict[int, Mark] = {}
        while True:
            if self._stopping.is_set():
                raise OverloadedError(
                    "this node is shutting down; the entries stay queued and will be "
                    "integrated: retry with the same event ids",
                    retry_after_s=1.0,
                )
            seq = self._listener.seq("done", log_id)
            marks.update(self.queue.marks([i for i in ids if i not in marks]))
            if len(marks) == len(ids):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise OverloadedError(
                    f"no integrator of log {ledger.log.name!r} has committed the entries within "
                    f"{self.wait_timeout_s:g} s; they stay queued and will be integrated when "
                    "one runs. Retry with the same event ids (retries are deduplicated).",
                    retry_after_s=5.0,
                )
            self._listener.wait("done", log_id, seq, min(0.2, left))
        size = max(m.tree_size for m in marks.values())
        return [
            AppendResult(marks[i].index, marks[i].leaf_hash, size, marks[i].status)  # type: ignore[arg-type]
            for i in ids
        ]

    # -- election and integration -------------------------------------------------------

    def _can_integrate(self, log: LogInfo) -> bool:
        try:
            ledger = self._ledger_for(log.name)
        except Error as e:
            reason = str(e)
        else:
            if ledger.signers:
                return True
            reason = "no signing key of the log on this node"
        if log.name not in self._skipped:
            self._skipped.add(log.name)
            LOGGER.info("not integrating", extra={"log": log.name, "reason": reason})
        return False

    def _elect(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        last_purge = last_keys = 0.0
        while not self._stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.storage.dsn, **SESSION_OPTIONS)
                    _limit_idle(conn)
                conn.execute("SELECT 1")  # a dead session has lost every lock it held
                logs = self.storage.list_logs()
                if time.monotonic() - last_keys > self.key_check_interval_s:
                    last_keys = time.monotonic()
                    self._check_keys(conn, logs)
                for log in logs:
                    if self.is_integrator(log.id) or not self._can_integrate(log):
                        continue
                    # Keyed by schema too: advisory locks are database-wide (lock_key).
                    row = conn.execute(
                        "SELECT pg_try_advisory_lock(hashtext(%s), %s::integer)",
                        (lock_key(INTEGRATOR_LOCK, self.storage.schema), log.id),
                    ).fetchone()
                    if row and row[0]:
                        self._take(log)
                with self._held_lock:
                    tasks = [t for t, held in self._tasks.items() if not held]
                for task in tasks:
                    row = conn.execute(
                        "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))",
                        (lock_key(TASK_LOCK, self.storage.schema), task),
                    ).fetchone()
                    if row and row[0]:
                        with self._held_lock:
                            self._tasks[task] = True
                        LOGGER.info("running task", extra={"task": task, "node": self.name})
                if self._held and time.monotonic() - last_purge > 60:
                    last_purge = time.monotonic()
                    self.queue.purge(self.purge_after_s)
            except Exception as e:
                # Whatever went wrong (the connection, a key file that cannot be read),
                # give up every lock with the session and start over: a node must never
                # hold a lock it no longer acts on.
                LOGGER.warning(
                    "election failed; starting over",
                    extra={"error": type(e).__name__, "detail": str(e)[:500]},
                )
                self._drop_all()
                if conn is not None:
                    conn.close()
                    conn = None
            self._stopping.wait(self.election_interval_s)
        self._drop_all()
        if conn is not None:
            conn.close()  # releases the locks at once, so another node takes over

    def _check_keys(self, conn: psycopg.Connection[Any], logs: list[LogInfo]) -> None:
        """Follow key rotations and retirements made elsewhere; give up a log this node
        can no longer sign for, so that a node that can takes over."""
        if self._refresh_signers is None:
            return
        for log in logs:
            try:
                ledger = self._ledger_for(log.name)
            except Error:
                continue
            self._refresh_signers(ledger)
            if self.is_integrator(log.id) and not ledger.signers:
                conn.execute(
                    "SELECT pg_advisory_unlock(hashtext(%s), %s::integer)",
                    (lock_key(INTEGRATOR_LOCK, self.storage.schema), log.id),
                )
                with self._held_lock:
                    self._held.pop(log.id, None)
                LOGGER.warning(
                    "stopped integrating: no active signing key of the log on this node",
                    extra={"log": log.name, "node": self.name},
                )

    def _take(self, log: LogInfo) -> None:
        with self._held_lock:
            self._held[log.id] = log.name
        LOGGER.info("integrating", extra={"log": log.name, "node": self.name})
        old = self._workers.get(log.id)
        if old is not None and old.is_alive():
            return  # re-elected before the old worker noticed it had lost: it goes on
        worker = threading.Thread(
            target=self._work, args=(log,), name=f"trailseal-integrate-{log.id}", daemon=True
        )
        self._workers[log.id] = worker
        worker.start()

    def _drop_all(self) -> None:
        with self._held_lock:
            dropped = list(self._held.values())
            self._held.clear()
            self._tasks = dict.fromkeys(self._tasks, False)
        for name in dropped:
            LOGGER.warning("stopped integrating", extra={"log": name, "node": self.name})

    def _work(self, log: LogInfo) -> None:
        """Integrate the log's queued entries while this node holds its lock."""
        ledger = self._ledger_for(log.name)
        while self.is_integrator(log.id) and not self._stopping.is_set():
            seq = self._listener.seq("pending", log.id)
            try:
                rows = self.queue.claim(log.id, self.batch_entries)
                if not rows:
                    self._listener.wait("pending", log.id, seq, 0.25)
                    continue
                prepared = [
                    PreparedEntry(r.data, leaf_hash(r.data), (r.source, r.event_id)) for r in rows
                ]
                results = ledger.append_prepared(prepared)
                self.queue.mark(
                    log.id,
                    [
                        (r.id, Mark(res.index, res.leaf_hash, res.tree_size, res.status))
                        for r, res in zip(rows, results, strict=True)
                    ],
                )
            except Exception as e:
                # Nothing was acknowledged: the rows stay queued and are tried again. Any
                # exception: a worker that died would keep its lock and integrate nothing.
                LOGGER.warning(
                    "integration failed",
                    extra={"log": log.name, "error": type(e).__name__, "detail": str(e)[:500]},
                )
                self._stopping.wait(0.5)

    def status(self) -> dict[str, object]:
        """What /readyz shows about this node, and the entries each log's integrator has
        not taken yet (growing with nobody integrating: no node holds the log's key)."""
        out: dict[str, object] = {
            "node": self.name,
            "read_only": not self.integrate,
            "integrating": self.integrating(),
        }
        try:
            names = {log.id: log.name for log in self.storage.list_logs()}
            out["queued"] = {names.get(i, str(i)): n for i, n in self.queue.depths().items()}
        except Error:
            out["queued"] = None  # the database is unreachable; /readyz says so too
        return out


def _limit_idle(conn: psycopg.Connection[Any]) -> None:
    # PostgreSQL before 14 does not know the setting: keepalives alone, then.
    with contextlib.suppress(psycopg.errors.UndefinedObject):
        conn.execute(f"SET idle_session_timeout = '{IDLE_SESSION_TIMEOUT}'")


__all__ = ["CLAIM_LOCK", "INTEGRATOR_LOCK", "TASK_LOCK", "Node", "node_name"]
