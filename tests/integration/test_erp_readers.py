"""ERP readers: the REST API (cursor and page paging, bearer and basic auth, retries) and a second SQL
dialect through SQLAlchemy (SQLite), each incremental by watermark, idempotent, and deactivating
deleted products on a full resync. Real PostgreSQL hub, real HTTP server, real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.audit import ledger
from commerce_sync.config import ErpFile, ErpRestSource, ErpSource, load_model
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect, drop_database
from commerce_sync.sources.erp import sync_erp
from commerce_sync.sources.erp_readers import sql_url
from commerce_sync.transport.http import ChannelRequestError
from commerce_sync_sandbox.catalog import products
from commerce_sync_sandbox.erp import load_erp, set_purchase_price
from commerce_sync_sandbox.erp_rest import ErpRestServer
from tests.conftest import new_database

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="test", dag_id="erp_to_hub_products", task_id="sync_erp_products")
N = 60


@pytest.fixture
def erp_db() -> Iterator[str]:
    url = new_database()
    load_erp(url, n=N)
    yield url
    drop_database(url)


@pytest.fixture
def api(erp_db: str) -> Iterator[ErpRestServer]:
    with ErpRestServer(erp_db) as server:
        yield server


def rest_erp(**changes: Any) -> ErpRestSource:
    return ErpRestSource.model_validate(
        {"type": "rest", "conn_id": "erp_api", "path": "/api/products", "page_size": 7, "fields": {"gtin": "ean"}}
        | changes
    )


def hub_state(hub: str) -> list[tuple[Any, ...]]:
    with connect(hub) as db:
        return db.execute(
            "SELECT p.sku, p.gtin, p.name, p.purchase_price, p.vat_rate, p.active, p.version, s.quantity, s.reserved"
            "  FROM hub.product AS p LEFT JOIN hub.stock AS s USING (sku) ORDER BY p.sku"
        ).fetchall()


def test_rest_cursor_paging_bearer_incremental_and_resync_deactivation(
    hub_dsn: str, erp_db: str, api: ErpRestServer
) -> None:
    conn = ConnectionInfo("erp_api", host=api.base_url, password=api.token, extra={"auth": "bearer"})
    first = sync_erp(hub_dsn, rest_erp(), conn, RUN)
    assert (first.rows_read, first.rows_loaded, first.rows_changed) == (N, N, N)
    assert len(api.requests) == N // 7 + 1 and "cursor" in api.requests[1]
    catalog = {p.sku: p for p in products(N)}
    state = hub_state(hub_dsn)
    sku, gtin, _, price, *_ = state[0]
    assert gtin == catalog[sku].ean.zfill(14) and price == catalog[sku].purchase_price

    again = sync_erp(hub_dsn, rest_erp(), conn, RUN)
    assert again.rows_changed == 0 and again.rows_read < N and hub_state(hub_dsn) == state
    assert "updated_since" in api.requests[-1]

    set_purchase_price(erp_db, sku, Decimal("123.45"))
    changed = sync_erp(hub_dsn, rest_erp(), conn, RUN)
    assert changed.rows_changed == 1 and hub_state(hub_dsn)[0][3] == Decimal("123.4500")

    with connect(erp_db) as db:
        db.execute("DELETE FROM erp.products WHERE sku = %s", (sku,))
    incremental = sync_erp(hub_dsn, rest_erp(), conn, RUN)
    assert incremental.rows_deactivated == 0 and hub_state(hub_dsn)[0][5] is True  # deletions need a resync
    resync = sync_erp(hub_dsn, rest_erp(), conn, RUN, full_resync=True)
    assert (resync.rows_read, resync.rows_deactivated) == (N - 1, 1)
    assert hub_state(hub_dsn)[0][5] is False, "deleted in the ERP: inactive in the hub, never dropped"


def test_rest_page_paging_basic_auth_retries_and_matches_sql_load(
    hub_dsn: str, erp_db: str, api: ErpRestServer
) -> None:
    api.token, api.basic, api.fail_first = None, ("sync", "s3cret"), 2
    conn = ConnectionInfo("erp_api", host=api.base_url, login="sync", password="s3cret")
    result = sync_erp(hub_dsn, rest_erp(paging="page", retries=3), conn, RUN)
    assert result.rows_read == N and "page" in api.requests[-1] and api.requests[-1]["page"] == [str(N // 7 + 1)]
    via_rest = hub_state(hub_dsn)

    other_hub = new_database()
    try:
        from commerce_sync.hub.migrate import migrate

        migrate(other_hub)
        sql_erp = ErpSource(
            conn_id="erp_db",
            query="SELECT p.sku, p.ean AS gtin, p.name, p.brand, p.category, p.description, p.purchase_price, "
            "p.vat_rate, p.stock, p.reserved, p.active, p.updated_at FROM erp.products AS p",
        )
        sync_erp(other_hub, sql_erp, erp_db, RUN)
        assert hub_state(other_hub) == via_rest
    finally:
        drop_database(other_hub)


def test_rest_wrong_token_is_final_and_recorded(hub_dsn: str, api: ErpRestServer) -> None:
    conn = ConnectionInfo("erp_api", host=api.base_url, password="wrong", extra={"auth": "bearer"})
    with pytest.raises(ChannelRequestError, match="401"):
        sync_erp(hub_dsn, rest_erp(), conn, RUN)
    assert len(api.requests) == 1
    with connect(hub_dsn) as db:
        row = db.execute("SELECT status, message FROM audit.transfer").fetchone()
    assert row is not None and row[0] == "failed" and "wrong" not in row[1]


def _sqlite_erp(path: Path, n: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE products (sku TEXT PRIMARY KEY, ean TEXT, name TEXT, brand TEXT, category TEXT,"
            " description TEXT, purchase_price TEXT, vat_rate TEXT, stock INTEGER, reserved INTEGER,"
            " active INTEGER, updated_at TEXT)"
        )
        db.executemany(
            "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    p.sku,
                    p.ean,
                    p.name,
                    p.brand,
                    p.category,
                    p.description,
                    str(p.purchase_price),
                    str(p.vat_rate),
                    p.stock,
                    p.reserved,
                    int(p.active),
                    p.updated_at.replace(tzinfo=None).isoformat(sep=" "),
                )
                for p in products(n)
            ],
        )


def test_sqlalchemy_dialect_sqlite_incremental_and_resync(hub_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "erp.sqlite"
    _sqlite_erp(path, N)
    conn = ConnectionInfo("erp_sqlite", conn_type="sqlite", schema=str(path))
    assert sql_url(conn) == f"sqlite:///{path}"
    erp = ErpSource(
        conn_id="erp_sqlite",
        query="SELECT sku, ean AS gtin, name, brand, category, description, purchase_price, vat_rate, stock, "
        "reserved, active, updated_at FROM products",
        fetch_size=100,
    )
    first = sync_erp(hub_dsn, erp, conn, RUN)
    assert (first.rows_read, first.rows_loaded, first.rows_changed) == (N, N, N)
    state = hub_state(hub_dsn)
    second = sync_erp(hub_dsn, erp, conn, RUN)
    assert second.rows_changed == 0 and second.rows_read < N and hub_state(hub_dsn) == state
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM products WHERE sku = ?", (state[1][0],))
    resync = sync_erp(hub_dsn, erp, conn, RUN, full_resync=True)
    assert (resync.rows_read, resync.rows_deactivated) == (N - 1, 1)


def test_erp_yaml_type_defaults_to_sql_and_rest_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "erp.yaml"
    path.write_text("version: 1\nerp:\n  conn_id: erp_db\n  query: SELECT 1\n", encoding="utf-8")
    assert isinstance(load_model(path, ErpFile).erp, ErpSource)
    path.write_text(
        "version: 1\nerp:\n  type: rest\n  conn_id: erp_api\n  path: /api/products\n  paging: page\n", encoding="utf-8"
    )
    erp = load_model(path, ErpFile).erp
    assert isinstance(erp, ErpRestSource) and erp.paging == "page"
