"""The /audit app's answer times: what Slack waits for (it gives up after 3 seconds).

Run from the repository root::

    .venv/bin/python benchmarks/slack_app.py            # 200 of each request
    .venv/bin/python benchmarks/slack_app.py --quick    # 20 of each

In one process: the ASGI app (``trailseal.http.create_app``, driven in-process like the
test suite) with the /audit app configured, a fake Slack Web API on 127.0.0.1 (the test
suite's, which records every call), and a scratch data directory. Each request is signed
like Slack signs it. Measured per kind, from sending the request to having the answer:

- ``help``: ``/audit help`` (answered from memory);
- ``status``: ``/audit status`` with N requests in the log (read back through the
  search index);
- ``submit``: a valid form submission (checked, then ``audit.requested`` durable before
  the answer);
- ``invalid``: a form with errors (answered inline, nothing written);
- ``click``: an approver's Deny click (acknowledged; the decision runs after);

and ``decided``: from the click to the approvers' message updated in the fake Slack (the
background work the 3-second rule pushes out of the request). Results: a table on
stdout, JSON in ``--out`` (default ``benchmarks/results/slack_app.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake Slack and the signed-request helpers of the tests

from tests.http.support import FixedClock  # noqa: E402
from tests.slackapp.fake_slack import FakeSlack  # noqa: E402
from tests.slackapp.harness import APPROVER, NOW, REQUESTER, build, close  # noqa: E402

from http_ingest import load_average, machine_info, percentiles_ms  # noqa: E402
from trailseal.slackapp.messages import ACTION_DENY  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "slack_app.json"


def timed(samples: list[float], call: Any) -> Any:
    t0 = time.perf_counter()
    result = call()
    samples.append(time.perf_counter() - t0)
    return result


def run(n: int) -> dict[str, dict[str, float]]:
    scratch = Path(tempfile.mkdtemp(prefix="trailseal-slack-app-"))
    samples: dict[str, list[float]] = {
        k: [] for k in ("help", "status", "submit", "invalid", "click", "decided")
    }
    try:
        with FakeSlack() as fake:
            h = build(scratch / "data", fake, FixedClock(NOW))
            try:
                rids = []
                for _ in range(n):
                    timed(samples["help"], lambda: h.command("help"))
                    r = timed(samples["submit"], lambda: h.submit(REQUESTER))
                    assert r.json()["response_action"] == "update", r.text
                    r = timed(samples["invalid"], lambda: h.submit(REQUESTER, purpose="x"))
                    assert r.json()["response_action"] == "errors", r.text
                    timed(samples["status"], lambda: h.command("status"))
                    h.settle()
                    rids.append(str(h.events()[-1]["correlation"]["id"]))
                for rid in rids:
                    updates = sum(m.updates for m in fake.messages)
                    t0 = time.perf_counter()
                    timed(samples["click"], lambda rid=rid: h.click(ACTION_DENY, rid, APPROVER))
                    h.settle()
                    assert sum(m.updates for m in fake.messages) == updates + 1
                    samples["decided"].append(time.perf_counter() - t0)
                h.assert_log_verifies()
            finally:
                close(h)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {k: {**percentiles_ms(v), "n": len(v)} for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 of each request instead of 200")
    p.add_argument("--requests", type=int, help="requests of each kind (default 200)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    n = args.requests or (20 if args.quick else 200)
    load_before = load_average()
    results = run(n)
    print(f"/audit app, {n} of each request, in-process ASGI + fake Slack on 127.0.0.1")
    print(f"{'request':<10}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for kind, r in results.items():
        print(f"{kind:<10}{r['p50']:>10.1f}{r['p99']:>10.1f}{r['mean']:>10.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "schema": 1,
                "requests_each": n,
                "results_ms": results,
                "load_average": {"before": load_before, "after": load_average()},
                "machine": machine_info(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
