"""trailseal HTTP ingest benchmark: a real `trailseal serve`, N concurrent clients, receipts.

Run from the repository root::

    .venv/bin/python benchmarks/http_ingest.py            # the default run (2-3 minutes)
    .venv/bin/python benchmarks/http_ingest.py --quick    # a smoke run (about 20 seconds)
    .venv/bin/python benchmarks/http_ingest.py --targets sqlite,pg1,pg2   # PostgreSQL too

The server runs as a subprocess (`trailseal --data-dir D serve`: uvicorn, one worker) on
a scratch data directory; this process is the load generator (httpx async clients), so
the server has the CPU it would have in production. For each number of concurrent
clients it measures single-event ingest and batched ingest (events/s, and time to
receipt per request: p50/p99). Then, with the server stopped, the library's own rates
on the same events are measured for reference and printed side by side. See
``benchmarks/README.md``. Results go to stdout as a table and to a JSON file (``--out``).

``--targets`` runs the same load against several deployments, row by row in turn so that
drifting machine load hits them alike: ``sqlite`` (one node, the baseline), ``pg1`` (one
node on PostgreSQL) and ``pg2`` (two nodes on one PostgreSQL schema, the clients split
between them: the writes of the node that does not integrate go through the pending
queue). Keys of a PostgreSQL target start with its name (``pg2.http.single.c8...``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

import bench_pg
from trailseal.core.canonical import canonicalize
from trailseal.core.note import NoteSigner
from trailseal.ledger import Ledger
from trailseal.service.core import Service
from trailseal.storage import KeyEvent, SqliteStorage, Storage
from trailseal.storage.postgres import PostgresStorage
from trailseal.verify import verify_log

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_OUT = HERE / "results" / "http.json"
TRAILSEAL = [sys.executable, "-c", "from trailseal.cli import entry_point; entry_point()"]
LOG = "default"
SEED = 20260101
POOL = 4096
"""Distinct event bodies; each request gives them fresh ids."""

# DESIGN targets on 2 cores.
TARGET_SINGLE_EVENTS_PER_S = 1_000  # "thousands of single events/s"
TARGET_BATCHED_EVENTS_PER_S = 10_000  # "tens of thousands batched"
TARGET_P50_MS = 50.0  # "p50 time to receipt under 50 ms"


# -- results ------------------------------------------------------------------------------


@dataclass
class Results:
    """Every measurement, keyed by a dotted name, with its unit."""

    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, key: str, value: float, unit: str, note: str = "") -> float:
        entry: dict[str, Any] = {"value": value, "unit": unit}
        if note:
            entry["note"] = note
        self.measurements[key] = entry
        return value

    def get(self, key: str) -> float:
        return float(self.measurements[key]["value"])


_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress goes to stderr, with seconds since start, so stdout stays the table."""
    print(f"{time.perf_counter() - _STARTED:7.1f}s {message}", file=sys.stderr, flush=True)


# -- workload -----------------------------------------------------------------------------

_ACTIONS = {
    "google-workspace": ("drive.file.shared", "admin.user.suspended", "login.success"),
    "github": ("pull_request.merged", "branch_protection.updated", "member.removed"),
    "okta": ("user.session.start", "user.mfa.factor.reset", "policy.rule.update"),
    "workflow": ("run.started", "run.approved", "step.executed"),
}
_TARGET_TYPES = ("channel", "user", "file", "repository", "workflow", "group", "message")
_FIRST = ("ana", "bilal", "chen", "dara", "emeka", "fatima", "goran", "hana", "ivan", "jun")
_LAST = ("okafor", "schmidt", "tanaka", "silva", "nguyen", "kowalski", "haddad", "moreau")


