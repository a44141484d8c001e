"""trailseal benchmark suite: durable append, full verify, proof latency, stored bytes.

Run from the repository root::

    .venv/bin/python benchmarks/run.py            # the default run (builds/reuses 1M log)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run of a few seconds
    .venv/bin/python benchmarks/run.py --storage sqlite,postgres   # PostgreSQL beside SQLite

Everything is measured in one process, one after the other, so the ratios printed side
by side come from the same machine state. See ``benchmarks/README.md`` for what each
number means and how it is taken. Results go to stdout as a plain-text table and to a
JSON file (``--out``). With ``--storage sqlite,postgres`` the append, verify, storage and
proof measurements are also taken on PostgreSQL (in schemas of this run, dropped at the
end), interleaved with the SQLite ones; their keys are the SQLite keys with ``postgres.``
in front.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_pg
from trailseal.core.merkle import verify_consistency, verify_inclusion
from trailseal.core.note import NoteSigner
from trailseal.core.tiles import TILE_WIDTH
from trailseal.ledger import Ledger, PreparedEntry, prepare
from trailseal.storage import KeyEvent, SqliteStorage, Storage
from trailseal.storage.postgres import PostgresStorage
from trailseal.verify import verify_log

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_OUT = HERE / "results" / "latest.json"

LOG_NAME = "bench"
ORIGIN = "bench.example/log"
CREATED = "2026-01-01T00:00:00Z"
SEED = 20260101
HASH_SIZE = 32

# Bump when the proof-log contents change, so stale cached databases are not reused.
PROOF_LOG_FORMAT = 1
PROOF_BUILD_BATCH = 50_000

# The pragmas SqliteStorage sets on every connection (src/trailseal/storage/sqlite.py).
FLOOR_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA cache_size = -65536",
)


@dataclass(frozen=True)
class PgSchema:
    """A PostgreSQL schema holding a benchmark store (the counterpart of a SQLite file)."""

    dsn: str
    schema: str


Place = Path | PgSchema
"""Where a benchmark store lives: a SQLite database file or a PostgreSQL schema."""

ENGINES = ("sqlite", "postgres")
PG = "postgres."
"""Prefix of every PostgreSQL measurement: ``postgres.`` + the key of its SQLite twin."""


# -- results ------------------------------------------------------------------------------


@dataclass
class Results:
    """Every measurement, keyed by a dotted name, with its unit."""

    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

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


# -- workloads ----------------------------------------------------------------------------

_SOURCES = {
    "slack": (
        "message.deleted",
        "message.edited",
        "channel.archived",
        "channel.created",
        "user.invited",
        "file.shared",
        "app.installed",
        "workflow.published",
    ),
    "github": (
        "repo.visibility_changed",
        "pull_request.merged",
        "branch_protection.updated",
        "secret.rotated",
        "member.removed",
    ),
    "okta": (
        "user.session.start",
        "user.mfa.factor.reset",
        "group.user_membership.add",
        "policy.rule.update",
    ),
    "workflow": ("run.started", "run.approved", "run.failed", "step.executed", "schedule.changed"),
}
_SOURCE_NAMES = tuple(_SOURCES)
_TARGET_TYPES = ("channel", "user", "file", "repository", "workflow", "group", "message", "app")
_TEAMS = ("ops", "sales", "infra", "payroll", "incident", "design")
_FIRST = ("ana", "bilal", "chen", "dara", "emeka", "fatima", "goran", "hana", "ivan", "jun")
_LAST = ("okafor", "schmidt", "tanaka", "silva", "nguyen", "kowalski", "haddad", "moreau")
_AGENTS = (
    "Slack/4.41.105 (Macintosh; Intel Mac OS X 14.5)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0",
    "okta-workflows/2024.06.1",
    "GitHub-Hookshot/8f2a1c3",
    "trailseal-collector/0.1 python-requests/2.32",
)
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def audit_event(rng: random.Random, i: int) -> dict[str, Any]:
    """One realistic audit event (about 450-610 bytes as canonical JSON)."""
    source = rng.choice(_SOURCE_NAMES)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    moment = _EPOCH + dt.timedelta(microseconds=i * 137_031 + rng.randrange(1000))
    targets = [
        {
            "type": rng.choice(_TARGET_TYPES),
            "id": f"{rng.choice('CUFRWGMA')}{rng.getrandbits(40):010X}",
            "name": f"{rng.choice(('#', '', '@'))}{rng.choice(_FIRST)}-"
            f"{rng.choice(_TEAMS)}-{rng.randrange(1000)}",
        }
        for _ in range(rng.randint(1, 2))
    ]
    return {
        "id": f"evt_{i:010d}{rng.getrandbits(48):012x}",
        "source": source,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {
            "id": f"U{rng.getrandbits(40):010X}",
            "type": rng.choice(("user", "user", "user", "bot", "service")),
            "name": f"{first.title()} {last.title()}",
            "email": f"{first}.{last}@example.com",
        },
        "action": rng.choice(_SOURCES[source]),
        "targets": targets,
        "context": {
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "user_agent": rng.choice(_AGENTS),
            "request_id": f"{rng.getrandbits(128):032x}",
            "workspace": f"T{rng.getrandbits(36):09X}",
            "outcome": rng.choice(("success", "success", "success", "denied", "error")),
            "risk_score": rng.randrange(100),
        },
    }


def audit_events(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` deterministic audit events."""
    rng = random.Random(seed)
    return [audit_event(rng, i) for i in range(n)]


