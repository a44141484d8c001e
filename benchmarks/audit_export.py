"""trailseal audit-report benchmark: a 1,000,000-row report in bounded memory, against a
naive export that holds every row before writing.

Run from the repository root::

    .venv/bin/python benchmarks/audit_export.py            # 1,000,000 rows (builds/reuses the log)
    .venv/bin/python benchmarks/audit_export.py --quick    # 5,000 rows, a few seconds

The log is a service data directory (``Service.open``) whose default log holds N Slack
events in the shape ``Service.ingest`` stores them (one team, 40 channels, 500 users of
which 5% belong to a Slack Connect partner), written with ``Ledger.append_prepared`` in
batches and cached under ``benchmarks/.cache/`` (reused while N and the format match).

Each variant runs in its own subprocess, one after the other, and reports rows, seconds
and its peak resident memory (``ru_maxrss``), so the memory of one does not hide in
another's:

- ``naive_csv``: read every row into a list of dicts, then write the CSV (the approach
  whose design stopped at 400,000 rows).
- ``stream_csv``: the same rows written as they are read (page by page).
- ``report``: ``build_report`` of a team audit selecting every event: CSV, JSON, HTML,
  blocks and the chunked evidence bundle, in one pass.
- ``report_query``: the same rows through the search index (a free-text query every
  event matches); the index is built first (its ``catch_up`` is timed apart).
- ``verify_bundle``: ``verify_bundle`` of the report's bundle, offline.
- ``upload_sdk`` and ``upload_stream``: the ``report`` variant's four files shared in a
  channel the way slack_sdk's ``files_upload_v2`` does it (each file read whole, then
  POSTed) and the way trailseal does it (``share_files``: POSTed from disk in blocks),
  to a local stand-in for Slack's three upload endpoints that counts the bytes and
  keeps none. Peak memory is the upload's alone (the report was built in another process).
- ``narrow_scan`` and ``narrow_query``: a report of one channel's events (1 in 40), as a
  channel audit (a scan of every entry) and as a free-text query for the channel's name
  through the service's own, already caught-up search index (its catch-up is done first
  and not in the time): which way is faster when few entries match.

Results go to stdout as a table and to a JSON file (``--out``). See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from run import load_average, log, machine_info
from trailseal.ledger import prepare
from trailseal.service.core import Service
from trailseal.service.search import SearchIndex

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_OUT = HERE / "results" / "audit_export.json"
LOG_FORMAT = 1  # bump when the generated events change
BATCH = 4000
TEAM, PARTNER = "T0BENCH", "T0PARTNER"
START, END = "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z"
VARIANTS = (
    "naive_csv",
    "stream_csv",
    "report",
    "report_query",
    "verify_bundle",
    "narrow_scan",
    "narrow_query",
    "upload_sdk",
    "upload_stream",
)
NARROW_CHANNEL = "C00000007"  # one of 40 channels: 1 event in 40
_ACTIONS = (
    "message.posted",
    "message.edited",
    "message.deleted",
    "file.shared",
    "member.joined",
    "channel.renamed",
    "app.installed",
    "reaction.added",
)


# -- the log ---------------------------------------------------------------------------


def event(rng: random.Random, i: int, n: int) -> dict[str, Any]:
    """One stored record, as Service.ingest leaves a mapped Slack event."""
    moment = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i * 2_678_000 / n)
    when = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    user = rng.randrange(500)
    channel = f"C{rng.randrange(40):08d}"
    return {
        "id": f"Ev{i:09d}",
        "source": "slack.events",
        "class": "activity",
        "action": rng.choice(_ACTIONS),
        "time": when,
        "actor": {"type": "user", "id": f"U{user:08d}", "team": PARTNER if user < 25 else TEAM},
        "context": {"workspace": TEAM, "channel": channel, "app": "A0AUDIT"},
        "targets": [{"type": "channel", "id": channel, "name": f"project-{channel[-3:]}"}],
        "auth": {"method": "signing-secret"},
        "result": {"status": "success"},
        "raw": {"event_ts": f"{moment.timestamp():.6f}", "type": "message"},
        "received_at": when,
        "tenant": "default",
        "log": "default",
        "ingested_by": "trailseal:slack",
    }


def build_log(data: Path, n: int) -> float:
    """Write the cached data directory; returns the seconds it took."""
    if data.exists():
        shutil.rmtree(data)
    data.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    service, _ = Service.open(data)
    try:
        ledger = service.ledger(service.registry.log("default", "default"))
        rng = random.Random(20250101)
        for first in range(0, n, BATCH):
            batch = [prepare(event(rng, i, n)) for i in range(first, min(first + BATCH, n))]
            ledger.append_prepared(batch)
            if first % 100_000 == 0:
                log(f"built {first:,} / {n:,}")
    finally:
        service.close()
    (data / "bench.json").write_text(json.dumps({"entries": n, "format": LOG_FORMAT}))
    return time.perf_counter() - t0


def cached(data: Path, n: int) -> bool:
    try:
        meta = json.loads((data / "bench.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta == {"entries": n, "format": LOG_FORMAT})


# -- variants (each runs in a child process) ---------------------------------------------


def _row(index: int, record: dict[str, Any]) -> list[Any]:
    actor, context = record.get("actor") or {}, record.get("context") or {}
    return [index, record.get("time"), record.get("action"), actor.get("id"),
            actor.get("team"), context.get("channel"), record.get("id")]  # fmt: skip


def variant_csv(service: Service, work: Path, naive: bool) -> dict[str, Any]:
    ledger = service.ledger(service.registry.log("default", "default"))
    size = ledger.tree_size()
    rows: list[list[Any]] = []
    count = 0
    with (work / "out.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        for first in range(0, size, 4096):
            for entry in ledger.storage.read_entries(ledger.log.id, first, first + 4096):
                row = _row(entry.index, orjson.loads(entry.data))
                if naive:
                    rows.append(row)
                else:
                    writer.writerow(row)
                    count += 1
        if naive:
            writer.writerows(rows)
            count = len(rows)
    return {"rows": count, "bytes": (work / "out.csv").stat().st_size}


def variant_report(
    service: Service, work: Path, query: bool, narrow: bool = False
) -> dict[str, Any]:
    from trailseal.slackapp.model import AuditRequest, AuditScope  # noqa: PLC0415
    from trailseal.slackapp.reports import build_report  # noqa: PLC0415

    tlog = service.registry.log("default", "default")
    extra: dict[str, Any] = {}
    if query:
        t0 = time.perf_counter()
        service.search_index.catch_up(service.ledger(tlog))
        extra["index_catch_up_s"] = time.perf_counter() - t0
    text = f"project-{NARROW_CHANNEL[-3:]}" if narrow else "A0AUDIT"
    scope = AuditScope(
        kind="query" if query else "channel" if narrow else "team",
        start=START,
        end=END,
        team_id=TEAM,
        channels=(NARROW_CHANNEL,) if narrow and not query else (),
        query=text if query else None,
        include_external=True,
    )
    request = AuditRequest("bench", "U00000001", TEAM, scope, "benchmark", START, END)
    t0 = time.perf_counter()
    files = build_report(service, tlog, request, work / "report", web=None)
    extra["report_s"] = time.perf_counter() - t0
    sizes = {p.suffix: p.stat().st_size for p in (files.csv, files.json, files.summary_html)}
    if not narrow:
        shutil.copy(files.bundle, work.parent / "bundle.zip")
    if not narrow and not query:  # kept for the upload variants
        kept = work.parent / "report-files"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(work / "report", kept)
        (kept / "rows.txt").write_text(str(files.rows))
    return {
        "rows": files.rows,
        "bytes": sizes[".csv"],
        "json_bytes": sizes[".json"],
        "bundle_bytes": files.bundle.stat().st_size,
        **extra,
    }


def variant_verify(service: Service, work: Path) -> dict[str, Any]:
    from trailseal.bundle import verify_bundle  # noqa: PLC0415

    ledger = service.ledger(service.registry.log("default", "default"))
    report = verify_bundle(work.parent / "bundle.zip", ledger.verifiers())
    if not report.ok:
        raise SystemExit(f"the bundle does not verify: {report.problems[:3]}")
    return {"rows": report.entries_checked, "bytes": (work.parent / "bundle.zip").stat().st_size}


class _SlackSink:
    """Slack's upload endpoints, counting bytes and keeping none, on a local port."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415
        from urllib.parse import parse_qsl, urlsplit  # noqa: PLC0415

        sink = self
        self.received: dict[str, int] = {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length", "0"))
                if url.path.startswith("/upload/"):
                    got = 0
                    while got < length:
                        block = self.rfile.read(min(length - got, 1 << 20))
                        if not block:
                            break
                        got += len(block)
                    sink.received[url.path.rsplit("/", 1)[-1]] = got
                    self._answer(b"OK", "text/plain")
                    return
                params = dict(parse_qsl(url.query))
                params.update(parse_qsl(self.rfile.read(length).decode()))
                method = url.path.rsplit("/", 1)[-1]
                if method == "files.getUploadURLExternal":
                    fid = f"F{len(sink.received) + 1:08d}"
                    sink.received[fid] = -1
                    answer = {"ok": True, "file_id": fid, "upload_url": f"{origin}/upload/{fid}"}
                elif method == "files.completeUploadExternal":
                    answer = {"ok": True, "files": json.loads(params["files"])}
                else:
                    answer = {"ok": False, "error": "unknown_method"}
                self._answer(json.dumps(answer).encode(), "application/json")

            def _answer(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.base_url = f"{origin}/api/"
        import threading  # noqa: PLC0415

        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def variant_upload(work: Path, streamed: bool) -> dict[str, Any]:
    from slack_sdk.web import WebClient  # noqa: PLC0415

    from trailseal.slackapp.upload import Upload, share_files  # noqa: PLC0415

    kept = work.parent / "report-files"
    if not kept.is_dir():
        raise SystemExit("the upload variants need the report variant to run first")
    paths = sorted(p for p in kept.iterdir() if p.name != "rows.txt")
    sink = _SlackSink()
    web = WebClient(token="xoxb-bench", base_url=sink.base_url)
    if streamed:
        share_files(web, [Upload(p, p.name) for p in paths], "C1", None, "benchmark")
    else:
        uploads = [{"file": str(p), "filename": p.name, "title": p.name} for p in paths]
        web.files_upload_v2(file_uploads=uploads, channel="C1", initial_comment="benchmark")
    sink.server.shutdown()
    sent = sum(p.stat().st_size for p in paths)
    if sum(sink.received.values()) != sent:
        raise SystemExit(f"the sink received {sink.received}, not {sent:,} bytes")
    return {"rows": int((kept / "rows.txt").read_text()), "bytes": sent, "upload": True}


def child(variant: str, data: Path, work: Path) -> None:
    """Run one variant on a private copy of the search index; print its numbers as JSON."""
    work.mkdir(parents=True, exist_ok=True)
    if variant.startswith("upload"):  # no service: the peak is the upload's own
        t0 = time.perf_counter()
        result = variant_upload(work, streamed=variant == "upload_stream")
        result["seconds"] = time.perf_counter() - t0
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    service, _ = Service.open(data)
    if variant == "report_query":  # a fresh index, so its catch-up is measured
        service.search_index.close()
        service.search_index = SearchIndex(work / "search.db")
    if variant == "narrow_query":  # the service's own index, caught up before the clock
        t0 = time.perf_counter()
        service.search_index.catch_up(service.ledger(service.registry.log("default", "default")))
        catch_up_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if variant in ("naive_csv", "stream_csv"):
        result = variant_csv(service, work, naive=variant == "naive_csv")
    elif variant == "verify_bundle":
        result = variant_verify(service, work)
    elif variant.startswith("narrow"):
        result = variant_report(service, work, query=variant == "narrow_query", narrow=True)
        result.pop("index_catch_up_s", None)
        if variant == "narrow_query":
            result["index_catch_up_before_s"] = catch_up_s
    else:
        result = variant_report(service, work, query=variant == "report_query")
    result["seconds"] = time.perf_counter() - t0
    service.close()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(variant: str, data: Path, work: Path) -> dict[str, Any]:
    log(f"running {variant}")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--data", str(data), "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 5,000 rows")
    p.add_argument("--rows", type=int, default=1_000_000, help="events in the log")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child, args.data, args.work)
        return 0
    n = 5000 if args.quick else args.rows
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    data = args.cache_dir / f"audit-export-{n}"
    info: dict[str, Any] = {"machine": machine_info(args.cache_dir.parent)}
    measurements: dict[str, dict[str, Any]] = {}
    if cached(data, n):
        log(f"reusing the log of {n:,} events in {data}")
    else:
        log(f"building a log of {n:,} events in {data}")
        seconds = build_log(data, n)
        measurements["build.seconds"] = {"value": seconds, "unit": "s"}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        for variant in variants:
            results[variant] = run_child(variant, data, Path(tmp) / variant)
    for variant, r in results.items():
        measurements[f"{variant}.rows"] = {"value": r["rows"], "unit": "rows"}
        measurements[f"{variant}.rows_per_s"] = {
            "value": r["rows"] / r["seconds"],
            "unit": "rows/s",
        }
        measurements[f"{variant}.seconds"] = {"value": r["seconds"], "unit": "s"}
        measurements[f"{variant}.peak_rss_mb"] = {"value": r["peak_rss_mb"], "unit": "MB"}
        measurements[f"{variant}.output_bytes"] = {"value": r["bytes"], "unit": "bytes"}
        extras = ("json_bytes", "bundle_bytes", "index_catch_up_s", "report_s")
        for key in (*extras, "index_catch_up_before_s"):
            if key in r:
                unit = "s" if key.endswith("_s") else "bytes"
                measurements[f"{variant}.{key}"] = {"value": r[key], "unit": unit}
    info["machine"]["loadavg_at_end"] = load_average()
    info["wall_seconds"] = time.perf_counter() - started
    doc = {
        "config": {"quick": args.quick, "rows": n, "variants": variants},
        "machine": info["machine"],
        "measurements": measurements,
        "wall_seconds": info["wall_seconds"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(results, n, info)
    return 0


def print_table(results: dict[str, dict[str, Any]], n: int, info: dict[str, Any]) -> None:
    machine = info["machine"]
    print(f"trailseal audit export, {n:,} events in the log")
    print(
        f"  {machine['date']}  python {machine['python']}  sqlite {machine['sqlite_version']}  "
        f"{machine['cpu_count']} cpus  load average {machine['loadavg_at_start']} at start, "
        f"{machine['loadavg_at_end']} at end"
    )
    print()
    print(f"{'variant':<15}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak RSS MB':>13}  output")
    for variant, r in results.items():
        out = f"csv {r['bytes'] / 1e6:,.0f} MB"
        if "bundle_bytes" in r:
            out += (
                f", json {r['json_bytes'] / 1e6:,.0f} MB, bundle {r['bundle_bytes'] / 1e6:,.0f} MB"
            )
        if variant == "verify_bundle":
            out = f"bundle {r['bytes'] / 1e6:,.0f} MB"
        if "upload" in r:
            out = f"uploaded {r['bytes'] / 1e6:,.0f} MB (the report's four files)"
        if "index_catch_up_before_s" in r:
            out += (
                f" (index caught up before: {r['index_catch_up_before_s']:.1f} s, not in the time)"
            )
        if "index_catch_up_s" in r:
            out += f" (index catch-up {r['index_catch_up_s']:.1f} s, in the time)"
        print(
            f"{variant:<15}{r['rows']:>12,}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>12,.0f}"
            f"{r['peak_rss_mb']:>13,.0f}  {out}"
        )
    print(f"wall time: {info['wall_seconds']:.1f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