def audit_event(rng: random.Random, now: dt.datetime, i: int) -> dict[str, Any]:
    """One realistic event in the ingest schema, without its ``id`` (about 600 bytes)."""
    source = rng.choice(tuple(_ACTIONS))
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    moment = now - dt.timedelta(seconds=rng.randrange(3600), microseconds=i)
    return {
        "source": source,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "class": "security",
        "actor": {
            "type": rng.choice(("user", "user", "bot", "service")),
            "id": f"U{rng.getrandbits(40):010X}",
            "name": f"{first.title()} {last.title()}",
            "email": f"{first}.{last}@example.com",
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        },
        "action": rng.choice(_ACTIONS[source]),
        "targets": [
            {
                "type": rng.choice(_TARGET_TYPES),
                "id": f"{rng.choice('CUFRWGM')}{rng.getrandbits(40):010X}",
                "name": f"{rng.choice(_FIRST)}-{rng.randrange(1000)}",
            }
            for _ in range(rng.randint(1, 2))
        ],
        "context": {"workspace": f"T{rng.getrandbits(36):09X}", "app": "trailseal-bench"},
        "auth": {"method": "oauth", "client_id": f"app-{rng.randrange(100)}"},
        "result": {"status": rng.choice(("success", "success", "failure"))},
        "correlation": {"id": f"{rng.getrandbits(128):032x}"},
    }


def event_pool(n: int) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    now = dt.datetime.now(dt.UTC)
    return [audit_event(rng, now, i) for i in range(n)]


