"""trailseal HTTP proof benchmark: proofs and hash tiles served by `trailseal serve`.

Run from the repository root::

    .venv/bin/python benchmarks/http_proofs.py                # sqlite only, 100,000 entries
    .venv/bin/python benchmarks/http_proofs.py --quick        # a smoke run (about 20 seconds)
    .venv/bin/python benchmarks/http_proofs.py --targets sqlite,pg1,pg2   # PostgreSQL too

Each target's log is filled with ``--entries`` events first, in this process, through
``Service.ingest`` in batches of 1,000 on the node's own data directory before its servers
start: the same validation, sealing and signing key as over HTTP, without the HTTP cost.
Then, for each number of concurrent clients and each mode, the clients ask for

- ``inclusion``: ``GET …/proof/inclusion?index=I``, I uniform over the filled entries,
  into the latest checkpoint;
- ``consistency``: ``GET …/proof/consistency?first=F``, F uniform in 1..entries, to the
  latest checkpoint;
- ``tile``: ``GET …/tile/0/N``, a full level-0 hash tile of the filled entries.

Both proof routes are audited reads: the server appends an ``access.proof`` event, durably
and under a new signed checkpoint, before it answers. A proof request is therefore a
write too, and the log grows by one entry per proof; hash tiles are not audited.

Every answer must be 200, and a sample (every ``SAMPLE_EVERY``-th answer, checked after the
row's clock stops) is verified against what the fill appended: the receipt's checkpoint
signature and the inclusion of the known leaf hash, the checkpoint's signature and the
consistency of the root of size F (computed here from the known leaves) with it, the tile's
bytes. One wrong answer aborts the run. After the load the stores are read directly: the
log holds the filled entries plus exactly one access event per proof answered, and
``verify_log`` passes.

Targets, as in ``http_ingest.py``: ``sqlite`` (one node, the baseline), ``pg1`` (one node
on a PostgreSQL schema), ``pg2`` (two nodes on one schema: the integrator and a
``--read-only`` node without signing keys, the documented way to add readers; the
clients split between them, so the reader's access events go through the pending queue
to the integrator). Keys of a PostgreSQL target start with its name.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

import bench_pg
from http_ingest import (
    DEFAULT_CACHE,
    HERE,
    LOG,
    POOL,
    Events,
    Results,
    ServerProcess,
    Target,
    drop_scratch,
    event_pool,
    finish,
    init_nodes,
    log,
    machine_info,
    open_target_store,
    percentiles_ms,
    scratch,
    stop_target,
    verify_server_log,
    wait_for_integrator,
)
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import node_hash, range_hash, range_nodes, verify_consistency
from trailseal.core.note import NoteVerifier, b64decode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.core.tiles import TILE_WIDTH, tile_path
from trailseal.errors import Error
from trailseal.ledger import Ledger
from trailseal.service.core import Service

DEFAULT_OUT = HERE / "results" / "http_proofs.json"
MODES = ("inclusion", "consistency", "tile")
AUDITED = ("inclusion", "consistency")
"""Modes whose every answer appends one access event."""
FILL_BATCH = 1000  # the service's largest batch
SAMPLE_EVERY = 20
"""Every 20th answer of a row is verified, after the row's clock stops."""

TARGETS = {
    "sqlite": "one node, SQLite",
    "pg1": "one node, PostgreSQL",
    "pg2": "two nodes on one PostgreSQL schema: the integrator and a --read-only node, "
    "clients split between them",
}


# -- what the fill appended ------------------------------------------------------------


