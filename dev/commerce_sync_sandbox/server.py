"""The sandbox's HTTP listeners on loopback: supplier feeds and every marketplace simulator.

``GET /feeds/<name>`` serves files of the feeds directory with a strong, content-based ``ETag``
(sha256), ``Last-Modified`` and ``Content-Length``, answers conditional requests with 304, and
refuses any name that is not a plain file name in that directory. The simulators are found by
:mod:`commerce_sync_sandbox.simulators` (every ``*_sim`` module) and described in their modules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping
from decimal import Decimal
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from commerce_sync_sandbox.ebay_sim import EbayError
from commerce_sync_sandbox.http import RequestStats
from commerce_sync_sandbox.simulators import SimulatorContext, simulators

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class FeedsHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves one directory's files under ``/feeds/``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], feeds_dir: Path) -> None:
        self.feeds_dir = feeds_dir.resolve()
        self._digests: dict[tuple[str, int, int], str] = {}
        self._digest_lock = threading.Lock()
        super().__init__(address, FeedsHandler)

    def etag(self, path: Path, mtime_ns: int, size: int) -> str:
        """Quoted sha256 of the file, cached per (path, mtime, size)."""
        key = (str(path), mtime_ns, size)
        with self._digest_lock:
            cached = self._digests.get(key)
        if cached is None:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            cached = f'"{digest.hexdigest()}"'
            with self._digest_lock:
                self._digests[key] = cached
        return cached


class FeedsHandler(BaseHTTPRequestHandler):
    """``GET``/``HEAD /feeds/<name>`` with conditional-request support."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server_version = "FeedsSandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("feeds sandbox: " + format, *args)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, *, send_body: bool) -> None:
        server = self.server
        assert isinstance(server, FeedsHTTPServer)
        raw = urlsplit(self.path).path
        if not raw.startswith("/feeds/"):
            self._plain(404, "not found")
            return
        name = unquote(raw.removeprefix("/feeds/"))
        # Only a plain name of a file directly in the feeds directory: no separators, no dot-files.
        if not _SAFE_NAME.match(name) or ".." in name:
            self._plain(400, "invalid feed name")
            return
        path = (server.feeds_dir / name).resolve()
        if path.parent != server.feeds_dir or not path.is_file():
            self._plain(404, f"no feed {name}")
            return
        stat = path.stat()
        etag = server.etag(path, stat.st_mtime_ns, stat.st_size)
        last_modified = formatdate(stat.st_mtime, usegmt=True)
        if self._not_modified(etag, int(stat.st_mtime)):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", _content_type(name))
        self.send_header("Content-Length", str(stat.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if send_body:
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 16), b""):
                    self.wfile.write(block)

    def _not_modified(self, etag: str, mtime: int) -> bool:
        # RFC 9110: If-None-Match wins; If-Modified-Since counts only when it is absent.
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
            return "*" in candidates or etag in candidates
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError):
                return False
            return mtime <= int(since.timestamp())
        return False

    def _plain(self, status: int, message: str) -> None:
        data = message.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _content_type(name: str) -> str:
    if name.endswith(".xml"):
        return "application/xml"
    if name.endswith(".csv"):
        return "text/csv; charset=windows-1250" if name.startswith("bravo") else "text/csv"
    return "application/octet-stream"


