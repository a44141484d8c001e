"""Smoke test of the benchmark suite: ``benchmarks/run.py --quick`` runs and reports everything.

No timing thresholds: a slow machine is not a failing test. The run takes a few seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_dsn

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

pytest.importorskip(
    "pymerkle", reason="the benchmarks compare against pymerkle: pip install -e '.[bench]'"
)

BATCHES = (1000, 100)
PROOF_SIZE = 10_000  # the only proof size in --quick mode

EXPECTED = [
    "workload.entries",
    "workload.canonical_bytes_mean",
    "workload.canonical_bytes_min",
    "workload.canonical_bytes_max",
    "prepare.rate",
    "storage.tree_bytes_per_entry",
    f"proofs.{PROOF_SIZE}.build_seconds",  # a fresh --cache-dir: the log is built
    f"proofs.{PROOF_SIZE}.build_append_rate",
    f"proofs.{PROOF_SIZE}.db_bytes_per_entry",
]
for _b in BATCHES:
    EXPECTED += [
        f"append.batch{_b}.{name}"
        for name in (
            "floor_sqlite",
            "ledger_append",
            "ledger_append_prepared",
            "pymerkle_sqlite",
            "pymerkle_sqlite_with_root",
            "ratio_append_vs_floor",
            "ratio_prepared_vs_floor",
            "ratio_append_vs_pymerkle",
            "ratio_prepared_vs_pymerkle",
        )
    ]
    EXPECTED += [
        f"storage.batch{_b}.{name}"
        for name in (
            "ledger_bytes_per_entry",
            "floor_bytes_per_entry",
            "pymerkle_bytes_per_entry",
            "ratio_vs_canonical",
            "ratio_vs_floor",
            "ratio_vs_canonical_plus_tree",
        )
    ]
    EXPECTED.append(f"verify.batch{_b}.rate")
for _kind in ("inclusion", "consistency"):
    for _mode in ("cold", "warm"):
        for _stat in ("p50", "p99", "mean"):
            EXPECTED.append(f"proofs.{PROOF_SIZE}.{_kind}.{_mode}.{_stat}")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "x.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out), "--cache-dir", str(tmp / "cache")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text()), proc.stdout


def test_every_measurement_is_present_and_positive(quick_run: tuple[dict, str]) -> None:
    doc, _ = quick_run
    measurements = doc["measurements"]
    missing = [k for k in EXPECTED if k not in measurements]
    assert not missing, f"missing measurements: {missing}"
    for key, entry in measurements.items():
        value = entry["value"]
        assert isinstance(value, int | float), key
        assert not isinstance(value, bool), key
        assert math.isfinite(value), f"{key} = {value!r}"
        assert value > 0, f"{key} = {value!r}"
        assert isinstance(entry["unit"], str), key
        assert entry["unit"], key


def test_machine_info_and_config(quick_run: tuple[dict, str]) -> None:
    doc, _ = quick_run
    machine = doc["machine"]
    for key in ("python", "cpu_count", "platform", "sqlite_version", "date"):
        assert machine.get(key), key
    assert doc["config"]["quick"] is True
    assert doc["config"]["proof_sizes"] == [PROOF_SIZE]
    assert doc["measurements"]["workload.entries"]["value"] == 5000


def test_table_is_printed(quick_run: tuple[dict, str]) -> None:
    _, stdout = quick_run
    for key in ("append.batch1000.ledger_append", "verify.batch1000.rate", "wall time"):
        assert key in stdout


PG = "postgres."
EXPECTED_PG = [
    f"{PG}proofs.{PROOF_SIZE}.build_seconds",  # --pg-no-cache: built in the run's schema
    f"{PG}proofs.{PROOF_SIZE}.build_append_rate",
    f"{PG}proofs.{PROOF_SIZE}.db_bytes_per_entry",
]
for _b in BATCHES:
    EXPECTED_PG += [
        f"{PG}append.batch{_b}.{name}"
        for name in (
            "floor_postgres",
            "ledger_append",
            "ledger_append_prepared",
            "ratio_append_vs_floor",
            "ratio_prepared_vs_floor",
            "ratio_append_vs_sqlite",
            "ratio_prepared_vs_sqlite",
        )
    ]
    EXPECTED_PG += [
        f"{PG}storage.batch{_b}.{name}"
        for name in ("ledger_bytes_per_entry", "floor_bytes_per_entry", "ratio_vs_floor")
    ]
    EXPECTED_PG.append(f"{PG}verify.batch{_b}.rate")
for _kind in ("inclusion", "consistency"):
    for _mode in ("cold", "warm"):
        for _stat in ("p50", "p99", "mean"):
            EXPECTED_PG.append(f"{PG}proofs.{PROOF_SIZE}.{_kind}.{_mode}.{_stat}")


def schemas_starting_with(prefix: str) -> list[str]:
    import psycopg

    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def run_on_postgres(script: Path, tmp_path: Path, *args: str) -> tuple[dict, str]:
    """Run a benchmark script with ``args`` against the tests' PostgreSQL (skipping, with
    the reason, when it is unreachable); its JSON and its stdout."""
    dsn = postgres_dsn()
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            *args,
            "--postgres-dsn",
            dsn,
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text()), proc.stdout


def assert_present_and_positive(measurements: dict, keys: list[str]) -> None:
    missing = [k for k in keys if k not in measurements]
    assert not missing, f"missing measurements: {missing}"
    for key in keys:
        value = measurements[key]["value"]
        assert math.isfinite(value), f"{key} = {value!r}"
        assert value > 0, f"{key} = {value!r}"


def test_postgres_beside_sqlite_quick_reports_everything(tmp_path: Path) -> None:
    """``run.py --quick --storage sqlite,postgres``: every PostgreSQL measurement next to
    its SQLite twin, the side-by-side table printed, and the run's schemas dropped."""
    doc, stdout = run_on_postgres(
        RUN, tmp_path, "--quick", "--storage", "sqlite,postgres", "--pg-no-cache"
    )
    measurements = doc["measurements"]
    assert_present_and_positive(measurements, EXPECTED_PG)
    for key in EXPECTED_PG:
        twin = key.removeprefix(PG).replace("floor_postgres", "floor_sqlite")
        if "ratio" not in key and "build" not in key and "db_bytes" not in key:
            assert twin in measurements, f"{key} has no SQLite twin {twin}"
    assert doc["config"]["storage"] == ["sqlite", "postgres"]
    settings = doc["postgres"]
    for key in ("server_version", "fsync", "synchronous_commit"):
        assert settings[key], key
    assert "SQLite and PostgreSQL, same run" in stdout
    assert schemas_starting_with(settings["run_schema_prefix"] + "_") == []


