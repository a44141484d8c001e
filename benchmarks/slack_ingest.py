"""trailseal Slack Events API benchmark: signed deliveries against plain events, one server.

Run from the repository root::

    .venv/bin/python benchmarks/slack_ingest.py            # the default run (about 1-2 minutes)
    .venv/bin/python benchmarks/slack_ingest.py --quick    # a smoke run (about 15 seconds)

A real ``trailseal serve`` (a subprocess, as in ``benchmarks/http_ingest.py``, whose helpers
this script imports) runs on a scratch data directory whose ``trailseal.toml`` configures
one Slack app (``[[slack.apps]]``, signing secret in an environment variable passed to
the server). For each number of concurrent clients, the same number of events is sent as
signed Events API deliveries to ``POST /slack/events`` and as plain events to
``POST /v1/logs/default/events`` with an API key: events/s and p50/p99 time to the answer,
side by side. The cost of the signature check alone is measured in this process
(``verify_slack_request`` per second). After the load the server is stopped and its
store is read directly: it must hold every acknowledged Slack event exactly once. See
``benchmarks/README.md``. Results go to stdout as a table and to a JSON file (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from http_ingest import (
    LOG,
    POOL,
    Events,
    Phase,
    Results,
    ServerProcess,
    event_pool,
    load_average,
    log,
    machine_info,
    percentiles_ms,
)
from trailseal.core.canonical import canonicalize
from trailseal.http.routes_slack import events_for
from trailseal.ingest.slack_events import SOURCE as SLACK_SOURCE
from trailseal.ingest.slack_signature import slack_signature, verify_slack_request
from trailseal.ledger import Ledger
from trailseal.storage.sqlite import SqliteStorage
from trailseal.verify import verify_log

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_OUT = HERE / "results" / "slack.json"
SLACK_PATH = "/slack/events"
SECRET_ENV = "BENCH_SLACK_SIGNING_SECRET"
"""Not TRAILSEAL_*: ServerProcess passes the environment on without those."""
SEED = 20260202
MODES = ("slack", "plain")

# -- Slack deliveries ---------------------------------------------------------------------

_WORDS = (
    "deploy", "rollback", "on-call", "review", "incident", "postmortem", "release", "ticket",
    "customer", "migration", "dashboard", "alert", "standup", "budget", "contract", "access",
)  # fmt: skip
_CHANNELS = ("general", "eng-platform", "sec-ops", "incidents", "sales-emea", "random")


def _uid(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.getrandbits(40):010X}"


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def slack_event(rng: random.Random, team: str) -> dict[str, Any]:
    """One inner event in the shapes Slack sends: messages (most), edits, channel events."""
    user, channel = _uid(rng, "U"), _uid(rng, "C")
    kind = rng.choices(
        ("message", "message_blocks", "message_changed", "app_mention", "member_joined_channel",
         "channel_created", "channel_rename", "file_shared"),
        weights=(40, 15, 8, 7, 12, 6, 4, 8),
    )[0]  # fmt: skip
    if kind in ("message", "message_blocks", "app_mention"):
        text = _sentence(rng, rng.randint(4, 30))
        event: dict[str, Any] = {
            "type": "app_mention" if kind == "app_mention" else "message",
            "user": user,
            "text": text,
            "client_msg_id": f"{rng.getrandbits(128):032x}",
            "team": team,
            "channel": channel,
            "channel_type": "channel",
        }
        if kind == "message_blocks":
            event["blocks"] = [
                {
                    "type": "rich_text",
                    "block_id": f"{rng.getrandbits(20):05x}",
                    "elements": [
                        {
                            "type": "rich_text_section",
                            "elements": [{"type": "text", "text": text}],
                        }
                    ],
                }
            ]
        return event
    if kind == "message_changed":
        old, new = _sentence(rng, rng.randint(4, 20)), _sentence(rng, rng.randint(4, 20))
        return {
            "type": "message",
            "subtype": "message_changed",
            "channel": channel,
            "hidden": True,
            "message": {"type": "message", "user": user, "text": new, "edited": {"user": user}},
            "previous_message": {"type": "message", "user": user, "text": old},
            "channel_type": "channel",
        }
    if kind == "member_joined_channel":
        return {
            "type": "member_joined_channel",
            "user": user,
            "channel": channel,
            "channel_type": "C",
            "team": team,
            "inviter": _uid(rng, "U"),
        }
    if kind == "channel_created":
        return {
            "type": "channel_created",
            "channel": {
                "id": channel,
                "name": f"{rng.choice(_CHANNELS)}-{rng.randrange(1000)}",
                "created": 1_700_000_000 + rng.randrange(10**7),
                "creator": user,
            },
        }
    if kind == "channel_rename":
        return {
            "type": "channel_rename",
            "channel": {
                "id": channel,
                "name": f"{rng.choice(_CHANNELS)}-{rng.randrange(1000)}",
                "created": 1_700_000_000 + rng.randrange(10**7),
            },
        }
    file_id = _uid(rng, "F")
    return {
        "type": "file_shared",
        "channel_id": channel,
        "file_id": file_id,
        "user_id": user,
        "file": {"id": file_id},
    }


def slack_pool(n: int) -> list[dict[str, Any]]:
    """``n`` envelopes without ``event_id`` / ``event_time`` (set when sent)."""
    rng = random.Random(SEED)
    teams = [_uid(rng, "T") for _ in range(3)]
    app_id = _uid(rng, "A")
    pool = []
    for _ in range(n):
        team = rng.choice(teams)
        pool.append(
            {
                "token": "XXYYZZ",
                "team_id": team,
                "context_team_id": team,
                "context_enterprise_id": None,
                "api_app_id": app_id,
                "event": slack_event(rng, team),
                "type": "event_callback",
                "authorizations": [
                    {
                        "enterprise_id": None,
                        "team_id": team,
                        "user_id": _uid(rng, "U"),
                        "is_bot": True,
                        "is_enterprise_install": False,
                    }
                ],
                "is_ext_shared_channel": False,
                "event_context": f"4-{rng.getrandbits(256):064x}",
            }
        )
    return pool


class Deliveries:
    """Envelopes with event ids that are never reused in one run."""

    def __init__(self, pool: list[dict[str, Any]]) -> None:
        self.pool = pool
        self.counter = itertools.count()
        self.acked: list[str] = []

    def take(self) -> tuple[str, bytes]:
        i = next(self.counter)
        now = time.time()
        envelope = {**self.pool[i % len(self.pool)], "event_id": f"EvBENCH{i:09d}"}
        envelope["event_time"] = int(now)
        envelope["event"] = {**envelope["event"], "event_ts": f"{now:.6f}"}
        if envelope["event"]["type"] in ("message", "app_mention"):
            envelope["event"]["ts"] = envelope["event"]["event_ts"]
        return envelope["event_id"], orjson.dumps(envelope)


def signed_headers(secret: bytes, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": slack_signature(secret, timestamp, body),
    }


# -- the load generator -------------------------------------------------------------------


async def drive(
    url: str,
    token: str,
    secret: bytes,
    deliveries: Deliveries,
    events: Events,
    mode: str,
    clients: int,
    total: int,
) -> Phase:
    """``clients`` clients send ``total`` events between them, one request at a time each."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    phase = Phase()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:

        async def send() -> float:
            if mode == "slack":
                event_id, body = deliveries.take()
                headers = signed_headers(secret, body)
                started = time.perf_counter()
                r = await client.post(SLACK_PATH, content=body, headers=headers)
                elapsed = time.perf_counter() - started
                if r.status_code != 200:
                    raise SystemExit(f"slack delivery: HTTP {r.status_code}: {r.text[:500]}")
                deliveries.acked.append(event_id)
                return elapsed
            body = orjson.dumps(events.take(1)[0])
            started = time.perf_counter()
            r = await client.post(f"/v1/logs/{LOG}/events", content=body, headers=auth)
            elapsed = time.perf_counter() - started
            if r.status_code != 201 or "receipt" not in r.json():
                raise SystemExit(f"plain event: HTTP {r.status_code}: {r.text[:500]}")
            return elapsed

        # Untimed: every client opens its connection (these events are stored too).
        await asyncio.gather(*(send() for _ in range(clients)))
        remaining = itertools.count()

        async def client_loop() -> None:
            while next(remaining) < total:
                phase.latencies_s.append(await send())
                phase.requests += 1
                phase.events += 1

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        phase.seconds = time.perf_counter() - started
    return phase


