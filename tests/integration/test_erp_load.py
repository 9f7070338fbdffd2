"""ERP -> hub against real PostgreSQL databases: incremental, idempotent, deactivation, quarantine."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from commerce_sync.audit import ledger
from commerce_sync.config import ErpSource
from commerce_sync.db import connect, drop_database
from commerce_sync.sources.erp import sync_erp
from commerce_sync_sandbox.erp import load_erp, set_purchase_price
from tests.conftest import new_database

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="test", dag_id="erp_to_hub_products", task_id="sync_erp_products")
ERP = ErpSource(
    conn_id="erp_db",
    query=(
        "SELECT p.sku, p.ean AS gtin, p.name, p.brand, p.category, p.description, p.purchase_price, "
        "p.vat_rate, p.stock, p.reserved, p.active, p.updated_at FROM erp.products AS p"
    ),
)


@pytest.fixture
def erp_dsn() -> Iterator[str]:
    url = new_database()
    load_erp(url, n=120)
    yield url
    drop_database(url)


def _snapshot(hub: str) -> list[tuple]:
    with connect(hub) as conn:
        products = conn.execute(
            "SELECT sku, gtin, name, purchase_price, vat_rate, active, row_hash, version, transfer_id "
            "FROM hub.product ORDER BY sku"
        ).fetchall()
        stock = conn.execute("SELECT sku, location, quantity, reserved, version FROM hub.stock ORDER BY sku").fetchall()
    return products + stock


def test_load_twice_leaves_hub_unchanged(hub_dsn: str, erp_dsn: str) -> None:
    first = sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    assert (first.rows_read, first.rows_loaded, first.rows_quarantined, first.rows_changed) == (120, 120, 0, 120)
    before = _snapshot(hub_dsn)
    second = sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    assert second.rows_changed == 0
    assert second.rows_read < 120, "incremental: only rows at or after the watermark are read again"
    assert _snapshot(hub_dsn) == before
    full = sync_erp(hub_dsn, ERP, erp_dsn, RUN, full_resync=True)
    assert (full.rows_read, full.rows_changed) == (120, 0)
    assert _snapshot(hub_dsn) == before
    with connect(hub_dsn) as conn:
        rows = conn.execute("SELECT status, rows_changed FROM audit.transfer ORDER BY seq").fetchall()
        assert ledger.verify(conn).ok
    assert rows == [("success", 120), ("success", 0), ("success", 0)]
    with connect(hub_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM staging.erp_product").fetchone()[0]
    assert left == 0, "staging rows are removed after the merge"


def test_one_price_change_changes_one_product(hub_dsn: str, erp_dsn: str) -> None:
    sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    set_purchase_price(erp_dsn, "SKU-000007", Decimal("123.45"))
    result = sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    assert result.rows_changed == 1
    with connect(hub_dsn) as conn:
        price, version, tid = conn.execute(
            "SELECT purchase_price, version, transfer_id FROM hub.product WHERE sku = 'SKU-000007'"
        ).fetchone()
    assert (price, version, str(tid)) == (Decimal("123.45"), 2, result.transfer_id)


def test_full_resync_deactivates_products_gone_from_erp(hub_dsn: str, erp_dsn: str) -> None:
    sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    with connect(erp_dsn) as conn:
        conn.execute("DELETE FROM erp.products WHERE sku IN ('SKU-000003', 'SKU-000004')")
    assert sync_erp(hub_dsn, ERP, erp_dsn, RUN).rows_deactivated == 0  # incremental cannot see deletes
    result = sync_erp(hub_dsn, ERP, erp_dsn, RUN, full_resync=True)
    assert result.rows_deactivated == 2
    with connect(hub_dsn) as conn:
        rows = conn.execute(
            "SELECT sku, active FROM hub.product WHERE sku IN ('SKU-000003', 'SKU-000004') ORDER BY sku"
        ).fetchall()
    assert rows == [("SKU-000003", False), ("SKU-000004", False)], "never deleted, only deactivated"


def test_bad_erp_rows_are_quarantined_and_good_rows_load(hub_dsn: str, erp_dsn: str) -> None:
    with connect(erp_dsn) as conn:
        conn.execute("UPDATE erp.products SET ean = '5901234123458' WHERE sku = 'SKU-000010'")
        conn.execute("UPDATE erp.products SET purchase_price = 0 WHERE sku = 'SKU-000011'")
    result = sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    assert (result.rows_loaded, result.rows_quarantined) == (118, 2)
    with connect(hub_dsn) as conn:
        rows = conn.execute(
            "SELECT record_key, expectation, reason FROM hub.quarantine WHERE status = 'open' ORDER BY record_key"
        ).fetchall()
        assert (
            conn.execute("SELECT count(*) FROM hub.product WHERE sku IN ('SKU-000010', 'SKU-000011')").fetchone()[0]
            == 0
        )
    assert rows[0][:2] == ("SKU-000010", "gtin_valid")
    assert "check digit" in rows[0][2]
    # Parsing problems are caught while streaming; rules such as price > 0 by the SQL suite (quality gate).
    assert rows[1][:2] == ("SKU-000011", "expect_column_values_to_be_between")
    assert "must be > 0" in rows[1][2]
    # Fixed in the ERP -> loads, and the quarantine entry is resolved.
    with connect(erp_dsn) as conn:
        conn.execute("UPDATE erp.products SET purchase_price = 10 WHERE sku = 'SKU-000011'")
    sync_erp(hub_dsn, ERP, erp_dsn, RUN)
    with connect(hub_dsn) as conn:
        status = conn.execute("SELECT status FROM hub.quarantine WHERE record_key = 'SKU-000011'").fetchone()[0]
    assert status == "resolved"


def test_unreachable_erp_records_a_failed_transfer(hub_dsn: str) -> None:
    with pytest.raises(Exception, match=r"connection|refused|connect"):
        sync_erp(hub_dsn, ERP, "postgresql://postgres@127.0.0.1:1/nowhere", RUN)
    with connect(hub_dsn) as conn:
        status, message = conn.execute("SELECT status, message FROM audit.transfer").fetchone()
        assert conn.execute("SELECT count(*) FROM hub.product").fetchone()[0] == 0
    assert status == "failed"
    assert message