def small_records(start: int, stop: int) -> Iterator[dict[str, Any]]:
    """Small (about 100 bytes canonical) records for the proof-latency logs; no ``id``."""
    for i in range(start, stop):
        yield {"n": i, "kind": "bench.tick", "note": f"proof-latency filler entry {i:012d}"}


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- helpers ------------------------------------------------------------------------------


def open_store(place: Place, *, create: bool = False) -> Storage:
    """A new store on ``place``; a PostgreSQL schema is created (migrated) when ``create``."""
    if isinstance(place, Path):
        return SqliteStorage(place)
    # One benchmark thread needs one connection; a second covers the pool's own checks.
    return PostgresStorage(place.dsn, schema=place.schema, min_size=1, max_size=2, migrate=create)


def new_log(place: Place) -> tuple[Storage, Ledger, NoteSigner]:
    """A fresh store with one log and its key registered (as DataDir.init does)."""
    storage = open_store(place, create=True)
    info = storage.create_log(LOG_NAME, ORIGIN, CREATED)
    signer = NoteSigner.generate(ORIGIN)
    storage.add_key_event(info.id, KeyEvent(signer.verifier.to_string(), "added", CREATED))
    return storage, Ledger(storage, info, [signer]), signer


def open_ledger(place: Place) -> tuple[Storage, Ledger]:
    """A new store and a read-only Ledger on an existing benchmark log."""
    storage = open_store(place)
    return storage, Ledger(storage, storage.get_log(LOG_NAME))


def checkpointed_bytes(path: Path) -> int:
    """Database plus WAL size after ``PRAGMA wal_checkpoint(TRUNCATE)`` on a raw connection."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    total = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        total += wal.stat().st_size
    return total


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes of pages per table and index (SQLite's dbstat virtual table)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {str(name): int(size) for name, size in rows}


def remove_db(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


def tree_bytes_per_leaf(size: int) -> float:
    """Hash-tile bytes per leaf: 32 for the leaf, plus 32/256 per full tile above it."""
    total, level_size = 0, size
    while level_size:
        total += level_size * HASH_SIZE
        level_size //= TILE_WIDTH
    return total / size if size else 0.0


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def filesystem_type(path: Path) -> str:
    """Best effort: the type of the filesystem ``path`` is on (Linux /proc/mounts)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


# -- 1. durable batched append ------------------------------------------------------------


def bench_ledger_append(place: Place, records: Sequence[Any], batch: int) -> float:
    """(a) Ledger.append(records): canonicalize + store + tree + sign, one commit a batch."""
    storage, ledger, _ = new_log(place)
    groups = batches(records, batch)
    try:
        start = time.perf_counter()
        for group in groups:
            ledger.append(group)
        elapsed = time.perf_counter() - start
    finally:
        storage.close()
    return len(records) / elapsed


def bench_ledger_append_prepared(
    place: Place, prepared: Sequence[PreparedEntry], batch: int
) -> float:
    """(b) Ledger.append_prepared: storage + tree + signing only."""
    storage, ledger, _ = new_log(place)
    groups = batches(prepared, batch)
    try:
        start = time.perf_counter()
        for group in groups:
            ledger.append_prepared(group)
        elapsed = time.perf_counter() - start
    finally:
        storage.close()
    return len(prepared) / elapsed


def bench_floor(path: Path, data: Sequence[bytes], batch: int) -> float:
    """(c) The floor: the same bytes into (id INTEGER PRIMARY KEY, data BLOB), same pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in FLOOR_PRAGMAS:
            conn.execute(pragma)
        conn.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, data BLOB)")
        groups = batches(data, batch)
        next_id = 0
        start = time.perf_counter()
        for group in groups:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO entries (id, data) VALUES (?, ?)",
                [(next_id + i, d) for i, d in enumerate(group)],
            )
            conn.execute("COMMIT")
            next_id += len(group)
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return len(data) / elapsed


def bench_pymerkle(path: Path, data: Sequence[bytes], batch: int) -> float:
    """(d) pymerkle.SqliteTree.append_entries, one call (one transaction) per batch."""
    from pymerkle import SqliteTree  # noqa: PLC0415 (optional 'bench' extra)

    tree = SqliteTree(str(path))
    try:
        groups = batches(data, batch)
        start = time.perf_counter()
        for group in groups:
            tree.append_entries(list(group))
        elapsed = time.perf_counter() - start
        if tree.get_size() != len(data):
            raise SystemExit("pymerkle lost entries")
    finally:
        tree.close()
    return len(data) / elapsed


def pymerkle_pragmas(path: Path) -> dict[str, Any]:
    """The journal mode and synchronous level pymerkle's SqliteTree runs with."""
    from pymerkle import SqliteTree  # noqa: PLC0415

    tree = SqliteTree(str(path))
    try:
        mode = tree.con.execute("PRAGMA journal_mode").fetchone()
        sync = tree.con.execute("PRAGMA synchronous").fetchone()
    finally:
        tree.close()
    remove_db(path)
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"journal_mode": mode, "synchronous": names.get(sync, sync)}