class Events:
    """Events with ids that are never reused in one run (every one is a new append)."""

    def __init__(self, pool: list[dict[str, Any]]) -> None:
        self.pool = pool
        self.counter = itertools.count()

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            i = next(self.counter)
            out.append({**self.pool[i % len(self.pool)], "id": f"bench-{i:09d}"})
        return out


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``trailseal --data-dir D serve --port P``, stderr (its JSON logs) to a file.

    Without ``token`` the server is the first on a new data directory and its bootstrap
    API key is read from its log; a data directory made beforehand passes its key.
    ``serve_args`` go after ``serve`` (``--read-only``)."""

    def __init__(
        self,
        data_dir: Path,
        log_level: str,
        *,
        token: str | None = None,
        stderr_path: Path | None = None,
        serve_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.stderr_path = stderr_path or data_dir.parent / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILSEAL_")}
        self.env["TRAILSEAL_LOG_LEVEL"] = log_level
        for _ in range(3):  # another process may take the free port before the server binds
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            logged = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
            with self.stderr_path.open("ab") as stderr:
                self.proc = subprocess.Popen(
                    [
                        *TRAILSEAL,
                        "--data-dir",
                        str(data_dir),
                        "serve",
                        "--port",
                        str(self.port),
                        *serve_args,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=self.env,
                )
            try:
                if self._wait_healthy(logged):
                    self.token = token or self._token()
                    return
            except BaseException:
                self.stop()
                raise
        raise self._fail("found no free port in 3 tries")

    def _fail(self, why: str) -> SystemExit:
        tail = self.stderr_path.read_text(errors="replace")[-3000:]
        return SystemExit(f"the server {why}:\n{tail}")

    def _wait_healthy(self, logged: int) -> bool:
        """True once /healthz answers; False if the port was taken."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if b"address already in use" in self.stderr_path.read_bytes()[logged:]:
                    return False
                raise self._fail(f"exited with status {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise self._fail("did not answer /healthz within 60 s")

    def _token(self) -> str:
        lines = self.stderr_path.read_text().splitlines()
        for i, line in enumerate(lines[:-1]):
            if "bootstrap operator API key" in line and lines[i + 1].strip().startswith("tsk_"):
                return lines[i + 1].strip()
        raise self._fail("printed no bootstrap token")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


# -- the load generator -------------------------------------------------------------------


@dataclass
class Phase:
    """One measurement: ``clients`` concurrent clients for about ``seconds``."""

    requests: int = 0
    events: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


async def drive(
    urls: Sequence[str],
    token: str,
    events: Events,
    clients: int,
    batch: int | None,
    seconds: float,
) -> Phase:
    """Each client sends one request at a time, its next as soon as it has a receipt,
    until ``seconds`` have passed (at least one request each).

    With several servers (nodes of one store), client ``i`` talks to node ``i % nodes``;
    with fewer clients than nodes, each client takes the nodes in turn, request by
    request, so every node gets its share of the writes either way."""
    path = f"/v1/logs/{LOG}/events" if batch is None else f"/v1/logs/{LOG}/events/batch"
    per_request = 1 if batch is None else batch
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    nodes = len(urls)
    limits = httpx.Limits(
        max_connections=clients * nodes, max_keepalive_connections=clients * nodes
    )
    phase = Phase()
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=600) as client:

        async def send(url: str, n: int) -> float:
            taken = events.take(n)
            body = orjson.dumps(taken[0] if batch is None else taken)
            started = time.perf_counter()
            r = await client.post(url + path, content=body)
            elapsed = time.perf_counter() - started
            if batch is None:
                if r.status_code != 201 or "receipt" not in r.json():
                    raise SystemExit(f"single event: HTTP {r.status_code}: {r.text[:500]}")
            else:
                results = r.json().get("results") if r.status_code == 200 else None
                if not results or len(results) != n or results[-1]["status"] != "appended":
                    raise SystemExit(f"batch: HTTP {r.status_code}: {r.text[:500]}")
            return elapsed

        def node_of(client_no: int, request_no: int) -> str:
            if clients >= nodes:
                return urls[client_no % nodes]
            return urls[(client_no + request_no) % nodes]

        # Untimed: every client opens its connection(s).
        warm = [(c, r) for c in range(clients) for r in range(1 if clients >= nodes else nodes)]
        await asyncio.gather(*(send(node_of(c, r), 1) for c, r in warm))

        async def client_loop(client_no: int, deadline: float) -> None:
            request_no = 0
            while True:
                url = node_of(client_no, request_no)
                phase.latencies_s.append(await send(url, per_request))
                request_no += 1
                phase.requests += 1
                phase.events += per_request
                if time.perf_counter() >= deadline:
                    return

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c, started + seconds) for c in range(clients)))
        phase.seconds = time.perf_counter() - started
    return phase


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50 and p99, and the mean, in milliseconds."""
    ms = sorted(s * 1e3 for s in samples_s)
    n = len(ms)
    return {
        "p50": ms[min(n - 1, round(0.50 * (n - 1)))],
        "p99": ms[min(n - 1, round(0.99 * (n - 1)))],
        "mean": statistics.fmean(ms),
    }


# -- the deployments under load ------------------------------------------------------------

TARGETS = {
    "sqlite": "one node, SQLite",
    "pg1": "one node, PostgreSQL",
    "pg2": "two nodes, one PostgreSQL schema, clients split between them",
}


@dataclass
class Target:
    """One deployment under load: its servers, their API key, its store and its event ids
    (every target gets the same events, in the same order)."""

    name: str
    servers: list[ServerProcess]
    token: str
    events: Events
    sqlite_db: Path | None = None
    pg_schema: str | None = None
    integrator: int | None = None  # pg2: the index of the node that integrates the log

    @property
    def prefix(self) -> str:
        return "" if self.name == "sqlite" else f"{self.name}."

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]


def init_nodes(parent: Path, url: str, count: int) -> tuple[list[Path], str]:
    """``trailseal init --storage URL`` one data directory, bootstrap its operator key,
    then copy it per node (the same keys and configuration on every node)."""
    first = parent / "node0"
    done = subprocess.run(
        [*TRAILSEAL, "--data-dir", str(first), "init", "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"trailseal init --storage failed: {done.stderr[-2000:]}")
    service, token = Service.open(first)
    service.close()
    if token is None:
        raise SystemExit(f"{first}: no bootstrap API key was made")
    dirs = [first]
    for i in range(1, count):
        dirs.append(parent / f"node{i}")
        shutil.copytree(first, dirs[-1])
    for d in dirs:  # each node keeps a search index of its own
        (d / "search.db").unlink(missing_ok=True)
    return dirs, token


def wait_for_integrator(server: ServerProcess, timeout_s: float = 30) -> None:
    """Until ``server``'s /readyz says it integrates the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.url}/readyz", timeout=5).json()
        if LOG in body.get("cluster", {}).get("integrating", []):
            return
        time.sleep(0.05)
    raise SystemExit(f"{server.url} did not become the integrator of {LOG!r} in {timeout_s:g} s")


