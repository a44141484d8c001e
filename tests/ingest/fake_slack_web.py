"""A fake Slack Web API on 127.0.0.1 for tests: scripted answers, every call recorded."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeSlackWeb:
    """``calls`` lists (method, headers, json body); ``script(method, ...)`` queues answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], Any]] = []
        self._answers: dict[str, deque[tuple[int, dict[str, str], Any]]] = defaultdict(deque)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                method = self.path.rsplit("/", 1)[-1]
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode()
                fake.calls.append((method, dict(self.headers), body))
                queue = fake._answers[method]
                status, headers, answer = queue.popleft() if queue else (200, {}, {"ok": True})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/api/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def script(
        self, method: str, status: int, answer: Any, headers: dict[str, str] | None = None
    ) -> None:
        """Queue the next answer for ``method``."""
        self._answers[method].append((status, headers or {}, answer))

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
