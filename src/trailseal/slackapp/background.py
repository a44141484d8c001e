"""The app's background work: everything slower than Slack's 3-second acknowledgement.

Handlers acknowledge first and hand Slack calls and report generation to this pool. A
failed job is logged by its exception class only (messages may quote Slack data) and
never takes a worker down; :meth:`Background.wait_idle` lets tests and shutdown wait
until the queue is empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LOGGER = logging.getLogger("trailseal.slackapp")


class Background:
    """A small thread pool that counts its unfinished jobs."""

    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slackapp")
        self._busy = 0
        self._idle = threading.Condition()

    def submit(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker; ``name`` labels it in the logs."""
        with self._idle:
            self._busy += 1

        def run() -> None:
            try:
                fn(*args)
            except Exception as e:
                LOGGER.error(
                    "slack app background job failed",
                    extra={"job": name, "error": type(e).__name__},
                    exc_info=LOGGER.isEnabledFor(logging.DEBUG),
                )
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        try:
            self._pool.submit(run)
        except RuntimeError:  # shut down: nothing will run it
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            raise

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no job is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout_s)

    def close(self, *, cancel_queued: bool = False) -> None:
        """Stop the workers once running jobs end; queued jobs run first unless
        ``cancel_queued`` (for work that is picked up again after a restart)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel_queued)
