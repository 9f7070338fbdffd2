"""The sandbox ERP: a PostgreSQL database of its own with ``erp.products`` loaded from the catalog.

The hub reads it incrementally by ``updated_at``, so the table behaves like a real ERP's: a
trigger bumps ``updated_at`` whenever a row really changes, and reloading the demo does not touch
rows that are already there (a re-run must not look like a change to every product).
"""

from __future__ import annotations

from decimal import Decimal

from psycopg import sql

from commerce_sync.db import connect, ensure_database, redact
from commerce_sync.errors import CommerceSyncError
from commerce_sync_sandbox.catalog import products

COLUMNS = (
    "sku",
    "ean",
    "name",
    "brand",
    "category",
    "description",
    "purchase_price",
    "vat_rate",
    "stock",
    "reserved",
    "active",
    "updated_at",
)
_LOAD_LOCK = 0x65727021  # serialises concurrent loads of the same ERP database

_DDL = """
CREATE SCHEMA IF NOT EXISTS erp;
CREATE TABLE IF NOT EXISTS erp.products (
    sku            text PRIMARY KEY,
    ean            text,
    name           text NOT NULL,
    brand          text,
    category       text,
    description    text,
    purchase_price numeric(12, 2) NOT NULL,
    vat_rate       numeric(5, 4) NOT NULL,
    stock          integer NOT NULL DEFAULT 0,
    reserved       integer NOT NULL DEFAULT 0,
    active         boolean NOT NULL DEFAULT true,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS products_updated_at_idx ON erp.products (updated_at, sku);
CREATE OR REPLACE FUNCTION erp.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;
-- Only real changes bump the timestamp: a no-op UPDATE must not look like new data.
CREATE OR REPLACE TRIGGER products_touch_updated_at
    BEFORE UPDATE ON erp.products
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION erp.touch_updated_at();
-- The doorbell of event-driven sync: every statement that changes products or stock rings it once
-- per transaction (NOTIFY folds identical payloads), delivered at commit. The hub's trigger
-- (commerce_sync.triggers.PostgresChangeTrigger) LISTENs and then reads the (updated_at, sku) watermark.
CREATE OR REPLACE FUNCTION erp.notify_products_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('erp_products_changed', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER products_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON erp.products
    FOR EACH STATEMENT
    EXECUTE FUNCTION erp.notify_products_changed();
"""
NOTIFY_CHANNEL = "erp_products_changed"


def load_erp(url: str, n: int = 300, seed: int = 42, *, reset: bool = False) -> int:
    """Create the ERP database and load the catalog into ``erp.products``.

    Rows already present are left as they are, so loading twice changes nothing; SKUs missing
    from the table (for example after raising ``n``) are added. ``reset=True`` drops the schema
    and loads the catalog afresh.

    Args:
        url: libpq URL of the ERP database (created if missing).
        n: number of catalog products.
        seed: catalog seed.
        reset: drop and reload everything.

    Returns:
        The number of rows in ``erp.products`` afterwards.
    """
    ensure_database(url)
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOAD_LOCK,))
        if reset:
            conn.execute("DROP SCHEMA IF EXISTS erp CASCADE")
        conn.execute(_DDL)
        conn.execute("CREATE TEMP TABLE erp_load (LIKE erp.products INCLUDING DEFAULTS) ON COMMIT DROP")
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
        with conn.cursor() as cur:
            copy_stmt = sql.SQL("COPY erp_load ({}) FROM STDIN").format(columns)
            with cur.copy(copy_stmt) as copy:
                for p in products(n, seed):
                    copy.write_row(
                        (
                            p.sku,
                            p.ean,
                            p.name,
                            p.brand,
                            p.category,
                            p.description,
                            p.purchase_price,
                            p.vat_rate,
                            p.stock,
                            p.reserved,
                            p.active,
                            p.updated_at,
                        )
                    )
            # ON CONFLICT DO NOTHING keeps existing rows (and their updated_at) untouched.
            cur.execute(
                sql.SQL(
                    "INSERT INTO erp.products ({cols}) SELECT {cols} FROM erp_load ORDER BY sku "
                    "ON CONFLICT (sku) DO NOTHING"
                ).format(cols=columns)
            )
            row = cur.execute("SELECT count(*) FROM erp.products").fetchone()
        assert row is not None
        return int(row[0])


def set_purchase_price(url: str, sku: str, price: Decimal) -> None:
    """Change one product's purchase price, as a buyer would in the ERP (bumps ``updated_at``).

    Raises:
        CommerceSyncError: the SKU is not in ``erp.products``.
    """
    with connect(url) as conn:
        cur = conn.execute("UPDATE erp.products SET purchase_price = %s WHERE sku = %s", (price, sku))
        if cur.rowcount != 1:
            raise CommerceSyncError(f"ERP {redact(url)}: no product with SKU {sku!r} in erp.products")
