"""The sandbox ERP database: idempotent load, real updated_at bumps."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from commerce_sync.db import drop_database, with_database
from commerce_sync.errors import CommerceSyncError
from commerce_sync_sandbox.erp import load_erp, set_purchase_price

pytestmark = pytest.mark.integration


@pytest.fixture
def erp_url() -> Iterator[str]:
    base = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    url = with_database(base, f"cs_test_erp_{uuid.uuid4().hex[:12]}")  # load_erp must create it itself
    yield url
    drop_database(url)


def _snapshot(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM erp.products ORDER BY sku").fetchall()


def test_load_twice_changes_nothing(erp_url: str) -> None:
    assert load_erp(erp_url, 50) == 50
    before = _snapshot(erp_url)
    assert load_erp(erp_url, 50) == 50
    assert _snapshot(erp_url) == before
    with psycopg.connect(erp_url) as conn:
        # A no-op update is not a change either.
        conn.execute("UPDATE erp.products SET stock = stock")
    assert _snapshot(erp_url) == before
    assert load_erp(erp_url, 60) == 60  # new SKUs are added, old ones untouched
    assert _snapshot(erp_url)[:50] == before


def test_set_purchase_price_bumps_updated_at(erp_url: str) -> None:
    load_erp(erp_url, 20)
    with psycopg.connect(erp_url) as conn:
        old = conn.execute("SELECT purchase_price, updated_at FROM erp.products WHERE sku = 'SKU-000003'").fetchone()
    assert old is not None
    set_purchase_price(erp_url, "SKU-000003", Decimal("321.09"))
    with psycopg.connect(erp_url) as conn:
        new = conn.execute("SELECT purchase_price, updated_at FROM erp.products WHERE sku = 'SKU-000003'").fetchone()
        assert new is not None
        newest = conn.execute("SELECT max(updated_at) = %s FROM erp.products", (new[1],)).fetchone()
    assert new[0] == Decimal("321.09")
    assert new[1] > old[1]
    assert newest == (True,)  # an incremental reader picks exactly this row up
    with pytest.raises(CommerceSyncError, match="SKU-999999"):
        set_purchase_price(erp_url, "SKU-999999", Decimal("1.00"))


def test_reset_reloads(erp_url: str) -> None:
    load_erp(erp_url, 10)
    set_purchase_price(erp_url, "SKU-000001", Decimal("1.00"))
    changed = _snapshot(erp_url)
    assert load_erp(erp_url, 10, reset=True) == 10
    assert _snapshot(erp_url) != changed
    assert load_erp(erp_url, 10) == 10