def start_target(
    name: str,
    workdir: Path,
    log_level: str,
    pool: list[dict[str, Any]],
    pg: bench_pg.Scratch | None,
) -> Target:
    """Start the servers of one deployment on a new store (PostgreSQL ones in a schema
    of ``pg``, the run's scratch schemas)."""
    parent = workdir / name
    parent.mkdir()
    if name == "sqlite":
        server = ServerProcess(parent / "data", log_level)
        return Target(
            name, [server], server.token, Events(pool), sqlite_db=parent / "data" / "trailseal.db"
        )
    assert pg is not None, "PostgreSQL targets need the run's scratch schemas"
    schema = pg.schema(name)
    dirs, token = init_nodes(parent, bench_pg.store_url(pg.dsn, schema), 1 if name == "pg1" else 2)
    servers: list[ServerProcess] = []
    target = Target(name, servers, token, Events(pool), pg_schema=schema)
    try:
        for d in dirs:
            servers.append(
                ServerProcess(d, log_level, token=token, stderr_path=parent / f"{d.name}.log")
            )
            if len(servers) == 1:
                # The first node takes the integrator lock before the second starts, so
                # node0 integrates and node1 queues: known roles for the table.
                wait_for_integrator(servers[0])
                target.integrator = 0
    except BaseException:
        stop_target(target)
        raise
    return target


def stop_target(target: Target) -> list[int]:
    """SIGTERM every server of the target; their exit statuses."""
    return [s.stop() for s in target.servers]


def run_http(
    res: Results,
    targets: Sequence[Target],
    clients: Sequence[int],
    batch_sizes: Sequence[int],
    seconds: float,
) -> None:
    modes: list[tuple[str, int | None]] = [("single", None)]
    modes += [(f"batch{b}", b) for b in batch_sizes]
    for mode, batch in modes:
        for n in clients:
            # The targets take turns row by row: drifting load hits them alike.
            for t in targets:
                log(f"http {t.name} {mode}: {n} clients for {seconds:g} s")
                phase = asyncio.run(drive(t.urls, t.token, t.events, n, batch, seconds))
                stats = percentiles_ms(phase.latencies_s)
                key = f"{t.prefix}http.{mode}.c{n}"
                res.add(f"{key}.events_per_s", phase.events / phase.seconds, "events/s")
                res.add(f"{key}.p50_ms", stats["p50"], "ms", "time to receipt per request")
                res.add(f"{key}.p99_ms", stats["p99"], "ms")
                res.add(f"{key}.mean_ms", stats["mean"], "ms")
                res.add(f"{key}.requests", phase.requests, "requests", f"in {phase.seconds:.1f} s")


def open_target_store(target: Target, dsn: str) -> Storage:
    if target.sqlite_db is not None:
        return SqliteStorage(target.sqlite_db)
    return PostgresStorage(dsn, schema=str(target.pg_schema), min_size=1, max_size=2, migrate=False)


