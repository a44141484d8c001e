"""Many concurrent writers through the HTTP API: nothing lost, nothing duplicated.

64 writers post at once, in-process, to the ASGI app (``httpx.ASGITransport``): the
requests go through the real routes, authentication and worker threads, so they meet in
the ledger's group commit exactly as a server's requests do. Afterwards the store is
checked directly (reads through the API would append access events): the tree holds
exactly the events sent, each ``(source, id)`` once, at contiguous indexes, at the index
and leaf hash its receipt named, and ``verify_log`` finds nothing wrong.

The full-size run (64 x 10,000 events) is marked ``slow`` and left out of the default
run; select it with ``pytest -m slow tests/test_service_concurrency.py``. Each test
prints its wall time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from trailseal.core.merkle import leaf_hash
from trailseal.core.note import b64decode
from trailseal.core.receipt import Receipt, verify_receipt
from trailseal.http import create_app
from trailseal.ledger import Ledger
from trailseal.service.core import Service
from trailseal.verify import verify_log

WRITERS = 64
SOURCE = "stress"
LOG = "default"
RECEIPTS_KEPT_PER_WRITER = 10
"""Receipts kept per writer (evenly spaced) and verified offline; keeping all 640,000
would hold about a gigabyte of text for the garbage collector to walk."""


def event(writer: int, n: int) -> dict[str, Any]:
    """Event ``n`` of ``writer``: its id is ``w{writer}-{n}``."""
    return {
        "id": f"w{writer}-{n}",
        "source": SOURCE,
        "action": "stress.write",
        "actor": {"type": "service", "id": f"writer-{writer}"},
        "raw": {"writer": writer, "n": n},
    }


@dataclass
class Acks:
    """What the clients were told: per event id, the index and leaf hash; some receipts."""

    receipt_every: int
    by_id: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    receipts: list[tuple[int, bytes, str]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, n: int, result: dict[str, Any]) -> None:
        self.statuses[result["status"]] += 1
        assert result["id"] not in self.by_id, f"{result['id']} acknowledged twice"
        leaf = b64decode(result["leaf_hash"], "leaf hash")
        self.by_id[result["id"]] = (result["index"], leaf)
        if n % self.receipt_every == 0:
            self.receipts.append((result["index"], leaf, result["receipt"]))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    svc, token = Service.open(tmp_path / "data")
    assert token is not None
    try:
        yield svc, token
    finally:
        svc.close()


async def _run_writers(
    service: Service, token: str, per_writer: int, batch: int | None
) -> tuple[Acks, float]:
    """64 asyncio tasks, each sending its events in batches (or one by one for None)."""
    acks = Acks(receipt_every=max(1, per_writer // RECEIPTS_KEPT_PER_WRITER))
    transport = httpx.ASGITransport(app=create_app(service))
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://trailseal.test", headers=headers, timeout=600
    ) as client:

        async def writer(w: int) -> None:
            if batch is None:
                for n in range(per_writer):
                    r = await client.post(f"/v1/logs/{LOG}/events", json=event(w, n))
                    assert r.status_code == 201, r.text
                    acks.add(n, r.json())
                return
            for start in range(0, per_writer, batch):
                events = [event(w, n) for n in range(start, min(per_writer, start + batch))]
                r = await client.post(f"/v1/logs/{LOG}/events/batch", json=events)
                assert r.status_code == 200, r.text
                results = r.json()["results"]
                assert [x["id"] for x in results] == [e["id"] for e in events]
                for n, x in enumerate(results, start=start):
                    acks.add(n, x)

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        return acks, time.perf_counter() - started


def _check_store(ledger: Ledger, acks: Acks, per_writer: int) -> None:
    """The store, read directly: exactly the events sent, once each, where acknowledged."""
    expected = WRITERS * per_writer
    storage, log_id = ledger.storage, ledger.log.id
    # Nothing but the writers' events was appended (no access events, no retries).
    assert ledger.tree_size() == expected
    assert storage.entry_count(log_id) == expected
    assert acks.statuses == Counter({"appended": expected})
    assert len(acks.by_id) == expected

    keys: Counter[tuple[str | None, str | None]] = Counter()
    indexes = []
    for entry in storage.read_entries(log_id, 0, expected + 1):
        indexes.append(entry.index)
        keys[(entry.source, entry.event_id)] += 1
        acked_index, acked_leaf = acks.by_id[str(entry.event_id)]
        assert acked_index == entry.index, f"{entry.event_id} moved"
        assert acked_leaf == leaf_hash(entry.data), f"{entry.event_id}: leaf hash differs"
        record = orjson.loads(entry.data)
        assert (record["source"], record["id"]) == (entry.source, entry.event_id)
    assert indexes == list(range(expected)), "indexes are not contiguous"
    repeated = [k for k, c in keys.items() if c != 1]
    assert not repeated, f"stored more than once: {repeated[:10]}"
    want = {(SOURCE, f"w{w}-{n}") for w in range(WRITERS) for n in range(per_writer)}
    assert set(keys) == want, f"lost: {sorted(want - set(keys))[:10]}"
    for w in range(WRITERS):
        assert storage.find_entry(log_id, SOURCE, f"w{w}-{per_writer - 1}") is not None

    verifiers = ledger.verifiers()
    assert len(acks.receipts) == WRITERS * RECEIPTS_KEPT_PER_WRITER
    for index, leaf, text in acks.receipts:
        receipt = Receipt.from_text(text)
        assert receipt.index == index
        verify_receipt(receipt, verifiers, origin=ledger.origin, entry_leaf_hash=leaf)

    report = verify_log(ledger, verifiers)
    assert report.ok, "\n".join(p.describe() for p in report.problems[:5])
    assert report.tree_size == report.entries_checked == expected


def _run(
    service: tuple[Service, str],
    capsys: pytest.CaptureFixture[str],
    per_writer: int,
    batch: int | None,
) -> None:
    svc, token = service
    acks, seconds = asyncio.run(_run_writers(svc, token, per_writer, batch))
    ledger = svc.ledger(svc.registry.log("default", LOG))
    checked = time.perf_counter()
    _check_store(ledger, acks, per_writer)
    check_seconds = time.perf_counter() - checked
    total = WRITERS * per_writer
    kind = "single events" if batch is None else f"batches of {batch}"
    with capsys.disabled():
        print(
            f"\n  {WRITERS} writers x {per_writer} events ({kind}): {total} events in "
            f"{seconds:.1f} s = {total / seconds:,.0f} events/s; checks {check_seconds:.1f} s"
        )


def test_64_writers_batched(
    service: tuple[Service, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _run(service, capsys, per_writer=1000, batch=100)


def test_64_writers_single_events(
    service: tuple[Service, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _run(service, capsys, per_writer=200, batch=None)


@pytest.mark.slow
def test_64_writers_batched_full_size(
    service: tuple[Service, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _run(service, capsys, per_writer=10_000, batch=100)
