"""trailseal service registry benchmark: the per-request registry calls, SQLite vs PostgreSQL.

Run from the repository root::

    .venv/bin/python benchmarks/registry.py             # the default run (about 20 seconds)
    .venv/bin/python benchmarks/registry.py --quick     # a smoke run (a few seconds)

Every API request resolves its log (``Registry.log``) and, once per
``AUTH_CACHE_S`` per key, checks its key in the database (``Registry.authenticate``);
key creation and poller state writes are rarer, but are transactions. For each engine
(a scratch data directory's ``service.db``; a scratch schema on ``--dsn``, dropped after)
this measures the latency of each call from one thread (p50/p99 in µs), and the rate of
``log`` lookups from ``--threads`` threads at once (calls/s), as the HTTP worker threads
make them. PostgreSQL is skipped, with the reason, when it is not reachable. Results go
to stdout as a table and to a JSON file (``--out``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from http_ingest import load_average, log, machine_info
from trailseal.service.registry import Registry, TenantLog, open_registry
from trailseal.storage.urls import StorageUrl

AT = "2025-01-01T00:00:00.000000Z"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def latencies_us(call: Callable[[int], object], n: int) -> dict[str, float]:
    """p50, p99 and mean of ``n`` calls of ``call(i)``, in microseconds."""
    samples = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return {
        "p50": samples[len(samples) // 2],
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean": statistics.fmean(samples),
    }


def concurrent_rate(call: Callable[[int], object], n: int, threads: int) -> float:
    """Calls per second of ``n`` calls spread over ``threads`` threads."""
    per_thread = n // threads

    def work(_: int) -> None:
        for i in range(per_thread):
            call(i)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return per_thread * threads / (time.perf_counter() - start)


def measure(registry: Registry, n: int, threads: int) -> dict[str, dict[str, Any]]:
    registry.create_tenant("acme", AT)
    registry.add_log(TenantLog("acme", "main", "acme.main", False), AT)
    tokens = [registry.create_key("acme", "ingest", AT)[1] for _ in range(n)]
    out: dict[str, dict[str, Any]] = {}
    out["log"] = latencies_us(lambda i: registry.log("acme", "main"), n)
    # Each token once: never cached, so each is a database read and a hash comparison.
    out["authenticate_uncached"] = latencies_us(lambda i: registry.authenticate(tokens[i]), n)
    out["authenticate_cached"] = latencies_us(lambda i: registry.authenticate(tokens[i]), n)
    out["create_key"] = latencies_us(lambda i: registry.create_key("acme", "reader", AT), n)
    out["put_state"] = latencies_us(lambda i: registry.put_state("bench", {"i": i}, AT), n)
    out["log_concurrent"] = {
        "rate": concurrent_rate(lambda i: registry.log("acme", "main"), n * 4, threads)
    }
    return out


def run_engine(engine: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if engine == "sqlite":
        url = StorageUrl("sqlite", path=workdir / "trailseal.db")
        registry = open_registry(url, data_dir=workdir)
        try:
            return measure(registry, args.calls, args.threads)
        finally:
            registry.close()
    import psycopg  # noqa: PLC0415 (only for the PostgreSQL run)
    from psycopg import sql  # noqa: PLC0415

    try:
        with psycopg.connect(args.dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return {"skipped": f"PostgreSQL not reachable at {args.dsn}: {e}".strip()[:300]}
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    url = StorageUrl("postgresql", dsn=args.dsn, schema=schema)
    try:
        registry = open_registry(url, data_dir=workdir)
        try:
            return measure(registry, args.calls, args.threads)
        finally:
            registry.close()
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    engines = list(results)
    print(f"registry calls: {args.calls} per kind, {args.threads} threads for log_concurrent")
    print(f"{'call':<26}" + "".join(f"{e + ' p50/p99 µs':>26}" for e in engines))
    for call in ("log", "authenticate_uncached", "authenticate_cached", "create_key", "put_state"):
        row = f"{call:<26}"
        for e in engines:
            m = results[e].get(call)
            row += f"{m['p50']:>16.1f} / {m['p99']:<7.1f}" if m else f"{'skipped':>26}"
        print(row)
    row = f"{'log_concurrent (calls/s)':<26}"
    for e in engines:
        m = results[e].get("log_concurrent")
        row += f"{m['rate']:>26.0f}" if m else f"{'skipped':>26}"
    print(row)
    for e in engines:
        if "skipped" in results[e]:
            print(f"{e}: {results[e]['skipped']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 calls per kind")
    p.add_argument("--calls", type=int, default=2000, help="calls per kind (default 2000)")
    p.add_argument("--threads", type=int, default=8, help="threads for log_concurrent")
    p.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL (default {DEFAULT_DSN})")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/registry.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.calls = 200
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    info["loadavg_at_start"] = load_average()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="trailseal-registry-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine in ("sqlite", "postgres"):
            log(f"{engine}: {args.calls} calls per kind")
            (workdir / engine).mkdir()
            results[engine] = run_engine(engine, args, workdir / engine)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_at_end"] = load_average()
    print_table(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "schema": 1,
                "machine": info,
                "config": {"calls": args.calls, "threads": args.threads},
                "wall_seconds": round(time.perf_counter() - started, 2),
                "results": results,
            },
            indent=2,
        )
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
