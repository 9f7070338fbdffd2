"""A sandbox ERP REST API over the sandbox ERP database (``erp.products``), for the demo and tests.

``GET /api/products`` answers ``{"items": [...], "next_cursor": ...}`` ordered by ``updated_at, sku``:

* ``limit`` (default 100, at most 1000) rows per page;
* ``updated_since`` (ISO 8601): only rows with ``updated_at >=`` it;
* ``cursor``: the opaque ``next_cursor`` of the previous page (keyset paging), or
* ``page`` (1-based): offset paging; then ``next_cursor`` is omitted.

``POST /api/orders`` takes an order handed over by the hub, ``{"key", "channel", "order_id", "lines":
[{"line_id", "sku", "quantity"}]}`` with an ``Idempotency-Key`` header equal to ``key``, and answers 201
(booked now) or 200 (booked before) with ``{"key", "lines": [{"line_id", "sku", "booked_at"}]}`` (see
:mod:`commerce_sync_sandbox.erp`); 422 when a SKU is unknown or the body is malformed.
``POST /api/orders/<key>/cancel`` cancels it (200, or 404 for an unknown key).

Auth: ``Authorization: Bearer <token>`` or HTTP Basic, as configured. Prices are JSON strings
(exact decimals), timestamps ISO 8601 UTC. ``fail_first`` answers 503 with ``Retry-After: 0`` first.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg

from commerce_sync.db import connect
from commerce_sync_sandbox.erp import COLUMNS

_COLUMNS = (
    "sku, ean, name, brand, category, description, purchase_price::text AS purchase_price, "
    "vat_rate::text AS vat_rate, stock, reserved, active, updated_at"
)


def _encode_cursor(updated_at: datetime, sku: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([updated_at.isoformat(), sku]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    updated_at, sku = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    return str(updated_at), str(sku)


@dataclass
class ErpRestServer:
    """The running API: ``base_url``, what it saw (``requests``) and its credentials."""

    erp_url: str
    token: str | None = "sandbox-erp-token"  # noqa: S105 - sandbox credentials, like the demo's others
    basic: tuple[str, str] | None = None
    fail_first: int = 0
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    base_url: str = ""
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def _authorised(self, header: str | None) -> bool:
        if self.token is None and self.basic is None:
            return True
        if header is None:
            return False
        if self.token is not None and header == f"Bearer {self.token}":
            return True
        if self.basic is not None and header.startswith("Basic "):
            try:
                login, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return (login, password) == self.basic
        return False

    def products(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """One page of the API's answer: (HTTP status, JSON document)."""
        try:
            limit = min(int(query.get("limit", ["100"])[0]), 1000)
            page = int(query["page"][0]) if "page" in query else None
            since = query.get("updated_since", [None])[0]
            cursor = _decode_cursor(query["cursor"][0]) if "cursor" in query else None
        except (ValueError, binascii.Error, json.JSONDecodeError) as exc:
            return 400, {"error": f"bad query parameter: {exc}"}
        where, params = ["true"], []
        if since:
            where.append("updated_at >= %s::timestamptz")
            params.append(since)
        if cursor:
            where.append("(updated_at, sku) > (%s::timestamptz, %s)")
            params.extend(cursor)
        offset = (page - 1) * limit if page else 0
        with connect(self.erp_url) as db:
            db.execute("SET TIME ZONE 'UTC'")
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM erp.products WHERE {' AND '.join(where)} "
                "ORDER BY updated_at, sku LIMIT %s OFFSET %s",
                [*params, limit, offset],
            ).fetchall()
        items = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        document: dict[str, Any] = {"items": items}
        if page is None:
            document["next_cursor"] = (
                _encode_cursor(items[-1]["updated_at"], items[-1]["sku"]) if len(items) == limit else None
            )
        return 200, document

    def book(self, body: Any, idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
        """Book a handed-over order (``POST /api/orders``)."""
        if not isinstance(body, dict) or not isinstance(body.get("lines"), list) or not body.get("key"):
            return 422, {"error": "expected {key, channel, order_id, lines: [...]}"}
        if idempotency_key != body["key"]:
            return 422, {"error": "the Idempotency-Key header must equal the order's key"}
        try:
            with connect(self.erp_url) as db:
                db.execute("SET TIME ZONE 'UTC'")
                known = db.execute("SELECT 1 FROM erp.orders WHERE order_key = %s", (body["key"],)).fetchone()
                rows = db.execute(
                    "SELECT line_id, sku, booked_at FROM erp.book_order(%s, %s, %s, %s::jsonb)",
                    (body["key"], body.get("channel", ""), body.get("order_id", ""), json.dumps(body["lines"])),
                ).fetchall()
        except psycopg.Error as exc:
            return 422, {"error": str(exc).splitlines()[0]}
        lines = [{"line_id": r[0], "sku": r[1], "booked_at": r[2].isoformat()} for r in rows]
        return (200 if known else 201), {"key": body["key"], "lines": lines}

    def cancel(self, key: str) -> tuple[int, dict[str, Any]]:
        """Cancel a booked order (``POST /api/orders/<key>/cancel``)."""
        with connect(self.erp_url) as db:
            row = db.execute("SELECT erp.cancel_order(%s)", (key,)).fetchone()
        if not row or not row[0]:
            return 404, {"error": f"no order {key}"}
        return 200, {"key": key, "status": "cancelled"}

    def start(self) -> ErpRestServer:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                state.requests.append(query)
                if state.fail_first > 0:
                    state.fail_first -= 1
                    self._send(503, {"error": "busy"}, {"Retry-After": "0"})
                elif not state._authorised(self.headers.get("Authorization")):
                    self._send(401, {"error": "unauthorised"}, {"WWW-Authenticate": 'Bearer realm="erp"'})
                elif parts.path != "/api/products":
                    self._send(404, {"error": "not found"})
                else:
                    self._send(*state.products(query))

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not state._authorised(self.headers.get("Authorization")):
                    self._send(401, {"error": "unauthorised"}, {"WWW-Authenticate": 'Bearer realm="erp"'})
                    return
                if path == "/api/orders":
                    try:
                        body = json.loads(raw or b"null")
                    except json.JSONDecodeError as exc:
                        self._send(422, {"error": f"not JSON: {exc}"})
                        return
                    self._send(*state.book(body, self.headers.get("Idempotency-Key")))
                elif path.startswith("/api/orders/") and path.endswith("/cancel"):
                    self._send(*state.cancel(unquote(path[len("/api/orders/") : -len("/cancel")])))
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                body = json.dumps(document, default=lambda v: v.isoformat()).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="erp-rest", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> ErpRestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m commerce_sync_sandbox.erp_rest ERP_URL [--port N]``: serve until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("erp_url", help="libpq URL of the sandbox ERP database")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="sandbox-erp-token")
    args = parser.parse_args()
    server = ErpRestServer(args.erp_url, token=args.token, port=args.port).start()
    print(f"sandbox ERP API: {server.base_url}/api/products (Bearer {args.token})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
