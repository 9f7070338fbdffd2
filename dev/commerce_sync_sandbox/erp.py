"""The sandbox ERP: a PostgreSQL database of its own with ``erp.products`` loaded from the catalog.

The hub reads it incrementally by ``updated_at``, so the table behaves like a real ERP's: a
trigger bumps ``updated_at`` whenever a row really changes, and reloading the demo does not touch
rows that are already there (a re-run must not look like a change to every product).

Orders handed over by the hub land in ``erp.orders`` / ``erp.order_lines`` through two functions, as a
real ERP's order intake would:

- ``erp.book_order(key, channel, order_id, lines jsonb)`` books an order once per ``key``
  (``channel:order_id``): each line's units are added to ``erp.products.reserved`` and the line records
  the product row's new ``updated_at`` (``booked_at``): from that version on, the ERP's own figures
  include the order. Called again with the same key it books nothing and returns the same lines, so a
  hand-off repeated after a crash is counted once. A SKU the ERP does not know refuses the whole order.
- ``erp.cancel_order(key)`` cancels a booked order once: its units leave ``reserved`` again.
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
CREATE TABLE IF NOT EXISTS erp.orders (
    order_key    text PRIMARY KEY,
    channel      text NOT NULL,
    order_id     text NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cancelled')),
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    cancelled_at timestamptz,
    deliveries   integer NOT NULL DEFAULT 1          -- how often the hub handed it over (booked once)
);
CREATE TABLE IF NOT EXISTS erp.order_lines (
    order_key text NOT NULL REFERENCES erp.orders (order_key),
    line_id   text NOT NULL,
    sku       text NOT NULL REFERENCES erp.products (sku),
    quantity  integer NOT NULL CHECK (quantity > 0),
    booked_at timestamptz NOT NULL,
    PRIMARY KEY (order_key, line_id)
);
CREATE OR REPLACE FUNCTION erp.book_order(p_key text, p_channel text, p_order_id text, p_lines jsonb)
RETURNS TABLE (line_id text, sku text, booked_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    line jsonb;
    unknown text;
BEGIN
    INSERT INTO erp.orders (order_key, channel, order_id) VALUES (p_key, p_channel, p_order_id)
    ON CONFLICT (order_key) DO NOTHING;
    IF NOT FOUND THEN
        UPDATE erp.orders SET deliveries = deliveries + 1 WHERE order_key = p_key;
    ELSE
        SELECT l->>'sku' INTO unknown FROM jsonb_array_elements(p_lines) AS l
        WHERE NOT EXISTS (SELECT 1 FROM erp.products AS p WHERE p.sku = l->>'sku') LIMIT 1;
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'order %: SKU % is not in erp.products', p_key, unknown USING ERRCODE = '23503';
        END IF;
        FOR line IN SELECT * FROM jsonb_array_elements(p_lines) ORDER BY value->>'sku', value->>'line_id' LOOP
            UPDATE erp.products AS p SET reserved = p.reserved + (line->>'quantity')::integer
            WHERE p.sku = line->>'sku';
            INSERT INTO erp.order_lines (order_key, line_id, sku, quantity, booked_at)
            SELECT p_key, line->>'line_id', p.sku, (line->>'quantity')::integer, p.updated_at
            FROM erp.products AS p WHERE p.sku = line->>'sku';
        END LOOP;
    END IF;
    RETURN QUERY SELECT ol.line_id, ol.sku, ol.booked_at FROM erp.order_lines AS ol
                 WHERE ol.order_key = p_key ORDER BY ol.line_id;
END
$$;
CREATE OR REPLACE FUNCTION erp.cancel_order(p_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE erp.orders SET status = 'cancelled', cancelled_at = clock_timestamp()
    WHERE order_key = p_key AND status = 'open';
    IF NOT FOUND THEN
        RETURN EXISTS (SELECT 1 FROM erp.orders WHERE order_key = p_key);
    END IF;
    UPDATE erp.products AS p SET reserved = greatest(0, p.reserved - l.quantity)
    FROM (SELECT ol.sku, sum(ol.quantity)::integer AS quantity FROM erp.order_lines AS ol
          WHERE ol.order_key = p_key GROUP BY ol.sku) AS l
    WHERE p.sku = l.sku;
    RETURN true;
END
$$;
"""


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