def check_server_log(res: Results, target: Target, dsn: str) -> None:
    """Every event the target's servers acknowledged is stored, once, and the log verifies;
    on two nodes, how many of them went through the pending queue."""
    sent = next(target.events.counter)  # every id taken so far was acknowledged
    storage = open_target_store(target, dsn)
    try:
        info = storage.get_log(LOG)
        ledger = Ledger(storage, info)
        size = ledger.tree_size()
        if size != sent or storage.entry_count(info.id) != sent:
            raise SystemExit(
                f"{target.name}: the log holds {size} entries; {sent} were acknowledged"
            )
        queued = verify_server_log(res, target, storage, ledger)
        if queued is not None:
            res.add(
                f"{target.prefix}server_log.queued_entries",
                queued,
                "entries",
                "through the pending queue to the other node's integrator",
            )
            res.add(f"{target.prefix}server_log.queued_share", queued / sent, "ratio")
    finally:
        storage.close()


def verify_server_log(res: Results, target: Target, storage: Storage, ledger: Ledger) -> int | None:
    """``verify_log`` the target's log (the run aborts unless it passes) and record its
    size and the time; on several nodes, how many entries went through the pending queue
    (None on one)."""
    size = ledger.tree_size()
    log(f"verifying the {target.name} log ({size:,} entries)")
    started = time.perf_counter()
    report = verify_log(ledger, ledger.verifiers())
    if not report.ok:
        raise SystemExit(f"{target.name}: verify_log: " + report.problems[0].describe())
    res.add(f"{target.prefix}server_log.entries", size, "entries")
    res.add(f"{target.prefix}server_log.verify_seconds", time.perf_counter() - started, "s")
    if not isinstance(storage, PostgresStorage) or len(target.servers) < 2:
        return None
    with storage.connection("counting queued entries") as conn:
        row = conn.execute("SELECT count(*) FROM pending WHERE status IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


# -- the library, for reference -----------------------------------------------------------


def bench_ledger_append(path: Path, events: list[dict[str, Any]], batch: int) -> float:
    """Ledger.append of the events as sent, ``batch`` per commit, on a fresh SqliteStorage."""
    storage = SqliteStorage(path)
    try:
        origin = "bench.example/http-reference"
        info = storage.create_log("bench", origin, "2026-01-01T00:00:00Z")
        signer = NoteSigner.generate(origin)
        storage.add_key_event(
            info.id, KeyEvent(signer.verifier.to_string(), "added", "2026-01-01T00:00:00Z")
        )
        ledger = Ledger(storage, info, [signer])
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            ledger.append(events[i : i + batch])
        return len(events) / (time.perf_counter() - started)
    finally:
        storage.close()


def bench_service_ingest(path: Path, events: list[dict[str, Any]], batch: int) -> float:
    """Service.ingest in this process (validate, redact, seal, append, receipts), no HTTP."""
    service, token = Service.open(path)
    try:
        assert token is not None
        principal = service.registry.authenticate(token)
        assert principal is not None
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            service.ingest(principal, LOG, events[i : i + batch])
        return len(events) / (time.perf_counter() - started)
    finally:
        service.close()


def run_library(res: Results, workdir: Path, events: Events, n: int, n_single: int) -> None:
    sample = events.take(n)
    log(f"library: Ledger.append, {n:,} events in batches of 1000")
    res.add(
        "library.ledger_append.batch1000.events_per_s",
        bench_ledger_append(workdir / "ledger.db", sample, 1000),
        "events/s",
        "Ledger.append on a fresh SqliteStorage",
    )
    log(f"library: Service.ingest, {n:,} events in batches of 1000")
    res.add(
        "library.service_ingest.batch1000.events_per_s",
        bench_service_ingest(workdir / "svc1000", sample, 1000),
        "events/s",
        "Service.ingest in-process, one thread, receipts, no HTTP",
    )
    log(f"library: Service.ingest, {n_single:,} single events")
    res.add(
        "library.service_ingest.single.events_per_s",
        bench_service_ingest(workdir / "svc1", events.take(n_single), 1),
        "events/s",
        "Service.ingest in-process, one thread, one event per call",
    )


# -- machine, table, main -----------------------------------------------------------------


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            from importlib.metadata import version as v  # noqa: PLC0415

            return v(dist)
        except Exception:
            return "missing"

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "sqlite_version": sqlite3.sqlite_version,
        "trailseal": version("trailseal"),
        "httpx": version("httpx"),
        "uvicorn": version("uvicorn"),
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "src_modified": bool(git("status", "--porcelain", "--", "src")),
        "loadavg_at_start": load_average(),
    }