def run_http(
    res: Results,
    server: ServerProcess,
    secret: bytes,
    deliveries: Deliveries,
    events: Events,
    clients: Sequence[int],
    total: int,
) -> None:
    for n in clients:
        for mode in MODES:
            log(f"{mode}: {n} clients, {total:,} events")
            phase = asyncio.run(
                drive(server.url, server.token, secret, deliveries, events, mode, n, total)
            )
            stats = percentiles_ms(phase.latencies_s)
            key = f"http.{mode}.c{n}"
            res.add(f"{key}.events_per_s", phase.events / phase.seconds, "events/s")
            res.add(f"{key}.p50_ms", stats["p50"], "ms", "time to the answer per request")
            res.add(f"{key}.p99_ms", stats["p99"], "ms")
            res.add(f"{key}.mean_ms", stats["mean"], "ms")
            res.add(f"{key}.requests", phase.requests, "requests", f"in {phase.seconds:.1f} s")
        res.add(
            f"ratio.slack_vs_plain.c{n}",
            res.get(f"http.slack.c{n}.events_per_s") / res.get(f"http.plain.c{n}.events_per_s"),
            "ratio",
            "Slack events/s over plain events/s (higher is faster)",
        )


# -- in-process costs ---------------------------------------------------------------------


def _rate(fn: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - started)