class KnownTree:
    """The leaf hashes the fill appended, with every perfect subtree over them, so the
    root of any size up to theirs is a fold of at most log2(N) hashes (RFC 9162 §2.1.1)."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels = [leaves]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self, size: int) -> bytes:
        nodes = {(lv, i): self.levels[lv][i] for lv, i in range_nodes(0, size)}
        return range_hash(0, size, nodes)

    def tile(self, index: int) -> bytes:
        """Full level-0 tile ``index``: its 256 leaf hashes (C2SP tlog-tiles)."""
        return b"".join(self.levels[0][index * TILE_WIDTH : (index + 1) * TILE_WIDTH])


@dataclass
class Filled:
    """One target's log after the fill: what a client trusts (verifier keys and origin,
    out of band) and what it knows (the leaves)."""

    tree: KnownTree
    verifiers: list[NoteVerifier]
    origin: str
    seconds: float


def fill(data_dir: Path, token: str, events: Events, entries: int) -> Filled:
    """``Service.ingest`` ``entries`` events in batches on a data directory no server has
    open: validated, sealed and signed with the node's key, as over HTTP."""
    service, _ = Service.open(data_dir)
    try:
        principal = service.registry.authenticate(token)
        if principal is None:
            raise SystemExit(f"{data_dir}: the bootstrap key does not authenticate")
        leaves: list[bytes] = []
        started = time.perf_counter()
        while len(leaves) < entries:
            results = service.ingest(
                principal, LOG, events.take(min(FILL_BATCH, entries - len(leaves)))
            )
            for r in results:
                if r.status != "appended" or r.index != len(leaves):
                    raise SystemExit(f"fill: entry {len(leaves)} came back as {r}")
                leaves.append(r.leaf_hash)
        seconds = time.perf_counter() - started
        origin, verifiers = service.verifiers(principal, LOG)
    finally:
        service.close()
    return Filled(KnownTree(leaves), verifiers, origin, seconds)


# -- the deployments ---------------------------------------------------------------------


def start_target(
    name: str,
    workdir: Path,
    log_level: str,
    entries: int,
    pool: list[dict[str, Any]],
    pg: bench_pg.Scratch | None,
) -> tuple[Target, Filled]:
    """Make the target's store, fill its log, then start its servers."""
    parent = workdir / name
    parent.mkdir()
    events = Events(pool)
    if name == "sqlite":
        data = parent / "data"
        service, token = Service.open(data)
        service.close()
        assert token is not None, "a new data directory makes a bootstrap key"
        log(f"{name}: filling the log with {entries:,} entries")
        filled = fill(data, token, events, entries)
        target = Target(name, [], token, events, sqlite_db=data / "trailseal.db")
        target.servers.append(ServerProcess(data, log_level, token=token))
        return target, filled
    assert pg is not None, "PostgreSQL targets need the run's scratch schemas"
    schema = pg.schema(name)
    dirs, token = init_nodes(parent, bench_pg.store_url(pg.dsn, schema), 1 if name == "pg1" else 2)
    for reader in dirs[1:]:  # docs/postgresql.md: a reader gets no signing key
        for key in (reader / "keys").glob("*.key"):
            key.unlink()
    log(f"{name}: filling the log with {entries:,} entries")
    filled = fill(dirs[0], token, events, entries)
    target = Target(name, [], token, events, pg_schema=schema, integrator=0)
    try:
        for i, d in enumerate(dirs):
            target.servers.append(
                ServerProcess(
                    d,
                    log_level,
                    token=token,
                    stderr_path=parent / f"{d.name}.log",
                    serve_args=("--read-only",) if i else (),
                )
            )
            if i == 0:
                wait_for_integrator(target.servers[0])
    except BaseException:
        stop_target(target)
        raise
    return target, filled


# -- the load ----------------------------------------------------------------------------


@dataclass
class Phase:
    requests: int = 0
    answered: int = 0  # warm-up included: every audited answer is an access event
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    samples: list[tuple[int, bytes]] = field(default_factory=list)


