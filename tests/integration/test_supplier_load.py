"""Supplier feeds end to end: real HTTP on loopback, real PostgreSQL, the ledger and quarantine."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from commerce_sync.audit import ledger
from commerce_sync.config import HttpTransport, Supplier
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import DataError, FeedError, TransientError
from commerce_sync.sources.supplier_load import SupplierSyncResult, sync_supplier
from commerce_sync.sources.transports import fetch

pytestmark = pytest.mark.integration

RUN = ledger.RunContext(run_id="manual__1", dag_id="supplier_feeds_to_hub", task_id="sync_supplier", try_number=1)


@dataclass
class Served:
    """What the test server answers for one path; tests change it between runs."""

    body: bytes
    etag: bool = True
    status: int = 200
    extra_length: int = 0  # announce more bytes than sent: an incomplete transfer
    fail_first: int = 0  # answer 503 (Retry-After: 0) this many times first


@dataclass
class FeedServer:
    base_url: str
    files: dict[str, Served]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A stdlib HTTP server on 127.0.0.1 with ETag / If-None-Match support."""
    files: dict[str, Served] = {}
    state = FeedServer("", files)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.requests.append((self.path, dict(self.headers)))
            served = files.get(self.path)
            if served is None:
                self._send(404, b"not found")
                return
            if served.fail_first > 0:
                served.fail_first -= 1
                self._send(503, b"busy", {"Retry-After": "0"})
                return
            tag = '"' + hashlib.sha256(served.body).hexdigest()[:16] + '"'
            if served.etag and self.headers.get("If-None-Match") == tag:
                self._send(304, b"", {"ETag": tag})
                return
            headers = {"ETag": tag} if served.etag else {}
            self._send(served.status, served.body, headers, served.extra_length)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, extra: int = 0) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body) + extra))
            if extra:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def xml_supplier(mode: str = "full", retries: int = 0) -> Supplier:
    return Supplier.model_validate(
        {
            "id": "acme",
            "name": "ACME (XML)",
            "format": "xml",
            "mode": mode,
            "transport": {"type": "http", "conn_id": "supplier_acme", "path": "/feeds/acme.xml", "retries": retries},
            "xml": {
                "record_tag": "product",
                "fields": {
                    "supplier_sku": "code",
                    "gtin": "ean",
                    "name": "name",
                    "purchase_price": "price/net",
                    "currency": "price/currency",
                    "quantity": "stock",
                },
            },
        }
    )


def csv_supplier() -> Supplier:
    return Supplier.model_validate(
        {
            "id": "bravo",
            "name": "Bravo (CSV)",
            "format": "csv",
            "transport": {"type": "http", "conn_id": "supplier_bravo", "path": "/feeds/bravo.csv"},
            "csv": {
                "delimiter": ";",
                "encoding": "cp1250",
                "decimal_separator": ",",
                "columns": {
                    "supplier_sku": "Indeks",
                    "gtin": "EAN",
                    "name": "Nazwa",
                    "purchase_price": "Cena netto",
                    "quantity": "Stan",
                },
            },
        }
    )


def product(code: str, price: str = "10.00", stock: str = "5", ean: str = "", name: str | None = None) -> str:
    return (
        f"  <product>\n    <code>{code}</code><ean>{ean}</ean><name>{name or 'Item ' + code}</name>\n"
        f"    <price><net>{price}</net></price><stock>{stock}</stock>\n  </product>\n"
    )