def bench_pymerkle_with_root(path: Path, data: Sequence[bytes], batch: int) -> float:
    """(d') pymerkle append_entries plus get_root() per batch (a root per commit, unsigned)."""
    from pymerkle import SqliteTree  # noqa: PLC0415

    tree = SqliteTree(str(path))
    try:
        groups = batches(data, batch)
        start = time.perf_counter()
        for group in groups:
            tree.append_entries(list(group))
            tree.get_root()
        elapsed = time.perf_counter() - start
    finally:
        tree.close()
    return len(data) / elapsed


@dataclass(frozen=True)
class Variant:
    """One append variant: its measurement name, its engine and how to run it."""

    name: str
    engine: str  # "sqlite" | "postgres"
    run: Callable[[Any, int], float]  # (place, batch) -> entries/s

    @property
    def key(self) -> str:
        return self.name if self.engine == "sqlite" else PG + self.name


class Places:
    """Fresh places for the append runs: files in the work directory, and schemas of
    this run on PostgreSQL. The previous round's are dropped as a round starts."""

    def __init__(self, workdir: Path, pg: bench_pg.Scratch | None) -> None:
        self.workdir = workdir
        self.pg = pg

    def new(self, v: Variant, batch: int, r: int) -> Place:
        if v.engine == "sqlite":
            return self.workdir / f"{v.name}-{batch}-r{r}.db"
        assert self.pg is not None
        return PgSchema(self.pg.dsn, self.pg.schema(f"{v.name}_{batch}_r{r}"))

    def discard(self, place: Place) -> None:
        if isinstance(place, Path):
            remove_db(place)
        elif self.pg is not None:
            self.pg.drop(place.schema)


