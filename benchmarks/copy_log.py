"""How fast ``copy-log`` moves a log SQLite -> PostgreSQL -> SQLite, and how much memory.

Run from the repository root (PostgreSQL at ``--postgres``, a scratch schema is made and
dropped)::

    .venv/bin/python benchmarks/copy_log.py            # 200,000 + 5,000 entries
    .venv/bin/python benchmarks/copy_log.py --quick    # a few seconds

Two source shapes: entries committed 1,000 per checkpoint (bulk appends) and one entry
per checkpoint (a service under light load signs a checkpoint per event). Each source is
built by a child process, so the peak resident memory reported (``ru_maxrss`` of the
copying child) is the copy's own: "copy MiB" after copying, "peak MiB" after the full
verification that follows (which adds the ledger's tile caches, capped at about 64 MiB).
Both include SQLite's page cache (64 MiB per connection). Copy and verify times are wall
clock. Prints a table, writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from trailseal.copycheck import check_copy
from trailseal.copylog import copy_log
from trailseal.core.note import NoteSigner
from trailseal.ledger import Ledger, prepare
from trailseal.storage import KeyEvent, SqliteStorage
from trailseal.storage.urls import open_storage

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "copy_log.json"
ORIGIN = "bench.example/copy"


def build(path: Path, entries: int, per_checkpoint: int) -> None:
    """A SQLite store with one log of ``entries`` in checkpoints of ``per_checkpoint``."""
    store = SqliteStorage(path)
    try:
        info = store.create_log("bench", ORIGIN, "2026-01-01T00:00:00.000000Z")
        signer = NoteSigner.generate(ORIGIN)
        store.add_key_event(info.id, KeyEvent(signer.verifier.to_string(), "added", "x"))
        ledger = Ledger(store, info, [signer])
        for start in range(0, entries, per_checkpoint):
            n = min(per_checkpoint, entries - start)
            ledger.append_prepared(
                [
                    prepare({"id": f"e{i}", "source": "slack", "action": "login", "n": i})
                    for i in range(start, start + n)
                ]
            )
    finally:
        store.close()


def copy_once(source: str, dest: str) -> dict[str, Any]:
    """Copy and verify; the numbers of this process alone."""
    src, dst = open_storage(source, migrate=False), open_storage(dest)
    try:
        result = copy_log(src, dst, "bench")
        copy_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        check = check_copy(src, dst, "bench")
    finally:
        src.close()
        dst.close()
    assert check.report.ok, check.report.problems
    return {
        "entries": result.entries_copied,
        "checkpoints": result.checkpoints_copied,
        "copy_s": result.seconds,
        "verify_s": check.seconds,
        "copy_peak_rss_mib": copy_peak,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 + 500 entries")
    parser.add_argument("--entries", type=int, default=200_000, help="bulk-shaped log size")
    parser.add_argument("--single", type=int, default=5_000, help="one-per-checkpoint log size")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "build":
            build(Path(args.child[1]), int(args.child[2]), int(args.child[3]))
        else:
            print(json.dumps(copy_once(args.child[1], args.child[2])))
        return
    if args.quick:
        args.entries, args.single = 10_000, 500

    import psycopg  # noqa: PLC0415 (only the driver's caller needs it)
    from psycopg import sql  # noqa: PLC0415

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape, entries, per in (
            ("1000 per checkpoint", args.entries, 1000),
            ("1 per checkpoint", args.single, 1),
        ):
            src = Path(tmp) / f"src-{per}.db"
            print(f"building {entries} entries, {per} per checkpoint ...", file=sys.stderr)
            child("--child", "build", str(src), str(entries), str(per))
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            pg = f"{args.postgres}?schema={schema}"
            back = Path(tmp) / f"back-{per}.db"
            try:
                for leg, source, dest in (
                    ("sqlite -> postgresql", f"sqlite:///{src}", pg),
                    ("postgresql -> sqlite", pg, f"sqlite:///{back}"),
                ):
                    started = time.monotonic()
                    numbers = json.loads(child("--child", "copy", source, dest))
                    numbers["wall_s"] = time.monotonic() - started
                    rows.append({"shape": shape, "leg": leg, **numbers})
                    print(f"  {leg}: {numbers['copy_s']:.1f} s", file=sys.stderr)
            finally:
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                    )
    header = (
        f"{'shape':<20} {'leg':<22} {'entries':>8} {'ckpts':>7} {'copy s':>7} "
        f"{'entries/s':>10} {'ckpts/s':>8} {'verify s':>8} {'copy MiB':>8} {'peak MiB':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['shape']:<20} {r['leg']:<22} {r['entries']:>8} {r['checkpoints']:>7} "
            f"{r['copy_s']:>7.2f} {r['entries'] / r['copy_s']:>10.0f} "
            f"{r['checkpoints'] / r['copy_s']:>8.0f} {r['verify_s']:>8.2f} "
            f"{r['copy_peak_rss_mib']:>8.0f} {r['peak_rss_mib']:>8.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.write_text(json.dumps({"schema": 1, "machine": machine, "rows": rows}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