def xml_feed(*products: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<catalog>\n' + "".join(products) + "</catalog>\n").encode()


def conn_for(server: FeedServer, conn_id: str = "supplier_acme") -> ConnectionInfo:
    return ConnectionInfo(conn_id=conn_id, host=server.base_url, login="feeduser", password="s3cret")


def sync(hub_dsn: str, supplier: Supplier, server: FeedServer, work_dir: Path) -> SupplierSyncResult:
    assert isinstance(supplier.transport, HttpTransport)
    return sync_supplier(hub_dsn, supplier, conn_for(server, supplier.transport.conn_id), RUN, work_dir)


def offers(hub_dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(hub_dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM hub.supplier_offer ORDER BY supplier, supplier_sku").fetchall()


def quarantined(hub_dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(hub_dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM hub.quarantine ORDER BY id").fetchall()


def ledger_rows(hub_dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(hub_dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM audit.transfer ORDER BY seq").fetchall()


def staging_count(hub_dsn: str) -> int:
    with psycopg.connect(hub_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM staging.supplier_offer").fetchone()
    assert row is not None
    return int(row[0])


ACME_FIRST = xml_feed(
    product("A-1", "12.30", "7", "5901234123457"),
    product("A-2", "5", "0", "96385074"),
    product("A-3", "12,3x", "4"),
    product("A-4", "3.10", "-2"),
)


def test_xml_supplier_loads_quarantines_and_second_run_is_not_modified(
    hub_dsn: str, feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(ACME_FIRST)
    first = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)

    assert (first.rows_read, first.rows_loaded, first.rows_quarantined, first.rows_changed) == (4, 2, 2, 2)
    assert first.location == f"{feed_server.base_url}/feeds/acme.xml"
    rows = offers(hub_dsn)
    assert [(r["supplier_sku"], r["gtin"], r["purchase_price"], r["quantity"], r["currency"]) for r in rows] == [
        ("A-1", "05901234123457", Decimal("12.3000"), 7, "PLN"),
        ("A-2", "00000096385074", Decimal("5.0000"), 0, "PLN"),
    ]
    assert {r["transfer_id"] for r in rows} == {first.transfer_id}
    assert rows[0]["source_line"] == 3
    assert rows[0]["source_file_sha256"] == hashlib.sha256(ACME_FIRST).hexdigest()

    bad = quarantined(hub_dsn)
    assert [(q["record_key"], q["record_no"], q["source_line"], q["column_name"]) for q in bad] == [
        ("A-3", 3, 11, "purchase_price"),
        ("A-4", 4, 15, "quantity"),
    ]
    assert "'12,3x' is not a number" in bad[0]["reason"]
    assert bad[1]["reason"] == "quantity '-2' is negative"
    assert bad[0]["raw"]["purchase_price"] == "12,3x"
    assert {q["status"] for q in bad} == {"open"}

    second = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert second.not_modified
    assert second.rows_changed == 0
    assert offers(hub_dsn) == rows
    assert feed_server.requests[-1][1].get("If-None-Match")

    first_row, second_row = ledger_rows(hub_dsn)
    assert first_row["status"] == "success"
    assert first_row["source"] == "supplier:acme"
    assert first_row["dataset"] == "supplier_offer"
    assert (first_row["rows_read"], first_row["rows_written"], first_row["rows_rejected"]) == (4, 2, 2)
    assert first_row["payload_sha256"] == hashlib.sha256(ACME_FIRST).hexdigest()
    details = first_row["details"]
    assert details["location"] == first.location
    assert details["size_bytes"] == len(ACME_FIRST)
    assert details["validation"]["rows_quarantined"] == 2
    assert details["validation"]["suite"] == "supplier_offer"
    assert "s3cret" not in str(first_row)
    assert (second_row["status"], second_row["rows_changed"], second_row["message"]) == ("success", 0, "not modified")

    assert staging_count(hub_dsn) == 0
    assert list(tmp_path.iterdir()) == []  # the download was deleted after success


BRAVO_CSV = (
    "Indeks;EAN;Nazwa;Cena netto;Stan\r\n"
    "B-1;5901234123457;Zażółć gęślą jaźń;12,30;4\r\n"
    'B-2;;"Kabel ""HDMI""; 2 m";1 234,50;0\r\n'
    "B-3;5901234123458;Zły EAN;1,00;1\r\n"
).encode("cp1250")


def test_csv_supplier_twice_changes_nothing(hub_dsn: str, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/bravo.csv"] = Served(BRAVO_CSV, etag=False)
    first = sync(hub_dsn, csv_supplier(), feed_server, tmp_path)
    assert (first.rows_read, first.rows_loaded, first.rows_quarantined, first.rows_changed) == (3, 2, 1, 2)
    rows = offers(hub_dsn)
    assert [(r["supplier_sku"], r["name"], r["purchase_price"]) for r in rows] == [
        ("B-1", "Zażółć gęślą jaźń", Decimal("12.3000")),
        ("B-2", 'Kabel "HDMI"; 2 m', Decimal("1234.5000")),
    ]
    [bad] = quarantined(hub_dsn)
    assert (bad["record_key"], bad["source_line"], bad["column_name"]) == ("B-3", 4, "gtin")
    assert "check digit" in bad["reason"]

    second = sync(hub_dsn, csv_supplier(), feed_server, tmp_path)
    assert not second.not_modified
    assert second.rows_changed == 0
    assert offers(hub_dsn) == rows  # same versions, timestamps and transfer ids
    assert ledger_rows(hub_dsn)[-1]["rows_changed"] == 0


def test_not_xml_fails_names_supplier_and_url_and_leaves_hub(
    hub_dsn: str, feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(ACME_FIRST)
    sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    before = offers(hub_dsn)

    feed_server.files["/feeds/acme.xml"] = Served(b"<html><body>Service unavailable<br></body></html>")
    url = f"{feed_server.base_url}/feeds/acme.xml"
    with pytest.raises(FeedError) as excinfo:
        sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert excinfo.value.supplier == "acme"
    assert excinfo.value.location == url
    assert url in str(excinfo.value)

    assert offers(hub_dsn) == before
    last = ledger_rows(hub_dsn)[-1]
    assert last["status"] == "failed"
    assert "FeedError" in last["message"]
    assert url in last["message"]
    assert staging_count(hub_dsn) == 0


def test_fixed_row_resolves_its_quarantine_row(hub_dsn: str, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(ACME_FIRST)
    sync(hub_dsn, xml_supplier(), feed_server, tmp_path)

    feed_server.files["/feeds/acme.xml"] = Served(
        xml_feed(
            product("A-1", "12.30", "7", "5901234123457"),
            product("A-2", "5", "0", "96385074"),
            product("A-3", "12.35", "4"),
            product("A-4", "3.10", "-1"),
        )
    )
    second = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert second.rows_changed == 1  # only A-3 is new; are unchanged

    by_key: dict[str, list[dict[str, Any]]] = {}
    for q in quarantined(hub_dsn):
        by_key.setdefault(q["record_key"], []).append(q)
    [a3] = by_key["A-3"]
    assert (a3["status"], a3["resolved_transfer_id"]) == ("resolved", second.transfer_id)
    assert a3["resolved_at"] is not None
    assert [q["status"] for q in by_key["A-4"]] == ["open", "open"]  # still broken, reported again
    assert [r["supplier_sku"] for r in offers(hub_dsn)] == ["A-1", "A-2", "A-3"]
    assert ledger_rows(hub_dsn)[-1]["details"]["quarantine_resolved"] == 1


def test_full_mode_deactivates_removed_item_and_reactivates_it(
    hub_dsn: str, feed_server: FeedServer, tmp_path: Path
) -> None:
    both = xml_feed(product("A-1", "1.00", "3"), product("A-2", "2.00", "9"))
    feed_server.files["/feeds/acme.xml"] = Served(both)
    sync(hub_dsn, xml_supplier(), feed_server, tmp_path)

    feed_server.files["/feeds/acme.xml"] = Served(xml_feed(product("A-1", "1.00", "3")))
    removed = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert removed.rows_changed == 1
    a1, a2 = offers(hub_dsn)
    assert (a1["active"], a1["version"]) == (True, 1)
    assert (a2["active"], a2["quantity"], a2["version"], a2["transfer_id"]) == (False, 0, 2, removed.transfer_id)

    again = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)  # same content: 304
    assert again.not_modified

    feed_server.files["/feeds/acme.xml"] = Served(both)
    back = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert back.rows_changed == 1
    a2 = offers(hub_dsn)[1]
    assert (a2["active"], a2["quantity"], a2["version"]) == (True, 9, 3)


def test_delta_mode_keeps_missing_items(hub_dsn: str, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(xml_feed(product("A-1"), product("A-2")))
    sync(hub_dsn, xml_supplier(mode="delta"), feed_server, tmp_path)
    feed_server.files["/feeds/acme.xml"] = Served(xml_feed(product("A-1", "1.50")))
    result = sync(hub_dsn, xml_supplier(mode="delta"), feed_server, tmp_path)
    assert result.rows_changed == 1
    assert [(r["supplier_sku"], r["active"]) for r in offers(hub_dsn)] == [("A-1", True), ("A-2", True)]


def test_duplicate_sku_quarantines_both_rows(hub_dsn: str, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(
        xml_feed(product("A-1", "1.00"), product("DUP", "2.00"), product("DUP", "3.00"))
    )
    result = sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    assert [r["supplier_sku"] for r in offers(hub_dsn)] == ["A-1"]
    assert [(q["record_key"], q["record_no"]) for q in quarantined(hub_dsn)] == [("DUP", 2), ("DUP", 3)]


def test_all_rows_invalid_raises_and_merges_nothing(hub_dsn: str, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(xml_feed(product("A-1", "x"), product("A-2", "1", "-1")))
    with pytest.raises(DataError, match=r"supplier 'acme': all 2 rows .* failed validation") as excinfo:
        sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert "'x' is not a number" in str(excinfo.value)
    assert offers(hub_dsn) == []
    assert len(quarantined(hub_dsn)) == 2
    last = ledger_rows(hub_dsn)[-1]
    assert (last["status"], last["rows_rejected"]) == ("failed", 2)


def test_content_length_mismatch_is_rejected(hub_dsn: str, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(ACME_FIRST, extra_length=100)
    with pytest.raises(FeedError, match="incomplete transfer"):
        sync(hub_dsn, xml_supplier(), feed_server, tmp_path)
    assert offers(hub_dsn) == []
    assert ledger_rows(hub_dsn)[-1]["status"] == "failed"
    assert list(tmp_path.iterdir()) == []  # the partial download is not left behind


def test_fetch_retries_5xx_then_succeeds(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(ACME_FIRST, fail_first=2)
    waits: list[float] = []
    result = fetch(xml_supplier(retries=2), conn_for(feed_server), tmp_path, None, sleep=waits.append)
    assert result.path is not None
    assert result.path.read_bytes() == ACME_FIRST
    assert result.size == len(ACME_FIRST)
    assert waits == [0.0, 0.0]  # Retry-After: 0 was honoured
    assert all(h.get("Authorization", "").startswith("Basic ") for _, h in feed_server.requests)


def test_fetch_exhausted_retries_is_transient(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/feeds/acme.xml"] = Served(ACME_FIRST, fail_first=5)
    with pytest.raises(TransientError, match="after 3 attempts: HTTP 503"):
        fetch(xml_supplier(retries=2), conn_for(feed_server), tmp_path, None, sleep=lambda _: None)


def test_fetch_404_is_final(feed_server: FeedServer, tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="HTTP 404") as excinfo:
        fetch(xml_supplier(retries=3), conn_for(feed_server), tmp_path, None, sleep=lambda _: None)
    assert excinfo.value.location == f"{feed_server.base_url}/feeds/acme.xml"
    assert len(feed_server.requests) == 1


def test_file_transport_hashes_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMERCE_SYNC_DATA_DIR", str(tmp_path))
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "acme.xml").write_bytes(ACME_FIRST)
    config = xml_supplier().model_dump()
    config["transport"] = {"type": "file", "path": "feeds/acme.xml"}
    result = fetch(Supplier.model_validate(config), None, tmp_path / "work", None)
    assert result.path == tmp_path / "feeds" / "acme.xml"
    assert result.location == str(tmp_path / "feeds" / "acme.xml")
    assert result.sha256 == hashlib.sha256(ACME_FIRST).hexdigest()
    assert result.size == len(ACME_FIRST)
    assert not result.temporary