def run_appends(
    res: Results,
    places: Places,
    n: int,
    batch_sizes: Sequence[int],
    rounds: int,
    pymerkle_root: bool,
) -> dict[int, dict[str, Place]]:
    log(f"[append] generating {n:,} audit events")
    records = audit_events(n)
    start = time.perf_counter()
    prepared = [prepare(r) for r in records]
    prep_rate = n / (time.perf_counter() - start)
    data = [p.data for p in prepared]
    sizes = [len(d) for d in data]
    mean_bytes = statistics.fmean(sizes)
    res.add("workload.entries", n, "entries")
    res.add("workload.canonical_bytes_mean", mean_bytes, "bytes")
    res.add("workload.canonical_bytes_min", min(sizes), "bytes")
    res.add("workload.canonical_bytes_max", max(sizes), "bytes")
    res.add(
        "prepare.rate",
        prep_rate,
        "entries/s",
        "ledger.prepare(): RFC 8785 canonicalization + leaf hash + idempotency key",
    )
    res.info["workload_example"] = data[0].decode()

    variants = [
        Variant("floor_sqlite", "sqlite", lambda path, batch: bench_floor(path, data, batch)),
        Variant(
            "ledger_append",
            "sqlite",
            lambda place, batch: bench_ledger_append(place, records, batch),
        ),
        Variant(
            "ledger_append_prepared",
            "sqlite",
            lambda place, batch: bench_ledger_append_prepared(place, prepared, batch),
        ),
        Variant("pymerkle_sqlite", "sqlite", lambda path, batch: bench_pymerkle(path, data, batch)),
    ]
    if pymerkle_root:
        variants.append(
            Variant(
                "pymerkle_sqlite_with_root",
                "sqlite",
                lambda path, batch: bench_pymerkle_with_root(path, data, batch),
            )
        )
    if places.pg is not None:
        pg = places.pg
        variants += [
            Variant(
                "floor_postgres",
                "postgres",
                lambda place, batch: bench_pg.bench_floor(pg.dsn, place.schema, data, batch),
            ),
            Variant(
                "ledger_append",
                "postgres",
                lambda place, batch: bench_ledger_append(place, records, batch),
            ),
            Variant(
                "ledger_append_prepared",
                "postgres",
                lambda place, batch: bench_ledger_append_prepared(place, prepared, batch),
            ),
        ]
    res.info["pymerkle_sqlite_pragmas"] = pymerkle_pragmas(places.workdir / "pymerkle-pragmas.db")

    last_places: dict[int, dict[str, Place]] = {}
    for batch in batch_sizes:
        tag = f"append.batch{batch}"
        # Rounds interleave the variants (floor, a, b, d, d', PostgreSQL's ; floor, a, ...)
        # so that drifting machine noise hits all of them alike; each run is a fresh store.
        samples: dict[str, list[float]] = {v.key: [] for v in variants}
        last: dict[str, Place] = {}
        for r in range(rounds):
            for v in variants:
                if v.key in last:
                    places.discard(last[v.key])
                place = places.new(v, batch, r)
                log(f"[append] batch {batch} round {r + 1}/{rounds}: {v.engine} {v.name}")
                gc.collect()
                samples[v.key].append(v.run(place, batch))
                last[v.key] = place
        rate = {key: statistics.median(values) for key, values in samples.items()}
        for v in variants:
            res.add(
                f"{PG if v.engine == 'postgres' else ''}{tag}.{v.name}",
                rate[v.key],
                "entries/s",
                f"median of {rounds}" if rounds > 1 else "",
            )
        res.info[f"append_samples_batch{batch}"] = samples
        a, b = rate["ledger_append"], rate["ledger_append_prepared"]
        c, d = rate["floor_sqlite"], rate["pymerkle_sqlite"]
        res.add(f"{tag}.ratio_append_vs_floor", a / c, "ratio")
        res.add(f"{tag}.ratio_prepared_vs_floor", b / c, "ratio")
        res.add(f"{tag}.ratio_append_vs_pymerkle", a / d, "ratio")
        res.add(f"{tag}.ratio_prepared_vs_pymerkle", b / d, "ratio")
        if places.pg is not None:
            pa, pb = rate[PG + "ledger_append"], rate[PG + "ledger_append_prepared"]
            pc = rate[PG + "floor_postgres"]
            res.add(f"{PG}{tag}.ratio_append_vs_floor", pa / pc, "ratio")
            res.add(f"{PG}{tag}.ratio_prepared_vs_floor", pb / pc, "ratio")
            res.add(f"{PG}{tag}.ratio_append_vs_sqlite", pa / a, "ratio")
            res.add(f"{PG}{tag}.ratio_prepared_vs_sqlite", pb / b, "ratio")
        last_places[batch] = last
        record_storage(res, batch, n, mean_bytes, last)
    res.add(
        "storage.tree_bytes_per_entry",
        tree_bytes_per_leaf(n),
        "bytes/entry",
        "32 per leaf + 32/256 per full tile level above",
    )
    return last_places


def as_path(place: Place) -> Path:
    assert isinstance(place, Path), place
    return place


def record_storage(
    res: Results, batch: int, n: int, mean_bytes: float, places: dict[str, Place]
) -> None:
    """4. Stored bytes per entry of the ledger.append log, the floor table and pymerkle."""
    ledger_path = as_path(places["ledger_append"])
    per_entry = checkpointed_bytes(ledger_path) / n
    floor = checkpointed_bytes(as_path(places["floor_sqlite"])) / n
    pm = checkpointed_bytes(as_path(places["pymerkle_sqlite"])) / n
    tree = tree_bytes_per_leaf(n)
    tag = f"storage.batch{batch}"
    res.add(f"{tag}.ledger_bytes_per_entry", per_entry, "bytes/entry")
    res.add(f"{tag}.floor_bytes_per_entry", floor, "bytes/entry")
    res.add(f"{tag}.pymerkle_bytes_per_entry", pm, "bytes/entry")
    res.add(f"{tag}.ratio_vs_canonical", per_entry / mean_bytes, "ratio")
    res.add(f"{tag}.ratio_vs_floor", per_entry / floor, "ratio")
    res.add(
        f"{tag}.ratio_vs_canonical_plus_tree",
        per_entry / (mean_bytes + tree),
        "ratio",
        "DESIGN target: under 1.3",
    )
    res.info[f"storage_breakdown_batch{batch}"] = {
        "entries": n,
        "bytes_by_table": table_bytes(ledger_path),
    }
    pg_ledger = places.get(PG + "ledger_append")
    if isinstance(pg_ledger, PgSchema):
        # Tables with their indexes and TOAST, as they stand (no VACUUM).
        by_table = bench_pg.schema_bytes(pg_ledger.dsn, pg_ledger.schema)
        pg_floor = places[PG + "floor_postgres"]
        assert isinstance(pg_floor, PgSchema)
        pg_per_entry = sum(by_table.values()) / n
        pg_floor_per_entry = sum(bench_pg.schema_bytes(pg_floor.dsn, pg_floor.schema).values()) / n
        res.add(f"{PG}{tag}.ledger_bytes_per_entry", pg_per_entry, "bytes/entry")
        res.add(f"{PG}{tag}.floor_bytes_per_entry", pg_floor_per_entry, "bytes/entry")
        res.add(f"{PG}{tag}.ratio_vs_canonical", pg_per_entry / mean_bytes, "ratio")
        res.add(f"{PG}{tag}.ratio_vs_floor", pg_per_entry / pg_floor_per_entry, "ratio")
        res.add(
            f"{PG}{tag}.ratio_vs_canonical_plus_tree", pg_per_entry / (mean_bytes + tree), "ratio"
        )
        res.info[f"postgres_storage_breakdown_batch{batch}"] = {
            "entries": n,
            "bytes_by_table": by_table,
        }