def run_in_process(res: Results, secret: bytes, deliveries: Deliveries, n: int) -> None:
    """The signature check and the mapping alone, one thread, no HTTP."""
    bodies = []
    for i in range(256):
        envelope = {**deliveries.pool[i % len(deliveries.pool)], "event_id": f"EvX{i:06d}"}
        envelope["event_time"] = int(time.time())
        bodies.append(orjson.dumps(envelope))
    timestamp = str(int(time.time()))
    signed = [(body, slack_signature(secret, timestamp, body)) for body in bodies]
    other = secrets.token_hex(16).encode()
    cycle = itertools.cycle(signed)

    def verify_one() -> None:
        body, sig = next(cycle)
        verify_slack_request([secret], timestamp, sig, body, time.time())

    def verify_rotation() -> None:
        body, sig = next(cycle)
        verify_slack_request([secret, other], timestamp, sig, body, time.time())

    envelopes = [orjson.loads(b) for b in bodies]
    env_cycle = itertools.cycle(envelopes)
    raw_cycle = itertools.cycle(bodies)

    log(f"in-process: verify_slack_request x {n:,}")
    verify_rate = res.add(
        "inprocess.verify_slack_request.per_s",
        _rate(verify_one, n),
        "calls/s",
        f"one secret, bodies of {statistics.fmean(len(b) for b in bodies):.0f} bytes",
    )
    res.add("inprocess.verify_slack_request.us", 1e6 / verify_rate, "us", "per call")
    res.add(
        "inprocess.verify_slack_request_rotation.per_s",
        _rate(verify_rotation, n),
        "calls/s",
        "two live secrets (during a rotation both are checked)",
    )
    log(f"in-process: parse + map x {n:,}")
    res.add(
        "inprocess.parse_and_map.per_s",
        _rate(lambda: events_for(orjson.loads(next(raw_cycle)), None, None), n),
        "calls/s",
        "orjson.loads + events_for (map_event_callback)",
    )
    res.add(
        "inprocess.map_event_callback.per_s",
        _rate(lambda: events_for(next(env_cycle), None, None), n),
        "calls/s",
    )


# -- the store after the load -------------------------------------------------------------