def request_path(mode: str, rng: random.Random, entries: int) -> tuple[str, int]:
    """A random request of ``mode`` over the filled entries, and its parameter."""
    if mode == "inclusion":
        index = rng.randrange(entries)
        return f"/v1/logs/{LOG}/proof/inclusion?index={index}", index
    if mode == "consistency":
        first = rng.randint(1, entries)
        return f"/v1/logs/{LOG}/proof/consistency?first={first}", first
    tile = rng.randrange(entries // TILE_WIDTH)
    return f"/v1/logs/{LOG}/{tile_path(0, tile)}", tile


async def drive(
    urls: Sequence[str], token: str, mode: str, entries: int, clients: int, seconds: float
) -> Phase:
    """Each client sends one request at a time until ``seconds`` have passed; client
    ``i`` talks to node ``i % nodes`` (a lone client takes the nodes in turn)."""
    rng = random.Random(f"{mode}-{clients}")
    nodes = len(urls)
    limits = httpx.Limits(
        max_connections=clients * nodes, max_keepalive_connections=clients * nodes
    )
    headers = {"authorization": f"Bearer {token}"}
    phase = Phase()
    counter = itertools.count()
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=600) as client:

        async def send(url: str) -> float:
            path, param = request_path(mode, rng, entries)
            started = time.perf_counter()
            r = await client.get(url + path)
            elapsed = time.perf_counter() - started
            if r.status_code != 200:
                raise SystemExit(f"{mode}: GET {path}: HTTP {r.status_code}: {r.text[:500]}")
            phase.answered += 1
            if next(counter) % SAMPLE_EVERY == 0:
                phase.samples.append((param, r.content))
            return elapsed

        def node_of(client_no: int, request_no: int) -> str:
            if clients >= nodes:
                return urls[client_no % nodes]
            return urls[(client_no + request_no) % nodes]

        warm = [(c, r) for c in range(clients) for r in range(1 if clients >= nodes else nodes)]
        await asyncio.gather(*(send(node_of(c, r)) for c, r in warm))
        phase.samples.clear()

        async def client_loop(client_no: int, deadline: float) -> None:
            for request_no in itertools.count():
                phase.latencies_s.append(await send(node_of(client_no, request_no)))
                phase.requests += 1
                if time.perf_counter() >= deadline:
                    return

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c, started + seconds) for c in range(clients)))
        phase.seconds = time.perf_counter() - started
    return phase


def check_answer(mode: str, filled: Filled, param: int, body: bytes) -> None:
    """Raise :class:`trailseal.errors.Error` (or SystemExit) unless ``body`` is a right
    answer for ``param``, checked against what the fill appended and the trusted keys."""
    tree = filled.tree
    if mode == "tile":
        if body != tree.tile(param):
            raise SystemExit(f"tile/0/{param}: the bytes are not the leaf hashes appended")
        return
    doc = orjson.loads(body)
    if mode == "inclusion":
        receipt = Receipt.from_text(doc["receipt"])
        proof = tuple(b64decode(h, "proof hash") for h in doc["proof"])
        if receipt.index != param or doc["index"] != param or proof != receipt.proof:
            raise SystemExit(f"inclusion of {param}: the answer is for {doc['index']}")
        signed = verify_receipt(
            receipt, filled.verifiers, origin=filled.origin, entry_leaf_hash=tree.levels[0][param]
        )
    else:
        signed = verify_checkpoint(doc["checkpoint"].encode(), filled.verifiers, filled.origin)
        proof = tuple(b64decode(h, "proof hash") for h in doc["proof"])
        if doc["first"] != param or doc["second"] != signed.tree_size:
            raise SystemExit(f"consistency from {param}: the answer is {doc['first']}..")
        verify_consistency(param, signed.tree_size, proof, tree.root(param), signed.root_hash)
    if signed.tree_size <= tree.size:
        raise SystemExit(f"{mode} {param}: checkpoint of size {signed.tree_size} misses the fill")


def run_http(
    res: Results,
    running: Sequence[tuple[Target, Filled]],
    modes: Sequence[str],
    clients: Sequence[int],
    seconds: float,
    audited: dict[str, int],
) -> None:
    for mode in modes:
        for n in clients:
            for t, filled in running:  # row by row: drifting load hits the targets alike
                log(f"http {t.name} {mode}: {n} clients for {seconds:g} s")
                phase = asyncio.run(drive(t.urls, t.token, mode, filled.tree.size, n, seconds))
                if mode in AUDITED:
                    audited[t.name] += phase.answered
                try:
                    for param, body in phase.samples:
                        check_answer(mode, filled, param, body)
                except Error as e:
                    raise SystemExit(f"{t.name} {mode}: a wrong answer: {e.diagnostics()}") from e
                stats = percentiles_ms(phase.latencies_s)
                key = f"{t.prefix}http.{mode}.c{n}"
                res.add(f"{key}.requests_per_s", phase.requests / phase.seconds, "requests/s")
                res.add(f"{key}.p50_ms", stats["p50"], "ms")
                res.add(f"{key}.p99_ms", stats["p99"], "ms")
                res.add(f"{key}.mean_ms", stats["mean"], "ms")
                res.add(f"{key}.requests", phase.requests, "requests", f"in {phase.seconds:.1f} s")
                res.add(f"{key}.verified", len(phase.samples), "answers", "checked client-side")


