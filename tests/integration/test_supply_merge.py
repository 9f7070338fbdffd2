"""Multi-supplier merge into hub.sku_supply: policies, matching, totals, versions, removals, staleness."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from commerce_sync.audit import ledger
from commerce_sync.config import Supplier, SupplyMerge
from commerce_sync.sources.supply_merge import failed_in_run, merge_supply, stale_suppliers

pytestmark = pytest.mark.integration

RUN = ledger.RunContext(run_id="scheduled__1", dag_id="suppliers_to_hub_offers", task_id="merge_supplier_offers")
SEED = uuid.uuid4()


def supplier(supplier_id: str, priority: int = 100, match_by: str = "gtin", enabled: bool = True) -> Supplier:
    return Supplier.model_validate(
        {
            "id": supplier_id,
            "name": supplier_id,
            "format": "bmecat",
            "enabled": enabled,
            "priority": priority,
            "match_by": match_by,
            "transport": {"type": "file", "path": f"{supplier_id}.xml"},
        }
    )


def product(db: psycopg.Connection, sku: str, gtin: str | None, active: bool = True) -> None:
    db.execute(
        "INSERT INTO hub.product (sku, gtin, name, purchase_price, currency, vat_rate, active, row_hash, transfer_id)"
        " VALUES (%s, %s, %s, 1, 'PLN', 0.23, %s, 'h', %s)",
        (sku, gtin, sku, active, SEED),
    )


def offer(
    db: psycopg.Connection, supplier_id: str, sku: str, gtin: str | None, price: str, qty: int, currency: str = "PLN"
) -> None:
    db.execute(
        "INSERT INTO hub.supplier_offer (supplier, supplier_sku, gtin, purchase_price, currency, quantity, row_hash,"
        " transfer_id) VALUES (%s, %s, %s, %s, %s, %s, 'h', %s)"
        " ON CONFLICT (supplier, supplier_sku) DO UPDATE SET purchase_price = EXCLUDED.purchase_price,"
        " quantity = EXCLUDED.quantity, version = hub.supplier_offer.version + 1",
        (supplier_id, sku, gtin, Decimal(price), currency, qty, SEED),
    )


def supply(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as db:
        return {r["sku"]: r for r in db.execute("SELECT * FROM hub.sku_supply ORDER BY sku").fetchall()}


G1 = "05901234123457"
G2 = "04006381333931"
SUPPLIERS = [supplier("alfa", 10), supplier("bravo", 20), supplier("charlie", 5), supplier("delta", 1, "sku")]


@pytest.fixture
def hub(hub_dsn: str) -> str:
    with psycopg.connect(hub_dsn) as db:
        product(db, "P1", G1)
        product(db, "P2", G2)
        product(db, "P3", None)
        product(db, "OLD", "00000000000017", active=False)
        offer(db, "alfa", "A-1", G1, "10.00", 0)  # cheapest but out of stock
        offer(db, "bravo", "B-1", G1, "12.00", 5)
        offer(db, "charlie", "C-1", G1, "11.00", 3)
        offer(db, "bravo", "B-2", G2, "7.00", 0)  # only offer for P2, no stock anywhere
        offer(db, "delta", "P3", None, "30.00", 2)  # matched by SKU
        offer(db, "alfa", "A-9", "00000000000017", "1.00", 9)  # inactive product: ignored
    return hub_dsn


def test_cheapest_in_stock_totals_and_rerun_changes_nothing(hub: str) -> None:
    first = merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN)
    rows = supply(hub)
    assert sorted(rows) == ["P1", "P2", "P3"] and first.skus == 3 and first.rows_changed == 3
    p1 = rows["P1"]
    assert (p1["supplier"], p1["supplier_sku"], p1["purchase_price"]) == ("charlie", "C-1", Decimal("11.0000"))
    assert (p1["chosen_quantity"], p1["total_quantity"], p1["offers_considered"]) == (3, 8, 3)
    assert p1["policy"] == "cheapest_in_stock" and p1["transfer_id"] == first.transfer_id
    assert (rows["P2"]["supplier"], rows["P2"]["chosen_quantity"], rows["P2"]["total_quantity"]) == ("bravo", 0, 0)
    assert (rows["P3"]["supplier"], rows["P3"]["supplier_sku"]) == ("delta", "P3")

    again = merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN)
    assert again.rows_changed == 0 and supply(hub) == rows
    with psycopg.connect(hub, row_factory=dict_row) as db:
        ledger_rows = db.execute("SELECT * FROM audit.transfer WHERE dataset = 'sku_supply' ORDER BY seq").fetchall()
        assert [r["rows_changed"] for r in ledger_rows] == [3, 0]
        counted = db.execute(
            "SELECT count(*) AS n FROM audit.change WHERE transfer_id = %s", (first.transfer_id,)
        ).fetchone()
        assert counted is not None and ledger_rows[0]["changes_count"] == counted["n"] == 9


def test_ties_go_to_supplier_priority_and_price_change_moves_the_choice(hub: str) -> None:
    with psycopg.connect(hub) as db:
        offer(db, "bravo", "B-1", G1, "11.00", 5)  # now as cheap as charlie; charlie has priority 5 < 20
    merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN)
    assert supply(hub)["P1"]["supplier"] == "charlie"
    with psycopg.connect(hub) as db:
        offer(db, "bravo", "B-1", G1, "10.99", 5)
    result = merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN)
    p1 = supply(hub)["P1"]
    assert (p1["supplier"], p1["purchase_price"], p1["version"]) == ("bravo", Decimal("10.9900"), 2)
    assert result.rows_changed == 1
    with psycopg.connect(hub) as db:
        moved = db.execute(
            "SELECT field, old_value, new_value FROM audit.change WHERE transfer_id = %s ORDER BY field",
            (result.transfer_id,),
        ).fetchall()
    assert moved == [
        ("purchase_price", "11.0000 PLN", "10.9900 PLN"),
        ("supplier_offer", "charlie:C-1", "bravo:B-1"),
    ]


def test_priority_policy_takes_first_supplier_with_stock(hub: str) -> None:
    merge_supply(hub, SUPPLIERS, SupplyMerge(policy="priority"), RUN)
    # alfa (10) is out of stock; charlie (5) comes before bravo (20)
    assert supply(hub)["P1"]["supplier"] == "charlie"
    reordered = [supplier("alfa", 10), supplier("bravo", 1), supplier("charlie", 5), supplier("delta", 1, "sku")]
    merge_supply(hub, reordered, SupplyMerge(policy="priority"), RUN)
    p1 = supply(hub)["P1"]
    assert (p1["supplier"], p1["purchase_price"], p1["policy"]) == ("bravo", Decimal("12.0000"), "priority")


def test_sku_without_active_offers_leaves_and_disabled_suppliers_do_not_count(hub: str) -> None:
    merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN)
    with psycopg.connect(hub) as db:
        db.execute("UPDATE hub.supplier_offer SET active = false, quantity = 0 WHERE supplier = 'delta'")
    without_charlie = [s if s.id != "charlie" else supplier("charlie", 5, enabled=False) for s in SUPPLIERS]
    result = merge_supply(hub, without_charlie, SupplyMerge(), RUN)
    rows = supply(hub)
    assert "P3" not in rows and result.rows_removed == 1
    assert (rows["P1"]["supplier"], rows["P1"]["total_quantity"], rows["P1"]["offers_considered"]) == ("bravo", 5, 2)
    with psycopg.connect(hub) as db:
        removal = db.execute(
            "SELECT field, old_value, new_value FROM audit.change WHERE transfer_id = %s AND sku = 'P3' ORDER BY field",
            (result.transfer_id,),
        ).fetchall()
    assert ("supplier_offer", "delta:P3", None) in removal


def _load(db: psycopg.Connection, supplier_id: str, status: str, run: ledger.RunContext, age_hours: float) -> None:
    transfer = ledger.Transfer(source=f"supplier:{supplier_id}", target="hub", dataset="supplier_offer", run=run)
    transfer.started_at = datetime.now(UTC) - timedelta(hours=age_hours)
    ledger.append(db, transfer, status)  # type: ignore[arg-type]


def test_stale_suppliers_failed_in_run_never_loaded_or_too_old(hub: str) -> None:
    earlier = ledger.RunContext(run_id="scheduled__0", dag_id=RUN.dag_id)
    with psycopg.connect(hub) as db:
        _load(db, "alfa", "success", RUN, 0)
        _load(db, "bravo", "success", earlier, 0)
        _load(db, "bravo", "failed", RUN, 0)
        _load(db, "charlie", "success", RUN, 0)
    result = merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN, check_run=True)
    assert sorted(result.stale) == ["bravo", "delta"]
    assert "failed in run scheduled__1" in result.stale["bravo"] and "never" in result.stale["delta"]
    with psycopg.connect(hub, row_factory=dict_row) as db:
        row = db.execute("SELECT * FROM audit.transfer WHERE dataset = 'sku_supply'").fetchone()
        assert row is not None and row["details"]["stale_suppliers"] == result.stale
        assert row["message"] == "stale suppliers: bravo, delta"
        # Without the run check (ERP DAG), only age counts.
        future = datetime.now(UTC) + timedelta(hours=30)
        aged = stale_suppliers(db, SUPPLIERS, SupplyMerge(stale_after_hours=24), RUN, False, now=future)
    assert sorted(aged) == ["alfa", "bravo", "charlie", "delta"] and "older than 24" in aged["alfa"]


def test_stale_offers_can_be_excluded(hub: str) -> None:
    with psycopg.connect(hub) as db:
        for supplier_id in ("alfa", "bravo", "delta"):
            _load(db, supplier_id, "success", RUN, 0)
        _load(db, "charlie", "failed", RUN, 0)
    kept = merge_supply(hub, SUPPLIERS, SupplyMerge(), RUN, check_run=True)
    assert list(kept.stale) == ["charlie"] and supply(hub)["P1"]["supplier"] == "charlie"
    excluded = merge_supply(hub, SUPPLIERS, SupplyMerge(stale_offers="exclude"), RUN, check_run=True)
    p1 = supply(hub)["P1"]
    assert list(excluded.stale) == ["charlie"] and excluded.rows_changed == 1
    assert (p1["supplier"], p1["total_quantity"], p1["offers_considered"]) == ("bravo", 5, 2)


def test_failed_in_run_lists_suppliers_whose_last_try_failed(hub: str) -> None:
    with psycopg.connect(hub) as db:
        _load(db, "alfa", "failed", RUN, 0)
        _load(db, "alfa", "success", RUN, 0)  # a retry succeeded
        _load(db, "bravo", "failed", RUN, 0)
        _load(db, "charlie", "failed", ledger.RunContext(run_id="other", dag_id=RUN.dag_id), 0)
    assert failed_in_run(hub, RUN) == ["bravo"]
