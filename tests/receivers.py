"""Loopback receivers for notification tests: a real SMTP server (aiosmtpd) and a webhook HTTP server.

Both record what they received; :meth:`wait_for` polls until a predicate holds (no timing assertions:
the timeout only bounds how long a missing message is waited for).
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Inbox:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.items)

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 60.0) -> Any:
        """The first received item matching ``predicate``; AssertionError naming what arrived otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.snapshot():
                if predicate(item):
                    return item
            time.sleep(0.2)
        raise AssertionError(f"nothing matching arrived within {timeout:.0f} s; received: {self.snapshot()!r}")


class SmtpInbox(_Inbox):
    """Mails received by the SMTP server, as ``{"to": [...], "subject": str, "body": str}``."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = mail.get_body(preferencelist=("plain",))
        self.add(
            {
                "to": list(envelope.rcpt_tos),
                "from": envelope.mail_from,
                "subject": str(mail["Subject"]),
                "body": body.get_content() if body is not None else "",
            }
        )
        return "250 Message accepted for delivery"


class WebhookInbox(_Inbox):
    """JSON documents POSTed to the webhook receiver, with the Authorization header under ``_auth``."""

    status = 200


@contextmanager
def smtp_server() -> Iterator[tuple[SmtpInbox, int]]:
    """An SMTP server on 127.0.0.1 (a free port) recording every mail."""
    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@contextmanager
def webhook_server() -> Iterator[tuple[WebhookInbox, int]]:
    """An HTTP server on 127.0.0.1 recording each POSTed JSON body; answers ``inbox.status``."""
    inbox = WebhookInbox()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            document = json.loads(self.rfile.read(length) or b"{}")
            document["_auth"] = self.headers.get("Authorization")
            document["_path"] = self.path
            inbox.add(document)
            self.send_response(inbox.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield inbox, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def notification_connections(smtp_port: int, webhook_port: int, token: str = "hook-token") -> dict[str, str]:
    """``AIRFLOW_CONN_*`` values pointing the notifiers at the two receivers."""
    return {
        "AIRFLOW_CONN_COMMERCE_SYNC_SMTP": json.dumps(
            {
                "conn_type": "email",
                "host": "127.0.0.1",
                "port": smtp_port,
                "extra": {"from": "airflow@shop.test", "to": ["ops@shop.test", "oncall@shop.test"]},
            }
        ),
        "AIRFLOW_CONN_COMMERCE_SYNC_WEBHOOK": json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{webhook_port}/hooks/commerce", "password": token}
        ),
    }