def check_server_log(res: Results, data_dir: Path, slack_acked: list[str], plain: int) -> None:
    """The log holds every acknowledged Slack event exactly once, and the plain events."""
    storage = SqliteStorage(data_dir / "trailseal.db")
    try:
        info = storage.get_log(LOG)
        ledger = Ledger(storage, info)
        size = ledger.tree_size()
        if storage.entry_count(info.id) != size:
            raise SystemExit("entries beyond the latest checkpoint")
        slack_ids: Counter[str] = Counter()
        others = 0
        for entry in storage.read_entries(info.id, 0, size):
            if entry.source == SLACK_SOURCE:
                slack_ids[str(entry.event_id)] += 1
            else:
                others += 1
        twice = [k for k, c in slack_ids.items() if c > 1]
        if twice:
            raise SystemExit(f"Slack events stored twice: {twice[:10]}")
        acked = set(slack_acked)
        if len(acked) != len(slack_acked):
            raise SystemExit("an event_id was acknowledged twice (the benchmark reused one)")
        missing = acked - set(slack_ids)
        if missing:
            raise SystemExit(f"{len(missing)} acknowledged Slack events are not stored")
        extra = set(slack_ids) - acked
        if extra:
            raise SystemExit(f"{len(extra)} Slack events stored that were never acknowledged")
        if others != plain:
            raise SystemExit(f"{others} other entries stored; {plain} plain events acknowledged")
        log(f"verifying the server's log ({size:,} entries)")
        started = time.perf_counter()
        report = verify_log(ledger, ledger.verifiers())
        if not report.ok:
            raise SystemExit("verify_log: " + report.problems[0].describe())
        res.add("server_log.entries", size, "entries")
        res.add("server_log.slack_events", len(slack_ids), "entries", "each acknowledged, once")
        res.add("server_log.plain_events", others, "entries")
        res.add("server_log.verify_seconds", time.perf_counter() - started, "s")
    finally:
        storage.close()


# -- table, main --------------------------------------------------------------------------


