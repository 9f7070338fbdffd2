"""The HTTP plumbing the marketplace simulators share: keep-alive, no Nagle delay, JSON answers."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class JsonHandler(BaseHTTPRequestHandler):
    """Base request handler: HTTP/1.1 keep-alive, JSON bodies, extra headers, request lines only in the log."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    content_type = "application/json"
    """Media type of the JSON answers (a simulator may use its API's vendor type)."""

    def do_GET(self) -> None:
        with self._counted():
            self._dispatch("GET")

    def do_POST(self) -> None:
        with self._counted():
            self._dispatch("POST")

    def do_PUT(self) -> None:
        with self._counted():
            self._dispatch("PUT")

    @contextmanager
    def _counted(self) -> Iterator[None]:
        stats = getattr(self.server, "stats", None)
        if stats is None:
            yield
            return
        with stats.request(f"{self.command} {self.path.split('?', 1)[0]}"):
            yield

    def _dispatch(self, method: str) -> None:
        """Route one request; simulators override this."""
        self._send(405, {"error": f"{method} is not supported here"})

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only (no headers), so tokens never reach the log.
        log.debug("%s: " + format, self.server_version, *args)

    def _send(
        self,
        status: int,
        document: Any,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(document, ensure_ascii=False).encode("utf-8")
        self._raw(status, data, content_type or self.content_type, headers)

    def _raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class RequestStats:
    """Requests a simulator is answering right now, the most at once, and when each ran.

    A test reads these to see what the marketplace saw: e.g. that a pool kept one marketplace's tasks
    from calling it concurrently. ``intervals`` keeps the last 10,000 ``(path, start, end)`` (monotonic).
    """

    in_flight: int = 0
    max_in_flight: int = 0
    total: int = 0
    intervals: deque[tuple[str, float, float]] = field(default_factory=lambda: deque(maxlen=10_000))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def request(self, path: str) -> Iterator[None]:
        start = time.monotonic()
        with self.lock:
            self.in_flight += 1
            self.total += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1
                self.intervals.append((path, start, time.monotonic()))

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.total = 0
            self.intervals.clear()


class SimulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that carries one simulator for its handlers, and counts their requests."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Any, handler: type[JsonHandler]) -> None:
        self.simulator = simulator
        self.stats = RequestStats()
        super().__init__(address, handler)