# -- 2. full verify -----------------------------------------------------------------------


def run_verify(res: Results, last_places: dict[int, dict[str, Place]], n: int) -> None:
    for batch, places in last_places.items():
        for prefix in ("", PG):
            place = places.get(prefix + "ledger_append")
            if place is None:
                continue
            log(f"[verify] verify_log on the {prefix or 'sqlite.'}batch-{batch} log")
            storage, ledger = open_ledger(place)
            try:
                gc.collect()
                start = time.perf_counter()
                report = verify_log(ledger, ledger.verifiers())
                elapsed = time.perf_counter() - start
            finally:
                storage.close()
            if not report.ok or report.entries_checked != n:
                raise SystemExit(f"verify_log failed on {place}: {report.problems[:3]}")
            res.add(
                f"{prefix}verify.batch{batch}.rate",
                n / elapsed,
                "entries/s",
                f"{report.checkpoints_checked} checkpoints, {report.tiles_checked} tiles",
            )


# -- 3. proof latency ---------------------------------------------------------------------


def proof_log_path(cache_dir: Path, size: int) -> Path:
    return cache_dir / f"proofs-v{PROOF_LOG_FORMAT}-{size}.db"


def pg_proof_schema(size: int) -> str:
    """The schema a cached PostgreSQL proof log of ``size`` entries is kept in."""
    return f"bench_cache_proofs_v{PROOF_LOG_FORMAT}_{size}"


def cached_log_is_usable(place: Place, size: int) -> bool:
    if isinstance(place, Path) and not place.exists():
        return False
    if isinstance(place, PgSchema) and not bench_pg.schema_exists(place.dsn, place.schema):
        return False
    try:
        storage, ledger = open_ledger(place)
    except Exception:  # any failure: rebuild it
        return False
    try:
        return ledger.tree_size() == size
    except Exception:
        return False
    finally:
        storage.close()


def build_proof_log(res: Results, prefix: str, place: Place, size: int) -> None:
    """Build a log of ``size`` small entries with append_prepared, 50,000 per commit."""
    storage, ledger, _ = new_log(place)
    prepare_s = append_s = 0.0
    try:
        for start in range(0, size, PROOF_BUILD_BATCH):
            stop = min(size, start + PROOF_BUILD_BATCH)
            t0 = time.perf_counter()
            group = [prepare(r) for r in small_records(start, stop)]
            t1 = time.perf_counter()
            ledger.append_prepared(group)
            append_s += time.perf_counter() - t1
            prepare_s += t1 - t0
            if stop % 1_000_000 == 0 or (prefix and stop % 200_000 == 0):
                log(f"[proofs]   {prefix}{stop:,} / {size:,}")
    finally:
        storage.close()
    res.add(
        f"{prefix}proofs.{size}.build_seconds",
        prepare_s + append_s,
        "s",
        "built now (not cached): prepare() + append_prepared in 50,000-entry commits",
    )
    res.add(
        f"{prefix}proofs.{size}.build_append_rate",
        size / append_s,
        "entries/s",
        "append_prepared with 50,000-entry batches of small entries",
    )


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    us = sorted(s * 1e6 for s in samples_s)
    n = len(us)
    return {
        "p50": us[min(n - 1, round(0.50 * (n - 1)))],
        "p99": us[min(n - 1, round(0.99 * (n - 1)))],
        "mean": statistics.fmean(us),
    }


def prepare_proof_log(res: Results, cache_dir: Path, size: int) -> Path:
    """The cached proof log of ``size`` entries, built first if needed; describes its file."""
    path = proof_log_path(cache_dir, size)
    if cached_log_is_usable(path, size):
        log(f"[proofs] reusing cached {size:,}-entry log {path}")
        res.info[f"proof_log_{size}"] = {"path": str(path), "cached": True}
    else:
        log(f"[proofs] building a {size:,}-entry log at {path}")
        tmp = path.with_name(path.name + ".building")
        remove_db(tmp)
        build_proof_log(res, "", tmp, size)
        checkpointed_bytes(tmp)
        tmp.rename(path)
        res.info[f"proof_log_{size}"] = {"path": str(path), "cached": False}
    res.add(
        f"proofs.{size}.db_bytes_per_entry",
        checkpointed_bytes(path) / size,
        "bytes/entry",
        "50,000-entry commits",
    )
    conn = sqlite3.connect(path)
    try:
        (mean_entry,) = conn.execute("SELECT avg(length(data)) FROM entries").fetchone()
    finally:
        conn.close()
    res.add(f"proofs.{size}.canonical_bytes_mean", mean_entry, "bytes")
    return path


