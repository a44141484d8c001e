"""The wire: a :class:`Session` sends the API's requests with the bearer API key (which
no repr shows), retries what may pass later with exponential backoff and jitter,
honouring ``Retry-After`` (capped), and turns error answers into a :class:`ClientError`.

Connection errors, 429, 502, 503 and 504 are retried; other 4xx never are. Also here:
``_IN_CLIENT``, which tells the :class:`AuditLogHandler` that a log record was caused by
the client's own request.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final

import httpx
import orjson

from trailseal.client.errors import (
    ClientConnectionError,
    ClientError,
    ClientProtocolError,
    _error_from,
    _retry_after,
)

LOGGER = logging.getLogger("trailseal.client")

JSON: Final = "application/json"
PURPOSE_HEADER: Final = "X-Trailseal-Purpose"
USER_AGENT: Final = "trailseal-python-client"

RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


class _CallerState(threading.local):
    active: bool = False


_IN_CLIENT = _CallerState()
"""Set while this thread is inside a client request: log records it causes are not audited."""


class _BearerAuth(httpx.Auth):
    """``Authorization: Bearer <key>``; its repr never shows the key."""

    __slots__ = ("_header",)

    def __init__(self, api_key: str) -> None:
        self._header = f"Bearer {api_key}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class Session:
    """The connections to one server and the retry policy of every request to it.

    The retry settings are read at each request, so changing them takes effect at once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        retry_after_cap_s: float,
        transport: httpx.BaseTransport | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        rng: random.Random | None,
    ) -> None:
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_after_cap_s = retry_after_cap_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self.http = httpx.Client(
            base_url=base_url,
            auth=_BearerAuth(api_key),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": JSON},
        )
        self.closed = False

    def close(self) -> None:
        """Refuse further requests and release the connections."""
        self.closed = True
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        purpose: str | None = None,
    ) -> httpx.Response:
        """Send with retries; a 2xx response or a :class:`ClientError`."""
        if self.closed:
            raise ClientError("the client is closed")
        headers = {}
        if body is not None:
            headers["Content-Type"] = JSON
        if purpose is not None:
            headers[PURPOSE_HEADER] = purpose
        attempt = 0
        while True:
            response, failure, fatal = self._send_once(method, path, params, body, headers)
            if fatal is not None:
                raise fatal(f"{method} {path}: {failure}")
            if response is not None and response.status_code < 400:
                return response
            if response is not None and response.status_code not in RETRY_STATUSES:
                raise _error_from(response, method, path, self._clock)
            if attempt >= self.max_retries:
                if response is None:
                    raise ClientConnectionError(
                        f"{method} {path}: no answer after {attempt + 1} attempts: {failure}"
                    )
                raise _error_from(response, method, path, self._clock, attempts=attempt + 1)
            wait = self._retry_wait(attempt, response)
            LOGGER.debug(
                "retrying",
                extra={
                    "method": method,
                    "path": path,
                    "attempt": attempt + 1,
                    "wait_s": round(wait, 3),
                    "reason": failure or (response.status_code if response else None),
                },
            )
            self._sleep(wait)
            attempt += 1

    def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[httpx.Response | None, str, type[ClientError] | None]:
        """One attempt: the response, or why there is none and whether that is final.

        Only an httpx exception's class and message are kept: it references the request,
        whose headers carry the API key, so it is neither kept nor chained (the caller
        raises outside any except clause on purpose).
        """
        outer = _IN_CLIENT.active
        _IN_CLIENT.active = True
        try:
            response = self.http.request(method, path, params=params, content=body, headers=headers)
        except httpx.UnsupportedProtocol as e:
            return None, f"{type(e).__name__}: {e}", ClientConnectionError
        except httpx.TransportError as e:
            return None, f"{type(e).__name__}: {e}", None
        except httpx.HTTPError as e:  # undecodable body, redirect loop: retry won't help
            return None, f"{type(e).__name__}: {e}", ClientProtocolError
        finally:
            _IN_CLIENT.active = outer
        return response, "", None

    def _retry_wait(self, attempt: int, response: httpx.Response | None) -> float:
        """``Retry-After`` (capped) if the server sent one, else backoff with jitter."""
        if response is not None:
            after = _retry_after(response, self._clock)
            if after is not None:
                return min(after, self.retry_after_cap_s)
        base = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return base / 2 + self._rng.uniform(0, base / 2)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ClientProtocolError(
            f"{response.request.method} {response.request.url.path}: the answer is not "
            "a JSON object",
            status=response.status_code,
        )
    return data