def check_server_log(res: Results, target: Target, filled: Filled, audited: int, dsn: str) -> None:
    """The log holds the filled entries, unchanged, plus one access event per audited
    answer, and verifies."""
    storage = open_target_store(target, dsn)
    try:
        info = storage.get_log(LOG)
        ledger = Ledger(storage, info)
        size = ledger.tree_size()
        if size != filled.tree.size + audited:
            raise SystemExit(
                f"{target.name}: the log holds {size:,} entries; expected {filled.tree.size:,} "
                f"filled and {audited:,} access events"
            )
        if ledger.leaf_hash(filled.tree.size - 1) != filled.tree.levels[0][-1]:
            raise SystemExit(f"{target.name}: the last filled leaf changed")
        res.add(f"{target.prefix}server_log.access_events", audited, "entries")
        queued = verify_server_log(res, target, storage, ledger)
        if queued is not None:
            res.add(
                f"{target.prefix}server_log.queued_entries",
                queued,
                "entries",
                "access events of the read-only node, appended by the integrator",
            )
    finally:
        storage.close()


# -- table, arguments, main --------------------------------------------------------------


def print_table(res: Results, info: dict[str, Any]) -> None:
    m = res.measurements
    machine, cfg = info["machine"], info["config"]
    print("trailseal HTTP proof benchmark")
    print(
        f"  {machine['date']}  python {machine['python']}  sqlite {machine['sqlite_version']}  "
        f"{machine['cpu_count']} cpus  uvicorn {machine['uvicorn']} (1 worker per node)"
    )
    print(
        f"  git {machine['git_commit'][:12]}{' (src modified)' if machine['src_modified'] else ''}"
        f"  load average {machine['loadavg_at_start']} at start, "
        f"{machine['loadavg_at_end']} at end"
    )
    print(
        f"  {cfg['entries']:,} entries filled per target; {cfg['seconds']:g} s per row; "
        f"every {SAMPLE_EVERY}th answer verified; server log level {cfg['log_level']}"
    )
    for name, store in info["stores"].items():
        fill_key = f"{'' if name == 'sqlite' else name + '.'}fill.entries_per_s"
        print(f"  {name:<7}{store['description']} (filled at {m[fill_key]['value']:,.0f}/s)")
    if "postgres" in info:
        pg = info["postgres"]
        print(
            f"  postgresql {pg['server_version']}: fsync {pg['fsync']}, "
            f"synchronous_commit {pg['synchronous_commit']}, shared_buffers {pg['shared_buffers']}"
        )
    print()
    print(
        f"{'mode':<12}{'clients':>8}  {'target':<8}{'requests':>10}{'req/s':>10}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'vs sqlite':>11}"
    )
    for mode in cfg["modes"]:
        for n in cfg["clients"]:
            base = m[f"http.{mode}.c{n}.requests_per_s"]["value"]
            for name in info["stores"]:
                k = f"{'' if name == 'sqlite' else name + '.'}http.{mode}.c{n}"
                rate = m[k + ".requests_per_s"]["value"]
                print(
                    f"{mode:<12}{n:>8}  {name:<8}{m[k + '.requests']['value']:>10,.0f}"
                    f"{rate:>10,.0f}{m[k + '.p50_ms']['value']:>10,.1f}"
                    f"{m[k + '.p99_ms']['value']:>10,.1f}{m[k + '.mean_ms']['value']:>10,.1f}"
                    f"{'' if name == 'sqlite' else f'{rate / base:.2f}x':>11}"
                )
    print()
    for name in info["stores"]:
        p = "" if name == "sqlite" else name + "."
        queued = m.get(p + "server_log.queued_entries")
        print(
            f"{name} server log: {m[p + 'server_log.entries']['value']:,.0f} entries "
            f"({m[p + 'server_log.access_events']['value']:,.0f} access events, one per proof), "
            f"verified in {m[p + 'server_log.verify_seconds']['value']:.1f} s"
            + (f"; {queued['value']:,.0f} came through the pending queue" if queued else "")
        )
    print(f"wall time: {info['wall_seconds']:.1f} s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 5,000 entries, 2 s a row")
    p.add_argument("--entries", type=int, default=None, help="entries per log (default 100,000)")
    p.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per row (default 10)")
    p.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {','.join(MODES)}"
    )
    p.add_argument("--log-level", default="info", help="the servers' TRAILSEAL_LOG_LEVEL")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="scratch parent")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--keep", action="store_true", help="keep the scratch data directories")
    p.add_argument(
        "--targets",
        default="sqlite",
        help="comma-separated: sqlite (always, the baseline), pg1, pg2 (default sqlite)",
    )
    p.add_argument(
        "--postgres-dsn",
        default=bench_pg.DEFAULT_DSN,
        help="the PostgreSQL database for pg1/pg2; each target gets a schema of this run, "
        "dropped at the end",
    )
    args = p.parse_args(argv)
    args.targets = list(dict.fromkeys(t.strip() for t in str(args.targets).split(",") if t.strip()))
    if set(args.targets) - set(TARGETS) or "sqlite" not in args.targets:
        p.error(f"--targets takes sqlite plus any of pg1,pg2; got {','.join(args.targets)}")
    args.modes = [s.strip() for s in str(args.modes).split(",") if s.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        p.error(f"--modes takes any of {','.join(MODES)}")
    args.clients = [int(s) for s in str(args.clients).split(",") if s.strip()]
    if not args.clients or min(args.clients) < 1:
        p.error("client counts must be at least 1")
    if args.entries is None:
        args.entries = 5_000 if args.quick else 100_000
    if args.entries < TILE_WIDTH:
        p.error(f"--entries must be at least {TILE_WIDTH} (one full tile)")
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    pg, workdir = scratch(args, "proofs-")
    res = Results()
    info: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "entries": args.entries,
            "clients": args.clients,
            "seconds": args.seconds,
            "modes": args.modes,
            "targets": args.targets,
            "log_level": args.log_level,
            "sample_every": SAMPLE_EVERY,
            "fill": f"Service.ingest in batches of {FILL_BATCH}, before the servers start",
            "server": "trailseal serve (uvicorn, 1 worker), a subprocess per node",
            "load_generator": "httpx.AsyncClient, one asyncio loop, this process",
        },
    }
    if pg is not None:
        info["postgres"] = {**bench_pg.server_settings(pg.dsn), "run_schema_prefix": pg.prefix}
    pool = event_pool(POOL)
    running: list[tuple[Target, Filled]] = []
    audited = dict.fromkeys(args.targets, 0)
    try:
        try:
            for name in args.targets:
                target, filled = start_target(name, workdir, args.log_level, args.entries, pool, pg)
                running.append((target, filled))
                res.add(f"{target.prefix}fill.entries", args.entries, "entries")
                res.add(f"{target.prefix}fill.seconds", filled.seconds, "s")
                res.add(
                    f"{target.prefix}fill.entries_per_s", args.entries / filled.seconds, "entries/s"
                )
            info["stores"] = {
                t.name: {
                    "description": TARGETS[t.name],
                    "nodes": len(t.servers),
                    "read_only_nodes": max(0, len(t.servers) - 1),
                    "schema": t.pg_schema,
                }
                for t, _ in running
            }
            run_http(res, running, args.modes, args.clients, args.seconds, audited)
        finally:
            statuses = {t.name: stop_target(t) for t, _ in running}
        info["server_exit_statuses"] = statuses
        info["server_exit_status"] = max(
            (abs(c) for cs in statuses.values() for c in cs), default=0
        )
        for t, filled in running:
            check_server_log(res, t, filled, audited[t.name], args.postgres_dsn)
    finally:
        drop_scratch(args, pg, workdir)
    finish(res, info, args.out, wall_start, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
