"""The hub catalog suite (GX on PostgreSQL): planted inconsistencies are counted per rule, a
consistent catalog passes, and the result is in the ledger with its Data Docs."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from commerce_sync.audit import ledger
from commerce_sync.errors import DataError
from commerce_sync.quality.catalog import HUB_CATALOG_CHECKS, check_hub_catalog

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="manual__q", dag_id="hub_to_channel_offers", task_id="check_hub_catalog")
TID = uuid.uuid4()


def _product(conn: psycopg.Connection, sku: str, price: str = "10", currency: str = "PLN", active: bool = True) -> None:
    conn.execute(
        "INSERT INTO hub.product (sku, name, purchase_price, currency, vat_rate, active, row_hash, transfer_id) "
        "VALUES (%s, %s, %s, %s, 0.23, %s, 'h', %s)",
        (sku, f"Produkt {sku}", price, currency, active, TID),
    )


def _supply(
    conn: psycopg.Connection,
    sku: str,
    *,
    offer_active: bool = True,
    chosen: int = 5,
    total: int = 5,
    currency: str = "PLN",
) -> None:
    conn.execute(
        "INSERT INTO hub.supplier_offer (supplier, supplier_sku, purchase_price, currency, quantity, active, row_hash, "
        "transfer_id) VALUES ('acme', %s, 8, 'PLN', %s, %s, 'h', %s)",
        (f"A-{sku}", chosen, offer_active, TID),
    )
    conn.execute(
        "INSERT INTO hub.sku_supply (sku, supplier, supplier_sku, purchase_price, currency, chosen_quantity, "
        "total_quantity, offers_considered, policy, supplier_offer_version, row_hash, transfer_id) "
        "VALUES (%s, 'acme', %s, 8, %s, %s, %s, 1, 'cheapest_in_stock', 1, 'h', %s)",
        (sku, f"A-{sku}", currency, chosen, total, TID),
    )


def _good_catalog(conn: psycopg.Connection, n: int = 10) -> None:
    for i in range(1, n + 1):
        _product(conn, f"SKU-{i}")
        if i % 2:
            _supply(conn, f"SKU-{i}")


def test_consistent_catalog_passes_and_is_recorded(hub_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(hub_dsn) as conn:
        _good_catalog(conn)
    outcome = check_hub_catalog(hub_dsn, RUN, tmp_path, max_failing_skus=0)
    assert (outcome.failed, outcome.rows_quarantined, outcome.rows_evaluated) == (0, 0, 10)
    assert outcome.expectations == len(HUB_CATALOG_CHECKS)
    with psycopg.connect(hub_dsn, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM audit.transfer WHERE dataset = 'hub_catalog'").fetchone()
    assert row is not None and row["status"] == "success"
    assert row["details"]["validation"]["passed"] == len(HUB_CATALOG_CHECKS)
    assert (tmp_path / row["details"]["data_docs"]).is_file()


def test_each_catalog_rule_counts_exactly_the_planted_skus(hub_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(hub_dsn) as conn:
        _good_catalog(conn)
        _product(conn, "FREE-1", price="0")
        _product(conn, "FREE-2", price="0")
        _product(conn, "FREE-OLD", price="0", active=False)  # inactive: not priced is fine
        _product(conn, "CUR-1", currency="XYZ")
        for sku in ("GONE-1", "MORE-1", "CUR-2"):
            _product(conn, sku)
        _product(conn, "OFF-1", active=False)
        _supply(conn, "GONE-1", offer_active=False)
        _supply(conn, "MORE-1", chosen=9, total=4)
        _supply(conn, "CUR-2", currency="ABC")
        _supply(conn, "OFF-1")
    outcome = check_hub_catalog(hub_dsn, RUN, None)
    counts = {r.expectation: r.unexpected_count for r in outcome.results}
    assert counts == {
        "active_product_priced": 2,
        "product_currency_known": 1,
        "supply_currency_known": 1,
        "supply_offer_exists": 1,
        "supply_quantity_consistent": 1,
        "supply_for_active_product": 1,
    }
    with psycopg.connect(hub_dsn, row_factory=dict_row) as conn:
        details = conn.execute("SELECT details FROM audit.transfer WHERE dataset = 'hub_catalog'").fetchone()
    assert details is not None
    assert sorted(details["details"]["validation"]["failing_skus_sample"]["active_product_priced"]) == [
        "FREE-1",
        "FREE-2",
    ]
    with pytest.raises(DataError, match=r"7 inconsistent SKU\(s\), more than the 3 allowed.*FREE-"):
        check_hub_catalog(hub_dsn, RUN, None, max_failing_skus=3)
    with psycopg.connect(hub_dsn) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM audit.transfer ORDER BY seq")]
    assert statuses == ["success", "failed"]