def prepare_pg_proof_log(res: Results, pg: bench_pg.Scratch, cache: bool, size: int) -> PgSchema:
    """The PostgreSQL proof log of ``size`` entries: kept between runs in the schema
    :func:`pg_proof_schema` when ``cache``, else built in a schema of this run."""
    if not cache:
        place = PgSchema(pg.dsn, pg.schema(f"proofs_{size}"))
        log(f"[proofs] building a {size:,}-entry PostgreSQL log in schema {place.schema}")
        build_proof_log(res, PG, place, size)
        res.info[f"postgres_proof_log_{size}"] = {"schema": place.schema, "cached": False}
    else:
        place = PgSchema(pg.dsn, pg_proof_schema(size))
        if cached_log_is_usable(place, size):
            log(f"[proofs] reusing the cached {size:,}-entry PostgreSQL log {place.schema}")
            res.info[f"postgres_proof_log_{size}"] = {"schema": place.schema, "cached": True}
        else:
            building = PgSchema(pg.dsn, place.schema + "_building")
            bench_pg.drop_schemas(pg.dsn, [building.schema, place.schema])
            log(f"[proofs] building a {size:,}-entry PostgreSQL log in schema {place.schema}")
            build_proof_log(res, PG, building, size)
            bench_pg.rename_schema(pg.dsn, building.schema, place.schema)
            res.info[f"postgres_proof_log_{size}"] = {"schema": place.schema, "cached": False}
    by_table = bench_pg.schema_bytes(pg.dsn, place.schema)
    res.add(
        f"{PG}proofs.{size}.db_bytes_per_entry",
        sum(by_table.values()) / size,
        "bytes/entry",
        "50,000-entry commits; tables with indexes and TOAST",
    )
    return place


def check_proofs(place: Place, size: int, rng: random.Random) -> None:
    """Untimed sanity: proofs verify against the signed checkpoints."""
    storage, ledger = open_ledger(place)
    try:
        latest = ledger.checkpoint()
        if latest is None or latest.tree_size != size:
            raise SystemExit(f"{place} does not hold a {size}-entry log")
        for _ in range(20):
            i = rng.randrange(size)
            proof = ledger.inclusion_proof(i)
            verify_inclusion(ledger.leaf_hash(i), i, size, proof, latest.root_hash)
        for old in list(storage.checkpoints(ledger.log.id))[:20]:
            if 0 < old.tree_size < size:
                proof = ledger.consistency_proof(old.tree_size)
                verify_consistency(old.tree_size, size, proof, old.root_hash, latest.root_hash)
    finally:
        storage.close()


def proof_query(ledger: Ledger, kind: str, arg: int) -> list[bytes]:
    if kind == "inclusion":
        return ledger.inclusion_proof(arg)
    return ledger.consistency_proof(arg)


def time_proofs(
    place: Place, kind: str, draw: Callable[[], int], cold: int, queries: int
) -> tuple[list[float], list[float]]:
    """Cold and warm latency samples (seconds) of one kind of proof."""
    # COLD: a new store (new connection: for SQLite an empty page cache; PostgreSQL's
    # shared buffers stay warm) and a new Ledger (empty tile and node caches) for every
    # query. The connection is opened before the clock starts: this is the first proof
    # a fresh Ledger serves.
    cold_samples = []
    for _ in range(cold):
        arg = draw()
        storage, ledger = open_ledger(place)
        try:
            storage.latest_checkpoint(ledger.log.id)  # opens this thread's reader
            start = time.perf_counter()
            proof_query(ledger, kind, arg)
            cold_samples.append(time.perf_counter() - start)
        finally:
            storage.close()
    # WARM: one Ledger answers `queries` random queries untimed, then `queries` more timed.
    warm_samples = []
    storage, ledger = open_ledger(place)
    try:
        for _ in range(queries):
            proof_query(ledger, kind, draw())
        for _ in range(queries):
            arg = draw()
            start = time.perf_counter()
            proof_query(ledger, kind, arg)
            warm_samples.append(time.perf_counter() - start)
    finally:
        storage.close()
    return cold_samples, warm_samples


def run_proofs(res: Results, prefix: str, place: Place, size: int, queries: int, cold: int) -> None:
    rng = random.Random(SEED + size)
    check_proofs(place, size, rng)
    draws: dict[str, Callable[[], int]] = {
        "inclusion": lambda: rng.randrange(size),  # a leaf index
        "consistency": lambda: rng.randrange(1, size),  # an older tree size
    }
    for kind, draw in draws.items():
        log(f"[proofs] {prefix}{size:,}: {kind} proofs, {cold} cold and {queries} warm")
        gc.collect()
        cold_samples, warm_samples = time_proofs(place, kind, draw, cold, queries)
        for mode, samples in (("cold", cold_samples), ("warm", warm_samples)):
            for stat, value in percentiles(samples).items():
                res.add(
                    f"{prefix}proofs.{size}.{kind}.{mode}.{stat}",
                    value,
                    "us",
                    f"{len(samples)} queries" if stat == "mean" else "",
                )