def targets(res: Results, clients: Sequence[int], batch_sizes: Sequence[int]) -> dict[str, Any]:
    """The DESIGN targets against the best measured rates (informational)."""
    m = res.measurements
    single = max(m[f"http.single.c{n}.events_per_s"]["value"] for n in clients)
    batched = max(
        m[f"http.batch{b}.c{n}.events_per_s"]["value"] for b in batch_sizes for n in clients
    )
    p50 = {n: m[f"http.single.c{n}.p50_ms"]["value"] for n in clients}
    return {
        "single_events_per_s": {
            "target": TARGET_SINGLE_EVENTS_PER_S,
            "best": single,
            "met": single >= TARGET_SINGLE_EVENTS_PER_S,
        },
        "batched_events_per_s": {
            "target": TARGET_BATCHED_EVENTS_PER_S,
            "best": batched,
            "met": batched >= TARGET_BATCHED_EVENTS_PER_S,
        },
        "single_p50_ms": {
            "target": TARGET_P50_MS,
            "by_clients": p50,
            "met_up_to_clients": max((n for n in clients if p50[n] < TARGET_P50_MS), default=0),
        },
    }


def print_table(res: Results, info: dict[str, Any]) -> None:
    m = res.measurements
    machine = info["machine"]
    cfg = info["config"]
    print("trailseal HTTP ingest benchmark")
    print(
        f"  {machine['date']}  python {machine['python']}  sqlite {machine['sqlite_version']}  "
        f"{machine['cpu_count']} cpus  uvicorn {machine['uvicorn']} (1 worker)  "
        f"httpx {machine['httpx']}"
    )
    print(
        f"  git {machine['git_commit'][:12]}{' (src modified)' if machine['src_modified'] else ''}"
        f"  load average {machine['loadavg_at_start']} at start, "
        f"{machine['loadavg_at_end']} at end"
    )
    print(
        f"  {cfg['seconds']:g} s per row; events of {info['workload']['canonical_bytes_mean']:.0f}"
        f" bytes (canonical, as sent); server log level {cfg['log_level']}"
    )
    stores = info["stores"]
    for name, store in stores.items():
        print(f"  {name:<7}{store['description']}")
    if "postgres" in info:
        pg = info["postgres"]
        print(
            f"  postgresql {pg['server_version']} at {pg['dsn']}: fsync {pg['fsync']}, "
            f"synchronous_commit {pg['synchronous_commit']}, shared_buffers {pg['shared_buffers']}"
        )
    print()
    print(
        f"{'mode':<12}{'clients':>8}  {'target':<8}{'requests':>10}{'events/s':>12}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'vs sqlite':>11}"
    )
    modes = ["single"] + [f"batch{b}" for b in cfg["batch_sizes"]]
    for mode in modes:
        for n in cfg["clients"]:
            base = m[f"http.{mode}.c{n}.events_per_s"]["value"]
            for name in stores:
                k = f"{'' if name == 'sqlite' else name + '.'}http.{mode}.c{n}"
                rate = m[k + ".events_per_s"]["value"]
                print(
                    f"{mode:<12}{n:>8}  {name:<8}{m[k + '.requests']['value']:>10,.0f}"
                    f"{rate:>12,.0f}{m[k + '.p50_ms']['value']:>10,.1f}"
                    f"{m[k + '.p99_ms']['value']:>10,.1f}{m[k + '.mean_ms']['value']:>10,.1f}"
                    f"{'' if name == 'sqlite' else f'{rate / base:.2f}x':>11}"
                )
    print()
    print("for reference, in one process without HTTP (server stopped):")
    for key, label in (
        ("library.ledger_append.batch1000", "Ledger.append, batches of 1000"),
        ("library.service_ingest.batch1000", "Service.ingest, batches of 1000"),
        ("library.service_ingest.single", "Service.ingest, one event a call"),
    ):
        print(f"  {label:<36}{m[key + '.events_per_s']['value']:>12,.0f} events/s")
    t = info["targets"]
    print()
    print("DESIGN targets (2 cores):")
    print(
        f"  single events  >= {t['single_events_per_s']['target']:,}/s: best "
        f"{t['single_events_per_s']['best']:,.0f}/s"
        f"  {'met' if t['single_events_per_s']['met'] else 'MISSED'}"
    )
    print(
        f"  batched        >= {t['batched_events_per_s']['target']:,}/s: best "
        f"{t['batched_events_per_s']['best']:,.0f}/s"
        f"  {'met' if t['batched_events_per_s']['met'] else 'MISSED'}"
    )
    p50 = ", ".join(f"{n}: {v:.1f}" for n, v in t["single_p50_ms"]["by_clients"].items())
    print(f"  single-event p50 < {t['single_p50_ms']['target']:g} ms, by clients: {p50}")
    for name in stores:
        prefix = "" if name == "sqlite" else name + "."
        queued = m.get(prefix + "server_log.queued_entries")
        print(
            f"{name} server log: {m[prefix + 'server_log.entries']['value']:,.0f} entries, "
            f"verified in {m[prefix + 'server_log.verify_seconds']['value']:.1f} s"
            + (
                f"; {queued['value']:,.0f} "
                f"({m[prefix + 'server_log.queued_share']['value']:.0%}) came through the "
                "pending queue to the integrator on the other node"
                if queued
                else ""
            )
        )
    print(f"wall time: {info['wall_seconds']:.1f} s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="smoke run: clients 1,8, 1 s a row, fewer events"
    )
    p.add_argument(
        "--clients", default=None, help="comma-separated client counts (default 1,8,32,64)"
    )
    p.add_argument(
        "--batch-sizes", default="100,1000", help="comma-separated batch sizes (default 100,1000)"
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds of load per row; requests in flight finish (default 5; 1 with --quick)",
    )
    p.add_argument(
        "--library-events",
        type=int,
        default=None,
        help="events for the library reference rates (default 20,000; 2,000 with --quick)",
    )
    p.add_argument(
        "--log-level", default="info", help="the server's TRAILSEAL_LOG_LEVEL (default info)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="parent of the scratch data directories (default benchmarks/.cache)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON results file (default benchmarks/results/http.json)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch data directories")
    p.add_argument(
        "--targets",
        default="sqlite",
        help="deployments to load, comma-separated: sqlite (always, the baseline), pg1 "
        "(one node on PostgreSQL), pg2 (two nodes on one PostgreSQL schema) (default sqlite)",
    )
    p.add_argument(
        "--postgres-dsn",
        default=bench_pg.DEFAULT_DSN,
        help="the PostgreSQL database for pg1/pg2; each target gets a schema of this run, "
        "dropped at the end (default $TRAILSEAL_BENCH_POSTGRES_DSN or "
        "postgresql://postgres@127.0.0.1:5432/test)",
    )
    args = p.parse_args(argv)
    args.targets = list(dict.fromkeys(t.strip() for t in str(args.targets).split(",") if t.strip()))
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown or "sqlite" not in args.targets:
        p.error(
            "--targets takes sqlite plus any of pg1,pg2 (sqlite is the baseline every run "
            f"measures); got {','.join(args.targets) or 'nothing'}"
        )
    if args.clients is None:
        args.clients = "1,8" if args.quick else "1,8,32,64"
    args.clients = [int(s) for s in str(args.clients).split(",") if s.strip()]
    args.batch_sizes = [int(s) for s in str(args.batch_sizes).split(",") if s.strip()]
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 5.0
    if args.library_events is None:
        args.library_events = 2_000 if args.quick else 20_000
    if not args.clients or min(args.clients) < 1 or any(b < 2 for b in args.batch_sizes):
        p.error("client counts must be at least 1 and batch sizes at least 2")
    return args


def scratch(args: argparse.Namespace, prefix: str) -> tuple[bench_pg.Scratch | None, Path]:
    """This run's PostgreSQL scratch database (when a pg target is asked for) and work
    directory, on the repository's filesystem (not a tmpfs: every commit pays a real
    fsync)."""
    pg = None
    if any(t.startswith("pg") for t in args.targets):
        pg = bench_pg.Scratch.open(args.postgres_dsn, f"--targets {','.join(args.targets)}")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    return pg, Path(tempfile.mkdtemp(prefix=prefix, dir=args.cache_dir))


def drop_scratch(args: argparse.Namespace, pg: bench_pg.Scratch | None, workdir: Path) -> None:
    """Remove what :func:`scratch` made (the work directory stays with ``--keep``)."""
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if pg is not None:
        pg.drop_all()


def finish(
    res: Results,
    info: dict[str, Any],
    out: Path,
    wall_start: float,
    print_table: Callable[[Results, dict[str, Any]], None],
) -> None:
    """Print the run's table and write its JSON (``schema`` 1) to ``out``."""
    info["wall_seconds"] = time.perf_counter() - wall_start
    info["machine"]["loadavg_at_end"] = load_average()
    print_table(res, info)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema": 1, **info, "measurements": res.measurements}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    pg, workdir = scratch(args, "http-")
    res = Results()
    pool = event_pool(POOL)
    sizes = [len(canonicalize({**e, "id": "bench-000000000"})) for e in pool]
    info: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "clients": args.clients,
            "batch_sizes": args.batch_sizes,
            "seconds": args.seconds,
            "library_events": args.library_events,
            "log_level": args.log_level,
            "targets": args.targets,
            "server": "trailseal serve (uvicorn, 1 worker), a subprocess",
            "load_generator": "httpx.AsyncClient, one asyncio loop, this process",
        },
        "workload": {
            "distinct_bodies": POOL,
            "canonical_bytes_mean": statistics.fmean(sizes),
            "canonical_bytes_min": min(sizes),
            "canonical_bytes_max": max(sizes),
        },
    }
    if pg is not None:
        info["postgres"] = {**bench_pg.server_settings(pg.dsn), "run_schema_prefix": pg.prefix}
    running: list[Target] = []
    try:
        try:
            for name in args.targets:
                log(f"starting {name}: {TARGETS[name]}")
                running.append(start_target(name, workdir, args.log_level, pool, pg))
            info["stores"] = {
                t.name: {
                    "description": TARGETS[t.name],
                    "nodes": len(t.servers),
                    "schema": t.pg_schema,
                    "integrator_node": t.integrator,
                }
                for t in running
            }
            run_http(res, running, args.clients, args.batch_sizes, args.seconds)
        finally:
            statuses = {t.name: stop_target(t) for t in running}
        for name, codes in statuses.items():
            if any(codes):
                log(f"warning: {name}: a server exited with status {codes} after SIGTERM")
        info["server_exit_status"] = max(
            (abs(c) for cs in statuses.values() for c in cs), default=0
        )
        info["server_exit_statuses"] = statuses
        for t in running:
            check_server_log(res, t, args.postgres_dsn)
        events = running[0].events  # sqlite's: the library rates take fresh ids after it
        run_library(res, workdir, events, args.library_events, max(200, args.library_events // 10))
    finally:
        drop_scratch(args, pg, workdir)
    info["targets"] = targets(res, args.clients, args.batch_sizes)
    finish(res, info, args.out, wall_start, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
