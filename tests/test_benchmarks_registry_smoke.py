"""Smoke test of ``benchmarks/registry.py --quick``: every call measured on both engines.

No timing thresholds. PostgreSQL's column may say why it was skipped, but only when the
test suite's own PostgreSQL is unreachable too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import POSTGRES_DSN, postgres_dsn

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "registry.py"
CALLS = ("log", "authenticate_uncached", "authenticate_cached", "create_key", "put_state")


def test_registry_quick_reports_everything(tmp_path: Path) -> None:
    out = tmp_path / "registry.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--dsn", POSTGRES_DSN, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["config"] == {"calls": 200, "threads": 8}
    assert "python" in report["machine"]
    for engine, results in report["results"].items():
        if "skipped" in results:
            assert engine == "postgres"
            postgres_dsn()  # skips this test when the suite cannot reach PostgreSQL either
            raise AssertionError(f"PostgreSQL is reachable, yet skipped: {results['skipped']}")
        for call in CALLS:
            assert 0 < results[call]["p50"] <= results[call]["p99"], (engine, call)
        assert results["log_concurrent"]["rate"] > 0
    assert "authenticate_uncached" in proc.stdout
