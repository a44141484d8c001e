"""``benchmarks/slack_app.py`` runs and reports every request kind (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "slack_app.json"
    script = str(ROOT / "benchmarks" / "slack_app.py")
    done = subprocess.run(
        [sys.executable, script, "--requests", "3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results_ms"]
    assert set(results) == {"help", "status", "submit", "invalid", "click", "decided"}
    for kind, r in results.items():
        assert r["n"] == 3, kind
        assert r["p50"] > 0, kind
    assert "decided" in done.stdout