def test_unknown_storage_is_refused_with_the_choices() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--storage", "postgres"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "sqlite or sqlite,postgres" in proc.stderr


HTTP_RUN = ROOT / "benchmarks" / "http_ingest.py"
HTTP_CLIENTS = (1, 8)  # --quick
HTTP_MODES = ("single", "batch100", "batch1000")


def test_http_ingest_quick_reports_everything(tmp_path: Path) -> None:
    """``benchmarks/http_ingest.py --quick``: a real server, every row measured and positive."""
    out = tmp_path / "http.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(HTTP_RUN),
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["config"]["quick"] is True
    assert doc["config"]["clients"] == list(HTTP_CLIENTS)
    assert doc["server_exit_status"] == 0
    expected = [
        "library.ledger_append.batch1000.events_per_s",
        "library.service_ingest.batch1000.events_per_s",
        "library.service_ingest.single.events_per_s",
        "server_log.entries",
        "server_log.verify_seconds",
    ]
    for mode in HTTP_MODES:
        for n in HTTP_CLIENTS:
            expected += [
                f"http.{mode}.c{n}.{stat}"
                for stat in ("events_per_s", "p50_ms", "p99_ms", "mean_ms", "requests")
            ]
    measurements = doc["measurements"]
    missing = [k for k in expected if k not in measurements]
    assert not missing, f"missing measurements: {missing}"
    for key, entry in measurements.items():
        value = entry["value"]
        assert isinstance(value, int | float), key
        assert not isinstance(value, bool), key
        assert math.isfinite(value), f"{key} = {value!r}"
        assert value > 0, f"{key} = {value!r}"
        assert entry["unit"], key
    for key in ("single_events_per_s", "batched_events_per_s", "single_p50_ms"):
        assert key in doc["targets"]
    for text in ("single", "batch1000", "Ledger.append", "events/s", "wall time"):
        assert text in proc.stdout


