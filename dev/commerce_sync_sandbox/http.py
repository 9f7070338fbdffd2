"""The HTTP plumbing the marketplace simulators share: keep-alive, no Nagle delay, JSON answers."""

from __future__ import annotations

import json
import logging
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
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

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


class SimulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that carries one simulator for its handlers."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Any, handler: type[JsonHandler]) -> None:
        self.simulator = simulator
        super().__init__(address, handler)
