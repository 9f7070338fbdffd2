"""Supplier loads by format and delivery: BMEcat catalog + price update, duplicates over any transport,
cp1250 CSV with decimal commas and 5 % bad rows, the price-change report, and a wholesaler added by
configuration only (YAML + an Airflow connection in the environment). Real PostgreSQL, real servers."""

from __future__ import annotations

import csv
import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from commerce_sync.audit import ledger
from commerce_sync.config import PriceChangeReport, Supplier, load_config
from commerce_sync.connections import get_connection
from commerce_sync.sources.notifiers import LogFileNotifier, price_change_notifier
from commerce_sync.sources.supplier_load import sync_supplier
from commerce_sync_sandbox.faulty_http import FaultyHttpServer, Served

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "feeds"
RUN = ledger.RunContext(
    run_id="manual__1", dag_id="suppliers_to_hub_offers", task_id="sync_supplier_feed", try_number=1
)


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COMMERCE_SYNC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def file_supplier(supplier_id: str, fmt: str, path: Path, **extra: Any) -> Supplier:
    return Supplier.model_validate(
        {
            "id": supplier_id,
            "name": supplier_id.title(),
            "format": fmt,
            "transport": {"type": "file", "path": str(path), "settle_seconds": 0},
            **extra,
        }
    )


