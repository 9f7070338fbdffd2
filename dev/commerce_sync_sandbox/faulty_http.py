"""An HTTP feed server on 127.0.0.1 that misbehaves on request, for transport tests and demos.

Each path serves a :class:`Served` body with an ``ETag`` and ``Last-Modified`` (conditional GET
answers ``304``), and can be told to fail the way real supplier servers do:

* ``fail_first``: answer ``503`` with ``Retry-After: 0`` this many times first;
* ``drop_after``: send the headers and this many body bytes, then close the connection;
* ``short_by``: announce ``Content-Length`` this many bytes larger than the body sent (truncated);
* ``ignore_conditional``: always answer 200 (a server that ignores ``If-None-Match``).

Each fault counts down per request when ``faults_left`` is set, so "fails twice then works" is one line.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """What one path answers; tests change it between requests."""

    body: bytes
    content_type: str = "application/xml"
    etag: bool = True
    ignore_conditional: bool = False
    fail_first: int = 0
    drop_after: int | None = None
    short_by: int = 0
    faults_left: int | None = None  # None: drop/short faults apply to every request
    modified: float = 1_700_000_000.0

    def tag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


@dataclass
class FaultyHttpServer:
    """The running server: ``base_url``, the ``files`` it serves and the ``requests`` it saw."""

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    base_url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> FaultyHttpServer:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                state.requests.append((self.path, dict(self.headers)))
                served = state.files.get(self.path)
                if served is None:
                    self._head(404, 9, {})
                    self.wfile.write(b"not found")
                    return
                if served.fail_first > 0:
                    served.fail_first -= 1
                    self._head(503, 4, {"Retry-After": "0"})
                    self.wfile.write(b"busy")
                    return
                headers = {
                    "Content-Type": served.content_type,
                    "Last-Modified": formatdate(served.modified, usegmt=True),
                }
                if served.etag:
                    headers["ETag"] = served.tag()
                    if not served.ignore_conditional and self.headers.get("If-None-Match") == served.tag():
                        self._head(304, None, headers)
                        return
                faulty = served.faults_left is None or served.faults_left > 0
                if faulty and served.faults_left is not None and (served.drop_after is not None or served.short_by):
                    served.faults_left -= 1
                body = served.body
                if faulty and served.drop_after is not None:
                    self._head(200, len(body), headers, close=True)
                    self.wfile.write(body[: served.drop_after])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # mid-body: the client sees the connection drop
                    return
                extra = served.short_by if faulty else 0
                self._head(200, len(body) + extra, headers, close=bool(extra))
                self.wfile.write(body)

            def _head(self, status: int, length: int | None, headers: dict[str, str], close: bool = False) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="faulty-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultyHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
