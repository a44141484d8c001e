"""The Slack Audit Logs poller, wired to a :class:`Service`, and its background thread.

:func:`build_audit_poller` gives an :class:`~trailseal.ingest.slack_audit.AuditPoller`
that appends through :meth:`Service.ingest` (as the principal ``slack:audit``, an ingest
key of the configured tenant, in chunks the service accepts) and keeps its state in
``service.db`` under ``slack.audit``. :class:`BackgroundPoller` runs a cycle every
``interval_s`` on a daemon thread; a failed cycle is logged (JSON, via
``trailseal.poller``, without secrets) and retried at the next interval, and never
reaches the server.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from trailseal.errors import Error
from trailseal.ingest.slack_audit import SOURCE
from trailseal.ingest.slack_audit_poller import (
    LOGGER,
    Append,
    AuditPoller,
    Clock,
    Fetch,
    HttpxFetch,
    PollSummary,
    Sleep,
)
from trailseal.ledger import rfc3339
from trailseal.service.core import Service
from trailseal.service.registry import Principal
from trailseal.settings import SlackAuditConfig

STATE_NAME = "slack.audit"
PRINCIPAL_ID = "slack:audit"


class PollerStoppedError(Exception):
    """Raised from a wait inside a cycle when the runner is asked to stop."""


def service_append(service: Service, principal: Principal, log: str) -> Append:
    """Append through ``service.ingest`` in chunks of at most ``max_batch_events``."""

    def append(events: list[dict[str, Any]]) -> Mapping[str, int]:
        counts: Counter[str] = Counter()
        size = max(1, service.options.max_batch_events)
        for start in range(0, len(events), size):
            for result in service.ingest(
                principal, log, events[start : start + size], default_source=SOURCE
            ):
                counts[result.status] += 1
        return dict(counts)

    return append


def build_audit_poller(
    service: Service,
    config: SlackAuditConfig,
    *,
    fetch: Fetch | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    **options: Any,
) -> AuditPoller:
    """The real poller of ``config`` for ``service`` (an httpx fetch unless one is given).

    ``options`` go to :class:`AuditPoller` (retry bounds and backoff).
    """
    principal = Principal(PRINCIPAL_ID, config.tenant, "ingest", False, internal=True)

    def save(state: dict[str, Any]) -> None:
        service.registry.put_state(STATE_NAME, state, rfc3339(service.clock()))

    return AuditPoller(
        fetch or HttpxFetch(config.token, config.base_url),
        service_append(service, principal, config.log),
        lambda: service.registry.get_state(STATE_NAME),
        save,
        clock=clock or (lambda: service.clock().timestamp()),
        limit=config.limit,
        overlap_s=config.overlap_s,
        backfill_from=config.backfill_from,
        sleep=sleep or time.sleep,
        **options,
    )


class BackgroundPoller:
    """Runs ``poll_once`` every ``interval_s`` on a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        make_poller: Callable[[Sleep], AuditPoller],
        interval_s: float,
        *,
        name: str = STATE_NAME,
        close: Callable[[], None] | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._gate = gate
        """Cycles run only while it answers True (one poller among many nodes)."""
        self._close = close
        self.poller = make_poller(self._wait)
        self.interval_s = max(0.0, interval_s)
        self.name = name
        self.cycles = 0
        self.failures = 0
        self.last_summary: PollSummary | None = None
        self._thread = threading.Thread(target=self.run, name=f"poller-{name}", daemon=True)

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise PollerStoppedError

    def start(self) -> BackgroundPoller:
        """Start the thread; returns self."""
        self._thread.start()
        LOGGER.info("poller started", extra={"poller": self.name, "interval_s": self.interval_s})
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask the thread to stop and wait for the cycle in flight (at most ``timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._close is not None and not self._thread.is_alive():
            self._close()
        LOGGER.info("poller stopped", extra={"poller": self.name, "cycles": self.cycles})

    def run_cycle(self) -> bool:
        """One cycle; every error is logged, none escapes. False if another node polls."""
        if self._gate is not None and not self._gate():
            return False
        try:
            self.last_summary = self.poller.poll_once()
            self.cycles += 1
        except PollerStoppedError:
            return True
        except Error as e:
            self.failures += 1
            LOGGER.error(
                "poll cycle failed",
                extra={"poller": self.name, "error": type(e).__name__, "detail": e.diagnostics()},
            )
        except Exception as e:  # a bug must not take the server down with it
            self.failures += 1
            LOGGER.error(
                "poll cycle failed unexpectedly",
                extra={"poller": self.name, "error": type(e).__name__, "detail": str(e)[:1000]},
            )
        return True

    def run(self) -> None:
        """The loop: a cycle, then ``interval_s`` (or until stopped)."""
        while not self._stop.is_set():
            ran = self.run_cycle()
            # Not elected (yet): look again soon, to take over quickly from a dead node.
            if self._stop.wait(self.interval_s if ran else min(self.interval_s, 1.0)):
                break


def start_audit_poller(
    service: Service, config: SlackAuditConfig, **options: Any
) -> BackgroundPoller:
    """Build the poller of ``config`` and run it in the background."""
    given: Fetch | None = options.pop("fetch", None)
    gate: Callable[[], bool] = options.pop(
        "gate", lambda: service.leads(f"slack-audit:{STATE_NAME}")
    )
    close: Callable[[], None] | None = None
    if given is None:
        real = HttpxFetch(config.token, config.base_url)
        fetch: Fetch = real
        close = real.close
    else:
        fetch = given

    def make(sleep: Sleep) -> AuditPoller:
        return build_audit_poller(service, config, fetch=fetch, sleep=sleep, **options)

    return BackgroundPoller(make, config.interval_s, close=close, gate=gate).start()


__all__ = [
    "PRINCIPAL_ID",
    "STATE_NAME",
    "BackgroundPoller",
    "build_audit_poller",
    "service_append",
    "start_audit_poller",
]