def test_http_ingest_postgres_targets_quick(tmp_path: Path) -> None:
    """``http_ingest.py --quick --targets sqlite,pg1,pg2``: the same load on one SQLite
    node, one PostgreSQL node and two PostgreSQL nodes; every row measured, every store
    checked, part of pg2's writes queued for the other node, the run's schemas dropped."""
    doc, stdout = run_on_postgres(
        HTTP_RUN, tmp_path, "--quick", "--targets", "sqlite,pg1,pg2", "--batch-sizes", "100"
    )
    assert doc["config"]["targets"] == ["sqlite", "pg1", "pg2"]
    assert doc["server_exit_statuses"] == {"sqlite": [0], "pg1": [0], "pg2": [0, 0]}
    assert doc["stores"]["pg2"]["nodes"] == 2
    measurements = doc["measurements"]
    expected = []
    for prefix in ("", "pg1.", "pg2."):
        expected += [f"{prefix}server_log.entries", f"{prefix}server_log.verify_seconds"]
        for mode in ("single", "batch100"):
            for n in HTTP_CLIENTS:
                expected += [
                    f"{prefix}http.{mode}.c{n}.{stat}"
                    for stat in ("events_per_s", "p50_ms", "p99_ms", "mean_ms", "requests")
                ]
    expected += ["pg2.server_log.queued_entries", "pg2.server_log.queued_share"]
    assert_present_and_positive(measurements, expected)
    assert measurements["pg2.server_log.queued_share"]["value"] < 1
    for text in ("pg1", "pg2", "vs sqlite", "pending queue"):
        assert text in stdout
    assert schemas_starting_with(doc["postgres"]["run_schema_prefix"] + "_") == []


SLACK_RUN = ROOT / "benchmarks" / "slack_ingest.py"


def test_slack_ingest_quick_reports_everything(tmp_path: Path) -> None:
    """``benchmarks/slack_ingest.py --quick``: signed Slack deliveries and plain events
    against a real server, every row measured and positive, the store checked."""
    out = tmp_path / "slack.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SLACK_RUN),
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["config"]["quick"] is True
    assert doc["config"]["clients"] == list(HTTP_CLIENTS)
    assert doc["server_exit_status"] == 0
    expected = [
        "inprocess.verify_slack_request.per_s",
        "inprocess.verify_slack_request.us",
        "inprocess.verify_slack_request_rotation.per_s",
        "inprocess.parse_and_map.per_s",
        "inprocess.map_event_callback.per_s",
        "server_log.entries",
        "server_log.slack_events",
        "server_log.plain_events",
        "server_log.verify_seconds",
    ]
    for n in HTTP_CLIENTS:
        expected.append(f"ratio.slack_vs_plain.c{n}")
        for mode in ("slack", "plain"):
            expected += [
                f"http.{mode}.c{n}.{stat}"
                for stat in ("events_per_s", "p50_ms", "p99_ms", "mean_ms", "requests")
            ]
    measurements = doc["measurements"]
    missing = [k for k in expected if k not in measurements]
    assert not missing, f"missing measurements: {missing}"
    for key, entry in measurements.items():
        value = entry["value"]
        assert isinstance(value, int | float), key
        assert not isinstance(value, bool), key
        assert math.isfinite(value), f"{key} = {value!r}"
        assert value > 0, f"{key} = {value!r}"
        assert entry["unit"], key
    for text in ("slack ev/s", "plain ev/s", "verify_slack_request", "wall time"):
        assert text in proc.stdout