def offers(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as db:
        rows = db.execute("SELECT * FROM hub.supplier_offer ORDER BY supplier, supplier_sku").fetchall()
    return {row["supplier_sku"]: row for row in rows}


def transfers(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as db:
        return db.execute("SELECT * FROM audit.transfer ORDER BY seq").fetchall()


def test_bmecat_catalog_then_price_update_keeps_stock_and_reports_the_move(
    hub_dsn: str, tmp_path: Path, data_dir: Path
) -> None:
    delivery = tmp_path / "charlie.xml"
    shutil.copy(FIXTURES / "bmecat_2005_new_catalog.xml", delivery)
    charlie = file_supplier("charlie", "bmecat", delivery)
    first = sync_supplier(hub_dsn, charlie, None, RUN, tmp_path / "work")
    assert (first.rows_read, first.rows_loaded, first.rows_quarantined) == (3, 3, 0)
    loaded = offers(hub_dsn)
    assert loaded["CH-1001"]["purchase_price"] == Decimal("209.5000") and loaded["CH-1001"]["quantity"] == 42
    assert loaded["CH-1001"]["gtin"] == "05901234123457" and loaded["CH-1003"]["currency"] == "EUR"
    assert first.price_changes is not None and first.price_changes.reported == 0

    shutil.copy(FIXTURES / "bmecat_2005_update_prices.xml", delivery)
    second = sync_supplier(hub_dsn, charlie, None, RUN, tmp_path / "work")
    after = offers(hub_dsn)
    assert second.rows_read == 1 and second.rows_changed == 1
    assert after["CH-1001"]["purchase_price"] == Decimal("289.0000")
    assert after["CH-1001"]["quantity"] == 42 and after["CH-1001"]["name"] == "Wiertarka udarowa 650 W"
    assert after["CH-1002"]["active"] and after["CH-1003"]["active"]  # not in a price update: not deactivated
    assert after["CH-1002"]["version"] == loaded["CH-1002"]["version"]

    report = second.price_changes
    assert report is not None and report.reported == 1 and report.beyond_alert == 1 and report.alert
    assert report.max_abs_pct == "37.95"
    assert report.csv_path is not None
    with Path(report.csv_path).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {
            "supplier": "charlie",
            "supplier_sku": "CH-1001",
            "gtin": "05901234123457",
            "old_price": "209.5000",
            "old_currency": "PLN",
            "new_price": "289.0000",
            "new_currency": "PLN",
            "change_pct": "37.95",
            "alert": "yes",
        }
    ]
    ledger_row = transfers(hub_dsn)[-1]
    assert ledger_row["details"]["partial_delivery"] is True
    assert ledger_row["details"]["price_changes"]["reported"] == 1
    assert ledger_row["details"]["price_changes"]["sha256"] == report.digest
    with psycopg.connect(hub_dsn) as db:
        stored = db.execute("SELECT supplier_sku, change_pct, alert FROM hub.supplier_price_change").fetchall()
    assert stored == [("CH-1001", Decimal("37.95"), True)]

    # The notifier the DAG calls above the alert threshold: a log line and a JSON line in a file.
    price_change_notifier(report, PriceChangeReport())({})
    entry = json.loads((data_dir / "alerts" / "supplier_price_changes.jsonl").read_text(encoding="utf-8"))
    assert "charlie" in entry["message"] and "37.95" in entry["message"] and entry["transfer_id"] == report.transfer_id
    assert entry["kind"] == "supplier_price_change" and entry["csv_path"] == report.csv_path
    log_only = price_change_notifier(report, PriceChangeReport(notifier="log"))
    assert isinstance(log_only, LogFileNotifier) and log_only.path is None


def test_price_report_thresholds_are_configurable(hub_dsn: str, tmp_path: Path) -> None:
    delivery = tmp_path / "delta.xml"
    shutil.copy(FIXTURES / "bmecat_12_names_in_2005_header.xml", delivery)
    delta = file_supplier("delta", "bmecat", delivery)
    sync_supplier(hub_dsn, delta, None, RUN, tmp_path / "work")
    text = (FIXTURES / "bmecat_12_names_in_2005_header.xml").read_bytes()
    delivery.write_bytes(text.replace(b"54.20", b"57.00").replace(b"19.99", b"14.99"))  # +5.17 %, -25.01 %
    settings = PriceChangeReport(threshold_pct=Decimal(5), alert_pct=Decimal(40), alert_count=1)
    result = sync_supplier(hub_dsn, delta, None, RUN, tmp_path / "work", settings)
    report = result.price_changes
    assert report is not None
    assert (report.reported, report.beyond_alert, report.alert) == (2, 0, True)  # alert: count 2 > 1
    assert report.top[0].startswith("delta D-78 (gtin 00000096385074): 19.9900 PLN -> 14.9900 PLN (-25.01%)")


def test_same_file_again_is_a_duplicate_transfer_over_file_transport(hub_dsn: str, tmp_path: Path) -> None:
    delivery = tmp_path / "charlie.xml"
    shutil.copy(FIXTURES / "bmecat_2005_new_catalog.xml", delivery)
    charlie = file_supplier("charlie", "bmecat", delivery)
    first = sync_supplier(hub_dsn, charlie, None, RUN, tmp_path / "work")
    before = offers(hub_dsn)
    again = sync_supplier(hub_dsn, charlie, None, RUN, tmp_path / "work")
    assert again.duplicate_of == str(first.transfer_id) and again.rows_read == 0
    assert offers(hub_dsn) == before
    row = transfers(hub_dsn)[-1]
    assert row["status"] == "success" and row["message"] == "duplicate"
    assert row["details"]["duplicate_of"] == str(first.transfer_id) and row["rows_read"] == 0

    # A, B, A: the third delivery is a real return to A, loaded again, not a duplicate.
    shutil.copy(FIXTURES / "bmecat_2005_update_prices.xml", delivery)
    sync_supplier(hub_dsn, charlie, None, RUN, tmp_path / "work")
    shutil.copy(FIXTURES / "bmecat_2005_new_catalog.xml", delivery)
    third = sync_supplier(hub_dsn, charlie, None, RUN, tmp_path / "work")
    assert third.duplicate_of is None and third.rows_read == 3
    assert offers(hub_dsn)["CH-1001"]["purchase_price"] == Decimal("209.5000")

    # The same bytes read with a changed mapping are parsed again (the config fingerprint differs).
    remapped = file_supplier("charlie", "bmecat", delivery, bmecat={"price_types": ["net_list"]})
    fourth = sync_supplier(hub_dsn, remapped, None, RUN, tmp_path / "work")
    assert fourth.duplicate_of is None and offers(hub_dsn)["CH-1001"]["purchase_price"] == Decimal("249.0000")


def test_server_ignoring_etags_delivers_a_duplicate_over_http(hub_dsn: str, tmp_path: Path) -> None:
    feed = (FIXTURES / "bmecat_2005_new_catalog.xml").read_bytes()
    with FaultyHttpServer() as server:
        server.files["/charlie.xml"] = Served(feed, ignore_conditional=True)
        charlie = Supplier.model_validate(
            {
                "id": "charlie",
                "name": "Charlie",
                "format": "bmecat",
                "transport": {"type": "http", "conn_id": "supplier_charlie", "path": "/charlie.xml"},
            }
        )
        from commerce_sync.connections import ConnectionInfo

        conn = ConnectionInfo("supplier_charlie", host=server.base_url)
        first = sync_supplier(hub_dsn, charlie, conn, RUN, tmp_path / "work")
        second = sync_supplier(hub_dsn, charlie, conn, RUN, tmp_path / "work")
    assert second.duplicate_of == str(first.transfer_id) and not second.not_modified
    assert list((tmp_path / "work").iterdir()) == []  # downloads removed


def _cp1250_feed(path: Path, rows: int, bad: set[int]) -> None:
    lines = ["Indeks;EAN;Nazwa;Cena netto;Stan"]
    for i in range(1, rows + 1):
        price = "abc" if i in bad else f"{i},{i % 100:02d}"
        lines.append(f'B-{i:03d};;"Łódź ""żółta"" nr {i}";{price};{i % 7}')
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1250"))


def test_cp1250_csv_with_decimal_commas_and_five_percent_bad_rows(hub_dsn: str, tmp_path: Path) -> None:
    delivery = tmp_path / "bravo.csv"
    _cp1250_feed(delivery, 40, {7, 31})
    bravo = file_supplier(
        "bravo",
        "csv",
        delivery,
        csv={
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
    )
    result = sync_supplier(hub_dsn, bravo, None, RUN, tmp_path / "work")
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (40, 38, 2)
    loaded = offers(hub_dsn)
    assert loaded["B-012"]["purchase_price"] == Decimal("12.1200") and loaded["B-012"]["name"] == 'Łódź "żółta" nr 12'
    with psycopg.connect(hub_dsn, row_factory=dict_row) as db:
        quarantined = db.execute(
            "SELECT q.source, q.record_no, q.source_line, q.column_name, q.reason, t.payload_sha256"
            "  FROM hub.quarantine AS q JOIN audit.transfer AS t USING (transfer_id) ORDER BY q.record_no"
        ).fetchall()
    assert [(q["source"], q["record_no"], q["source_line"], q["column_name"]) for q in quarantined] == [
        ("supplier:bravo", 7, 8, "purchase_price"),
        ("supplier:bravo", 31, 32, "purchase_price"),
    ]
    assert all(q["reason"] and q["payload_sha256"] == transfers(hub_dsn)[-1]["payload_sha256"] for q in quarantined)
    assert sync_supplier(hub_dsn, bravo, None, RUN, tmp_path / "work").duplicate_of == str(result.transfer_id)


def test_new_wholesaler_needs_only_yaml_and_a_connection(
    hub_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README recipe: a suppliers.yaml entry and AIRFLOW_CONN_<ID>; no code."""
    config_dir = tmp_path / "config"
    shutil.copytree(REPO / "include" / "config", config_dir)
    with (config_dir / "suppliers.yaml").open("a", encoding="utf-8") as handle:
        handle.write(
            """
  - id: golf
    name: Golf Hurt (XML, prices in grosze)
    format: xml
    transport:
      type: http
      conn_id: supplier_golf
      path: /export/oferta.xml
    xml:
      record_tag: pozycja
      decimal_separator: ","
      price_unit: cent
      fields:
        supplier_sku: "@kod"
        gtin: ean
        name: nazwa
        purchase_price: cena_gr
        quantity: stan
"""
        )
    feed = (
        '<?xml version="1.0" encoding="UTF-8"?><oferta>'
        '<pozycja kod="G1"><ean>5901234123457</ean><nazwa>Sekator</nazwa><cena_gr>4599</cena_gr><stan>8</stan></pozycja>'
        '<pozycja kod="G2"><ean/><nazwa>Rękawice</nazwa><cena_gr>1250</cena_gr><stan>0</stan></pozycja>'
        "</oferta>"
    ).encode()
    with FaultyHttpServer() as server:
        server.files["/export/oferta.xml"] = Served(feed)
        monkeypatch.setenv("AIRFLOW_CONN_SUPPLIER_GOLF", json.dumps({"conn_type": "http", "host": server.base_url}))
        golf = load_config(config_dir).supplier("golf")
        result = sync_supplier(hub_dsn, golf, get_connection("supplier_golf"), RUN, tmp_path / "work")
    assert (result.rows_read, result.rows_loaded) == (2, 2)
    loaded = offers(hub_dsn)
    assert loaded["G1"]["purchase_price"] == Decimal("45.9900") and loaded["G2"]["purchase_price"] == Decimal("12.5000")
    assert result.location == f"{server.base_url}/export/oferta.xml"


EDGE_ROWS = [
    # (sku, gtin, price, currency, quantity, expected problem column or None)
    ("E-08", "96385074", "1.00", "PLN", "1", None),  # GTIN-8
    ("E-12", "036000291452", "1.00", "PLN", "1", None),  # GTIN-12 (UPC-A)
    ("E-13", "5901234123457", "1.00", "EUR", "1", None),  # GTIN-13
    ("E-14", "15901234123454", "1.00", "CZK", "1", None),  # GTIN-14
    ("E-LZ", "0000096385074", "0.0001", "PLN", "0", None),  # leading zeros kept, smallest price
    ("E-BADCD", "5901234123458", "1.00", "PLN", "1", "gtin"),
    ("E-ZERO", "00000000", "1.00", "PLN", "1", "gtin"),
    ("E-LEN", "123456789", "1.00", "PLN", "1", "gtin"),
    ("E-CUR", "", "1.00", "XYZ", "1", "currency"),
    ("E-NEG", "", "1.00", "PLN", "-3", "quantity"),
]


def test_edge_validation_gtin_lengths_currencies_stock(hub_dsn: str, tmp_path: Path) -> None:
    good = [(f"G-{i:02d}", "", f"{i}.50", "PLN", "2", None) for i in range(1, 31)]  # keep rejects under the breaker
    rows = EDGE_ROWS + good
    body = "".join(
        f"<product><code>{sku}</code><ean>{gtin}</ean><price><net>{price}</net><currency>{cur}</currency></price>"
        f"<stock>{qty}</stock></product>"
        for sku, gtin, price, cur, qty, _ in rows
    )
    delivery = tmp_path / "echo.xml"
    delivery.write_text(f"<catalog>{body}</catalog>", encoding="utf-8")
    echo = file_supplier(
        "echo",
        "xml",
        delivery,
        xml={
            "record_tag": "product",
            "fields": {
                "supplier_sku": "code",
                "gtin": "ean",
                "purchase_price": "price/net",
                "currency": "price/currency",
                "quantity": "stock",
            },
        },
    )
    result = sync_supplier(hub_dsn, echo, None, RUN, tmp_path / "work")
    expected_bad = {sku: column for sku, *_, column in rows if column}
    assert (result.rows_read, result.rows_quarantined) == (len(rows), len(expected_bad))
    with psycopg.connect(hub_dsn) as db:
        quarantined = dict(db.execute("SELECT record_key, column_name FROM hub.quarantine").fetchall())
    assert quarantined == expected_bad
    loaded = offers(hub_dsn)
    assert {sku: loaded[sku]["gtin"] for sku in ("E-08", "E-12", "E-13", "E-14", "E-LZ")} == {
        "E-08": "00000096385074",
        "E-12": "00036000291452",
        "E-13": "05901234123457",
        "E-14": "15901234123454",
        "E-LZ": "00000096385074",
    }
    assert loaded["E-LZ"]["purchase_price"] == Decimal("0.0001") and loaded["E-14"]["currency"] == "CZK"