# -- machine info and output --------------------------------------------------------------


def machine_info(workdir: Path) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            from importlib.metadata import version as v  # noqa: PLC0415

            return v(dist)
        except Exception:
            return "missing"

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", False
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "sqlite_version": sqlite3.sqlite_version,
        "trailseal": version("trailseal"),
        "pymerkle": version("pymerkle"),
        "git_commit": commit,
        "src_modified": dirty,
        "workdir_filesystem": filesystem_type(workdir),
        "loadavg_at_start": load_average(),
    }


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other processes skew timings on 2 cores)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def format_value(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.3f}x"
    if unit in {"entries/s", "entries"}:
        return f"{value:,.0f}"
    if unit == "us":
        return f"{value:,.1f}"
    if unit == "s":
        return f"{value:,.2f}"
    return f"{value:,.1f}"


def print_table(res: Results, info: dict[str, Any]) -> None:
    m = res.measurements
    print("trailseal benchmarks")
    machine = info["machine"]
    print(
        f"  {machine['date']}  python {machine['python']}  sqlite {machine['sqlite_version']}  "
        f"{machine['cpu_count']} cpus  {machine['platform']}  fs {machine['workdir_filesystem']}"
    )
    print(
        f"  git {machine['git_commit'][:12]}  pymerkle {machine['pymerkle']}  load average "
        f"{machine['loadavg_at_start']} at start, {machine['loadavg_at_end']} at end"
    )
    pg = info.get("postgres")
    if pg:
        print(
            f"  postgresql {pg['server_version']} at {pg['dsn']}: fsync {pg['fsync']}, "
            f"synchronous_commit {pg['synchronous_commit']}, wal_sync_method "
            f"{pg['wal_sync_method']}, shared_buffers {pg['shared_buffers']}"
        )
    print()
    width = max(len(k) for k in m) + 2
    section = ""
    # SQLite's measurements first, then PostgreSQL's (grouped by their second part).
    ordered = [k for k in m if not k.startswith(PG)] + [k for k in m if k.startswith(PG)]
    for key in ordered:
        entry = m[key]
        head = ".".join(key.split(".")[: 2 if key.startswith(PG) else 1])
        if head != section:
            section = head
            print(f"-- {section} " + "-" * (width + 20 - len(section)))
        value = format_value(entry["value"], entry["unit"])
        note = f"  ({entry['note']})" if entry.get("note") else ""
        print(f"{key:<{width}}{value:>16} {entry['unit']:<12}{note}")
    for key, value in info.items():
        if "storage_breakdown" in key and value["bytes_by_table"]:
            n = value["entries"]
            parts = ", ".join(
                f"{name} {size / n:.1f}"
                for name, size in value["bytes_by_table"].items()
                if size / n >= 0.5
            )
            how = (
                "table with its indexes" if key.startswith("postgres") else "table or index, dbstat"
            )
            print(f"{key} (bytes/entry by {how}): {parts}")
    if pg:
        print_comparison(m)
    print(f"wall time: {info['wall_seconds']:.1f} s")