def print_table(res: Results, info: dict[str, Any]) -> None:
    m = res.measurements
    machine, cfg, work = info["machine"], info["config"], info["workload"]
    print("trailseal Slack Events API benchmark")
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
        f"  {cfg['events_per_row']:,} events per row; Slack deliveries of "
        f"{work['slack_body_bytes_mean']:.0f} bytes, plain events of "
        f"{work['plain_canonical_bytes_mean']:.0f} bytes; server log level {cfg['log_level']}"
    )
    print()
    print(
        f"{'clients':>7}  {'slack ev/s':>10}{'p50 ms':>9}{'p99 ms':>9}  "
        f"{'plain ev/s':>10}{'p50 ms':>9}{'p99 ms':>9}  {'slack/plain':>11}"
    )
    for n in cfg["clients"]:
        s, p = f"http.slack.c{n}", f"http.plain.c{n}"
        print(
            f"{n:>7}  {m[s + '.events_per_s']['value']:>10,.0f}{m[s + '.p50_ms']['value']:>9,.1f}"
            f"{m[s + '.p99_ms']['value']:>9,.1f}  {m[p + '.events_per_s']['value']:>10,.0f}"
            f"{m[p + '.p50_ms']['value']:>9,.1f}{m[p + '.p99_ms']['value']:>9,.1f}  "
            f"{m[f'ratio.slack_vs_plain.c{n}']['value']:>11.2f}"
        )
    print()
    print("in this process, one thread, no HTTP:")
    for key, label in (
        ("inprocess.verify_slack_request.per_s", "verify_slack_request, one secret"),
        ("inprocess.verify_slack_request_rotation.per_s", "verify_slack_request, two secrets"),
        ("inprocess.parse_and_map.per_s", "orjson.loads + events_for"),
        ("inprocess.map_event_callback.per_s", "events_for (mapping only)"),
    ):
        print(f"  {label:<36}{m[key]['value']:>12,.0f} /s")
    print(f"  signature check: {m['inprocess.verify_slack_request.us']['value']:.1f} us a request")
    print(
        f"server log: {m['server_log.entries']['value']:,.0f} entries "
        f"({m['server_log.slack_events']['value']:,.0f} Slack events: every "
        f"acknowledged one, once; {m['server_log.plain_events']['value']:,.0f} plain), verified in "
        f"{m['server_log.verify_seconds']['value']:.1f} s"
    )
    print(f"wall time: {info['wall_seconds']:.1f} s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: clients 1,8, fewer events")
    p.add_argument("--clients", default=None, help="comma-separated client counts (default 1,8,32)")
    p.add_argument(
        "--events",
        type=int,
        default=None,
        help="events per row, each mode (default 2,000; 200 with --quick)",
    )
    p.add_argument(
        "--verify-calls",
        type=int,
        default=None,
        help="in-process calls per measurement (default 50,000; 5,000 with --quick)",
    )
    p.add_argument(
        "--log-level", default="info", help="the server's TRAILSEAL_LOG_LEVEL (default info)"
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the scratch data directory")
    args = p.parse_args(argv)
    if args.clients is None:
        args.clients = "1,8" if args.quick else "1,8,32"
    args.clients = [int(s) for s in str(args.clients).split(",") if s.strip()]
    if args.events is None:
        args.events = 200 if args.quick else 2_000
    if args.verify_calls is None:
        args.verify_calls = 5_000 if args.quick else 50_000
    if not args.clients or min(args.clients) < 1 or args.events < 1 or args.verify_calls < 1:
        p.error("client counts, events and calls must be at least 1")
    return args


def configure_slack(data_dir: Path) -> None:
    """Add one Slack app to the data directory's trailseal.toml."""
    with (data_dir / "trailseal.toml").open("a") as f:
        f.write(
            "\n[[slack.apps]]\n"
            'name = "bench"\n'
            f'signing_secret_env = "{SECRET_ENV}"\n'
            f'path = "{SLACK_PATH}"\n'
            'tenant = "default"\n'
            f'log = "{LOG}"\n'
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="slack-", dir=args.cache_dir))
    data_dir = workdir / "data"
    secret_text = secrets.token_hex(16)
    secret = secret_text.encode()
    # ServerProcess passes this process's environment (minus TRAILSEAL_*) to the server.
    os.environ[SECRET_ENV] = secret_text
    res = Results()
    deliveries = Deliveries(slack_pool(POOL))
    events = Events(event_pool(POOL))
    slack_sizes = [
        len(orjson.dumps({**e, "event_id": "EvBENCH000000000", "event_time": 1_700_000_000}))
        for e in deliveries.pool
    ]
    plain_sizes = [len(canonicalize({**e, "id": "bench-000000000"})) for e in events.pool]
    info: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "clients": args.clients,
            "events_per_row": args.events,
            "verify_calls": args.verify_calls,
            "log_level": args.log_level,
            "slack_path": SLACK_PATH,
            "plain_path": f"/v1/logs/{LOG}/events",
            "server": "trailseal serve (uvicorn, 1 worker), a subprocess, one Slack app",
            "load_generator": "httpx.AsyncClient, one asyncio loop, this process",
        },
        "workload": {
            "distinct_bodies": POOL,
            "slack_event_types": dict(
                Counter(
                    e["event"]["type"] + ("." + e["event"]["subtype"])
                    if "subtype" in e["event"]
                    else e["event"]["type"]
                    for e in deliveries.pool
                )
            ),
            "slack_body_bytes_mean": statistics.fmean(slack_sizes),
            "plain_canonical_bytes_mean": statistics.fmean(plain_sizes),
        },
    }
    try:
        log("first start of trailseal serve (creates the data directory, prints the token)")
        first = ServerProcess(data_dir, args.log_level)
        first.stop()
        configure_slack(data_dir)
        log("starting trailseal serve with the Slack app")
        server = ServerProcess(data_dir, args.log_level)
        try:
            probe = httpx.post(f"{server.url}{SLACK_PATH}", content=b"{}", timeout=10)
            if probe.status_code != 401:
                raise SystemExit(f"an unsigned request got {probe.status_code}, not 401")
            run_http(res, server, secret, deliveries, events, args.clients, args.events)
        finally:
            status = server.stop()
        info["server_exit_status"] = status
        if status != 0:
            log(f"warning: the server exited with status {status} after SIGTERM")
        plain_sent = next(events.counter)  # every plain id taken was acknowledged
        check_server_log(res, data_dir, deliveries.acked, plain_sent)
        run_in_process(res, secret, deliveries, args.verify_calls)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info["wall_seconds"] = time.perf_counter() - wall_start
    info["machine"]["loadavg_at_end"] = load_average()
    print_table(res, info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema": 1, **info, "measurements": res.measurements}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