AUDIT_RUN = ROOT / "benchmarks" / "audit_export.py"
AUDIT_VARIANTS = (
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


def test_audit_export_quick_reports_everything(tmp_path: Path) -> None:
    """``benchmarks/audit_export.py --quick``: every variant in its own process, every
    row counted, rate and peak memory measured and positive."""
    out = tmp_path / "audit.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(AUDIT_RUN),
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["config"] == {"quick": True, "rows": 5000, "variants": list(AUDIT_VARIANTS)}
    measurements = doc["measurements"]
    narrow = measurements["narrow_scan.rows"]["value"]
    assert 0 < narrow < 5000
    assert measurements["narrow_query.rows"]["value"] == narrow  # the same channel both ways
    for variant in AUDIT_VARIANTS:
        if not variant.startswith("narrow"):
            assert measurements[f"{variant}.rows"]["value"] == 5000, variant
        for stat in ("rows_per_s", "seconds", "peak_rss_mb", "output_bytes"):
            value = measurements[f"{variant}.{stat}"]["value"]
            assert math.isfinite(value), f"{variant}.{stat}"
            assert value > 0, f"{variant}.{stat}"
    assert measurements["report_query.index_catch_up_s"]["value"] > 0
    # Both uploads sent the report variant's files, every byte (the sink checks the sum).
    sent = {measurements[f"upload_{v}.output_bytes"]["value"] for v in ("sdk", "stream")}
    assert len(sent) == 1, sent
    for text in ("naive_csv", "stream_csv", "upload_stream", "peak RSS MB", "wall time"):
        assert text in proc.stdout


PROOFS_RUN = ROOT / "benchmarks" / "http_proofs.py"
PROOF_MODES = ("inclusion", "consistency", "tile")
PROOF_STATS = ("requests_per_s", "p50_ms", "p99_ms", "mean_ms", "requests", "verified")


def proof_keys(prefix: str) -> list[str]:
    keys = [
        f"{prefix}{name}"
        for name in (
            "fill.entries",
            "fill.seconds",
            "fill.entries_per_s",
            "server_log.entries",
            "server_log.access_events",
            "server_log.verify_seconds",
        )
    ]
    for mode in PROOF_MODES:
        for n in HTTP_CLIENTS:
            keys += [f"{prefix}http.{mode}.c{n}.{stat}" for stat in PROOF_STATS]
    return keys


def check_proof_run(doc: dict, stdout: str, prefixes: list[str]) -> None:
    """Every row measured and some of its answers verified; each log holds the filled
    entries and one access event per proof answered (the script checked the count)."""
    assert doc["config"]["quick"] is True
    assert doc["config"]["entries"] == 5000
    assert doc["server_exit_status"] == 0
    measurements = doc["measurements"]
    for prefix in prefixes:
        assert_present_and_positive(measurements, proof_keys(prefix))
        entries = measurements[f"{prefix}server_log.entries"]["value"]
        access = measurements[f"{prefix}server_log.access_events"]["value"]
        assert entries == 5000 + access
    for text in ("inclusion", "consistency", "tile", "req/s", "access events", "wall time"):
        assert text in stdout


def test_http_proofs_quick_reports_everything(tmp_path: Path) -> None:
    """``benchmarks/http_proofs.py --quick`` on SQLite: proofs and tiles from a real server."""
    out = tmp_path / "proofs.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROOFS_RUN),
            "--quick",
            "--seconds",
            "1",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["config"]["targets"] == ["sqlite"]
    check_proof_run(doc, proc.stdout, [""])


def test_http_proofs_postgres_quick(tmp_path: Path) -> None:
    """``http_proofs.py --quick --targets sqlite,pg1``: the same proofs from one
    PostgreSQL node beside SQLite, and the run's schemas dropped."""
    doc, stdout = run_on_postgres(
        PROOFS_RUN, tmp_path, "--quick", "--seconds", "1", "--targets", "sqlite,pg1"
    )
    assert doc["config"]["targets"] == ["sqlite", "pg1"]
    check_proof_run(doc, stdout, ["", "pg1."])
    assert "vs sqlite" in stdout
    assert schemas_starting_with(doc["postgres"]["run_schema_prefix"] + "_") == []