def print_comparison(m: dict[str, dict[str, Any]]) -> None:
    """SQLite and PostgreSQL side by side: every PostgreSQL rate, size or latency next to
    its SQLite twin from the same run."""
    rows = []
    for pg_key, entry in m.items():
        if not pg_key.startswith(PG) or entry["unit"] == "ratio":
            continue
        key = pg_key.removeprefix(PG).replace("floor_postgres", "floor_sqlite")
        if key not in m or key.endswith((".mean", ".build_seconds")):
            continue
        rows.append((key, m[key]["value"], entry["value"], entry["unit"]))
    if not rows:
        return
    width = max(len(r[0]) for r in rows) + 2
    print()
    print("SQLite and PostgreSQL, same run (floor: each engine's own)")
    print(f"{'measurement':<{width}}{'sqlite':>14}{'postgres':>14}  {'unit':<12}{'pg/sqlite':>10}")
    for key, lite, pg, unit in rows:
        print(
            f"{key:<{width}}{format_value(lite, unit):>14}{format_value(pg, unit):>14}  "
            f"{unit:<12}{pg / lite:>9.2f}x"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 5,000 entries, proofs at 10,000 only, fewer queries",
    )
    p.add_argument(
        "--entries",
        type=int,
        default=None,
        help="entries per append benchmark (default 50,000; 5,000 with --quick)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="append runs per variant, interleaved; the median is reported "
        "(default 3; 1 with --quick)",
    )
    p.add_argument(
        "--batch-sizes",
        default="1000,100",
        help="comma-separated append batch sizes (default 1000,100)",
    )
    p.add_argument(
        "--proof-sizes",
        default=None,
        help="comma-separated log sizes for proof latency (default 10000,1000000)",
    )
    p.add_argument(
        "--ten-million",
        action="store_true",
        help="also measure proofs on a 10,000,000-entry log (builds it once)",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=None,
        help="warm proof queries per kind and size (default 2,000)",
    )
    p.add_argument(
        "--cold-queries",
        type=int,
        default=None,
        help="cold (fresh Ledger) proof queries per kind and size (default 200)",
    )
    p.add_argument(
        "--no-pymerkle-root",
        action="store_true",
        help="skip the extra pymerkle append + get_root() variant",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where proof-latency logs are cached (default benchmarks/.cache)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON results file (default benchmarks/results/latest.json)",
    )
    p.add_argument("--keep", action="store_true", help="keep the append benchmark databases")
    p.add_argument(
        "--storage",
        default="sqlite",
        help="engines to measure, comma-separated: sqlite (always, the baseline) and "
        "postgres (default sqlite)",
    )
    p.add_argument(
        "--postgres-dsn",
        default=bench_pg.DEFAULT_DSN,
        help="the PostgreSQL database for --storage postgres; the run's schemas are dropped "
        "at the end (default $TRAILSEAL_BENCH_POSTGRES_DSN or "
        "postgresql://postgres@127.0.0.1:5432/test)",
    )
    p.add_argument(
        "--pg-no-cache",
        action="store_true",
        help="build the PostgreSQL proof logs in this run's schemas and drop them at the end, "
        "instead of keeping them in bench_cache_proofs_v1_<size> schemas for the next run",
    )
    args = p.parse_args(argv)
    args.storage = [s.strip() for s in str(args.storage).split(",") if s.strip()]
    unknown = sorted(set(args.storage) - set(ENGINES))
    if unknown or "sqlite" not in args.storage:
        p.error(
            f"--storage takes sqlite or sqlite,postgres (sqlite is the baseline every run "
            f"measures); got {','.join(args.storage) or 'nothing'}"
        )
    if args.entries is None:
        args.entries = 5_000 if args.quick else 50_000
    if args.proof_sizes is None:
        args.proof_sizes = "10000" if args.quick else "10000,1000000"
    args.proof_sizes = [int(s) for s in str(args.proof_sizes).split(",") if s.strip()]
    if args.ten_million and 10_000_000 not in args.proof_sizes:
        args.proof_sizes.append(10_000_000)
    args.batch_sizes = [int(s) for s in str(args.batch_sizes).split(",") if s.strip()]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.queries is None:
        args.queries = 200 if args.quick else 2_000
    if args.cold_queries is None:
        args.cold_queries = 30 if args.quick else 200
    if args.entries < max(args.batch_sizes) or any(s < 2 for s in args.proof_sizes):
        p.error("--entries must be at least the largest batch size; proof sizes at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    # The append databases live next to the cache: on the same (real, not tmpfs)
    # filesystem as the repository, so fsync costs what it costs in production.
    pg = None
    if "postgres" in args.storage:
        pg = bench_pg.Scratch.open(args.postgres_dsn, "--storage postgres")
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache_dir))
    res = Results()
    info: dict[str, Any] = {"machine": machine_info(workdir)}
    if pg is not None:
        info["postgres"] = {
            **bench_pg.server_settings(pg.dsn),
            "run_schema_prefix": pg.prefix,
            "proof_log_cache": not args.pg_no_cache,
        }
    info["same_filesystem_as_repo"] = same_filesystem(workdir, REPO)
    info["config"] = {
        "quick": args.quick,
        "entries": args.entries,
        "batch_sizes": args.batch_sizes,
        "rounds": args.rounds,
        "proof_sizes": args.proof_sizes,
        "warm_queries": args.queries,
        "cold_queries": args.cold_queries,
        "proof_build_batch": PROOF_BUILD_BATCH,
        "seed": SEED,
        "storage": args.storage,
    }
    try:
        last_places = run_appends(
            res,
            Places(workdir, pg),
            args.entries,
            args.batch_sizes,
            args.rounds,
            not args.no_pymerkle_root,
        )
        run_verify(res, last_places, args.entries)
        for size in args.proof_sizes:
            place: Place = prepare_proof_log(res, args.cache_dir, size)
            run_proofs(res, "", place, size, args.queries, args.cold_queries)
            if pg is not None:
                place = prepare_pg_proof_log(res, pg, not args.pg_no_cache, size)
                run_proofs(res, PG, place, size, args.queries, args.cold_queries)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        if pg is not None:
            # Even with --keep: the database is shared (the tests use it too).
            pg.drop_all()
    info["wall_seconds"] = time.perf_counter() - wall_start
    info["machine"]["loadavg_at_end"] = load_average()
    info.update(res.info)
    print_table(res, info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema": 1, **info, "measurements": res.measurements}
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