class SandboxServer:
    """The sandbox listeners in background threads; use as a context manager or start/stop.

    Serves the supplier feeds and every simulator of :func:`commerce_sync_sandbox.simulators.simulators`
    (each on its own port). A simulator is reached as ``server.<name>`` and its base URL as
    ``server.<name>_url`` (``server.ebay``, ``server.allegro_url``, ...) or :meth:`url`; ``simulator``
    is the Allegro simulator (its older name).

    Args:
        feeds_dir: directory whose files are served under ``/feeds/``.
        allegro_state: JSON file holding the Allegro simulator's state (created if missing); the other
            simulators keep theirs beside it (``ebay_state.json``, ``amazon_state.json``, ...).
        host: interface to bind (loopback by default).
        feeds_port: port of the feeds listener (0 = any free port).
        allegro_port: port of the Allegro listener (0 = any free port; same as ``ports["allegro"]``).
        catalog_n: catalog size for the simulators' initial offers.
        seed: catalog seed.
        ports: port per simulator name (missing: any free port).
        **options: passed to every simulator's builder (``client_id``, ``client_secret``, ``token_ttl``
            of the Allegro simulator); ``<name>_port`` is the same as ``ports[name]``.
    """

    def __init__(
        self,
        feeds_dir: Path,
        allegro_state: Path,
        host: str = "127.0.0.1",
        feeds_port: int = 0,
        allegro_port: int = 0,
        catalog_n: int = 300,
        seed: int = 42,
        *,
        ports: Mapping[str, int] | None = None,
        **options: Any,
    ) -> None:
        self.feeds_dir = feeds_dir
        self.host = host
        self._feeds_port = feeds_port
        self._specs = {spec.name: spec for spec in simulators()}
        self._ports = {"allegro": allegro_port, **dict(ports or {})}
        for name in self._specs:
            port = options.pop(f"{name}_port", None)
            if port is not None:
                self._ports[name] = int(port)
        context = SimulatorContext(allegro_state, catalog_n=catalog_n, seed=seed, options=options)
        self.simulators: dict[str, Any] = {name: spec.build(context) for name, spec in self._specs.items()}
        self._feeds: FeedsHTTPServer | None = None
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not attributes: <simulator> and <simulator>_url.
        simulators_ = self.__dict__.get("simulators") or {}
        if name in simulators_:
            return simulators_[name]
        if name.endswith("_url") and name.removesuffix("_url") in simulators_:
            return self.url(name.removesuffix("_url"))
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (simulators: {sorted(simulators_)})")

    @property
    def simulator(self) -> Any:
        """The Allegro simulator (the name it had before there were others)."""
        return self.simulators["allegro"]

    def start(self) -> SandboxServer:
        """Bind every listener and serve them in daemon threads."""
        if self._feeds is not None:
            return self
        self.feeds_dir.mkdir(parents=True, exist_ok=True)
        bound: dict[str, ThreadingHTTPServer] = {}
        try:
            bound["feeds"] = self._feeds = FeedsHTTPServer((self.host, self._feeds_port), self.feeds_dir)
            for name, spec in self._specs.items():
                bound[name] = spec.server((self.host, self._ports.get(name, 0)), self.simulators[name])
        except BaseException:
            for server in bound.values():
                server.server_close()
            self._feeds = None
            raise
        self._servers = {name: server for name, server in bound.items() if name != "feeds"}
        for name, server in bound.items():
            # A short poll interval keeps stop() fast (tests start and stop servers a lot).
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sandbox-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop every listener and persist the simulators' state."""
        for server in (self._feeds, *self._servers.values()):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._feeds = None
        self._servers = {}
        for simulator in self.simulators.values():
            save = getattr(simulator, "save", None)
            if callable(save):
                save()

    def prices(self, sku: str) -> dict[str, Decimal | None]:
        """What each marketplace simulator shows as the price of ``sku`` now (None: no offer).

        Read from the simulators' state directly (tests and the latency bench poll it often).
        """
        allegro = self.simulator.list_offers(0, 1, external_ids=[sku])["offers"]
        try:
            ebay = self.ebay.offers(sku, 0, 1)["offers"]
        except EbayError:  # an unknown SKU: eBay's 404 answer
            ebay = []
        amazon = self.amazon.listing(sku)
        return {
            "allegro": Decimal(allegro[0]["sellingMode"]["price"]["amount"]) if allegro else None,
            "ebay": Decimal(ebay[0]["pricingSummary"]["price"]["value"]) if ebay else None,
            "amazon": Decimal(amazon["price"]) if amazon else None,
        }

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _url(server: ThreadingHTTPServer | None) -> str:
        if server is None:
            raise RuntimeError("the sandbox server is not running; call start() first")
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}"

    def request_stats(self, marketplace: str) -> RequestStats:
        """What simulator ``marketplace`` (``allegro``, ``ebay``, ...) has answered (in flight, most at once)."""
        server = self._servers.get(marketplace)
        if server is None:
            raise RuntimeError("the sandbox server is not running; call start() first")
        stats: RequestStats = getattr(server, "stats")  # noqa: B009 - every SimulatorServer keeps its stats
        return stats

    @property
    def feeds_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the feeds listener."""
        return self._url(self._feeds)

    def url(self, name: str) -> str:
        """``http://127.0.0.1:PORT`` of simulator ``name``."""
        if name not in self._specs:
            raise KeyError(f"no simulator {name!r} (simulators: {sorted(self._specs)})")
        return self._url(self._servers.get(name))

    def urls(self) -> dict[str, str]:
        """Base URL of every simulator, by name."""
        return {name: self.url(name) for name in self._specs}

    def airflow_connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables of the suppliers' and channels' connections in the shipped
        configuration (``include/config``), pointing at this server with the simulators' demo credentials."""

        def http(url: str, *credentials: str, extra: dict[str, str] | None = None) -> str:
            conn: dict[str, Any] = {"conn_type": "http", "host": url}
            if credentials:
                conn["login"], conn["password"] = credentials
            if extra:
                conn["extra"] = extra
            return json.dumps(conn)

        return {
            "AIRFLOW_CONN_SUPPLIER_ACME": http(self.feeds_url),
            "AIRFLOW_CONN_SUPPLIER_BRAVO": http(self.feeds_url),
            "AIRFLOW_CONN_ALLEGRO_SANDBOX": http(self.url("allegro"), "demo-client", "demo-secret"),
            "AIRFLOW_CONN_EBAY_SANDBOX": http(
                self.url("ebay"),
                "demo-ebay-client",
                "demo-ebay-secret",
                extra={"refresh_token": "demo-ebay-refresh-token"},
            ),
            "AIRFLOW_CONN_AMAZON_SANDBOX": http(
                self.url("amazon"),
                "amzn1.application-oa2-client.sandbox",
                "demo-amazon-secret",
                extra={
                    "refresh_token": "Atzr|demo-amazon-refresh-token",
                    "seller_id": "A2SANDBOXSELLER",
                    "marketplace_id": "A1C3SOZRARQ6R3",
                },
            ),
            "AIRFLOW_CONN_SHOP_SANDBOX": http(
                self.url("woocommerce"), "ck_demo_woocommerce_key", "cs_demo_woocommerce_secret"
            ),
            "AIRFLOW_CONN_SHOP_WEBHOOK": json.dumps(
                {"conn_type": "generic", "host": self.url("woocommerce"), "password": "demo-webhook-secret"}
            ),
        }
