"""ERP products and own stock into the hub: incremental by watermark, streamed, change-detected.

Rows are read with a server-side cursor from the ERP's query (``erp.yaml``), validated and
normalised in a streaming pass, COPYed into ``staging.erp_product`` and merged into
``hub.product`` / ``hub.stock`` by row hash in one transaction together with the ledger row.
Rows with ``cursor >= watermark`` are read again on the next run on purpose: a row committed late
with the same timestamp is never missed, and the hash comparison makes the re-read a no-op.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from commerce_sync.audit import changes, ledger
from commerce_sync.config import ErpRestSource, ErpSource, QualityFile, data_docs_root, load_quality
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect
from commerce_sync.hub.source_lock import source_lock
from commerce_sync.quality.breakers import Override
from commerce_sync.quality.gate import check_batch
from commerce_sync.quality.suites import ERP_PRODUCTS
from commerce_sync.sources.erp_readers import read_erp_rows
from commerce_sync.sources.gtin import checked_gtin

DATASET = "product"
STAGED_COLUMNS = (
    "sku",
    "gtin",
    "name",
    "brand",
    "category",
    "description",
    "purchase_price",
    "currency",
    "vat_rate",
    "stock",
    "reserved",
    "active",
    "source_updated_at",
)
_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


@dataclass(frozen=True)
class RowProblem:
    """Why one ERP row cannot enter the hub."""

    record_no: int
    key: str | None
    expectation: str
    column: str
    observed: str | None
    reason: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class ErpSyncResult:
    """What one ERP transfer did."""

    transfer_id: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_changed: int
    rows_deactivated: int
    watermark: str | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value).strip()
    return text or None


# Integer digits beyond which an ERP number is refused while streaming (the columns hold far fewer;
# the SQL suite names the exact limits): it keeps giant values out of int() and out of every cast.
_DIGITS_MAX = 20
_INTEGER = re.compile(r"-?[0-9]+\Z")


def validate_row(
    record_no: int, row: dict[str, Any], currency: str, cursor_column: str = "updated_at"
) -> tuple[list[str | None] | None, RowProblem | None]:
    """Normalise one ERP row into staging values, or say which rule it breaks."""
    raw = {k: _text(v) for k, v in row.items()}
    sku = raw.get("sku")

    def problem(expectation: str, column: str, reason: str) -> tuple[None, RowProblem]:
        return None, RowProblem(record_no, sku, expectation, column, raw.get(column), reason, raw)

    # Only what must hold for the row to be typed and staged is checked here; the rules (price > 0,
    # VAT range, stock >= 0, name length, unique SKU, currency) are the SQL suite quality.suites.ERP_PRODUCTS.
    if not sku:
        return problem("sku_not_null", "sku", "sku is missing")
    gtin = raw.get("gtin")
    if gtin is not None:
        normalized, why = checked_gtin(gtin)
        if why:
            return problem("gtin_valid", "gtin", f"SKU {sku}: GTIN {gtin!r} {why}")
        gtin = normalized
    try:
        price = Decimal(raw.get("purchase_price") or "")
    except InvalidOperation:
        return problem("purchase_price_numeric", "purchase_price", f"SKU {sku}: purchase price is not a number")
    if not price.is_finite():
        return problem("purchase_price_numeric", "purchase_price", f"SKU {sku}: purchase price is not a number")
    if price.adjusted() > _DIGITS_MAX:  # 1e200000 is finite but overflows numeric in SQL
        return problem("purchase_price_numeric", "purchase_price", f"SKU {sku}: purchase price is out of range")
    try:
        vat = Decimal(raw.get("vat_rate") or "")
    except InvalidOperation:
        return problem("vat_rate_numeric", "vat_rate", f"SKU {sku}: VAT rate is not a number")
    if not vat.is_finite():
        return problem("vat_rate_numeric", "vat_rate", f"SKU {sku}: VAT rate is not a number")
    if vat.adjusted() > _DIGITS_MAX:
        return problem("vat_rate_numeric", "vat_rate", f"SKU {sku}: VAT rate is out of range")
    counts: dict[str, int] = {}
    for column in ("stock", "reserved"):
        value = raw.get(column) or "0"
        if not _INTEGER.match(value):  # ASCII digits only: str.isdigit() accepts "²", which int() refuses
            return problem(f"{column}_integer", column, f"SKU {sku}: {column} is not an integer")
        if len(value.lstrip("-").lstrip("0")) > _DIGITS_MAX:  # int() refuses > 4300 digits; SQL checks the range
            return problem(f"{column}_integer", column, f"SKU {sku}: {column} is out of range")
        counts[column] = int(value)
    active_text = (raw.get("active") or "true").lower()
    if active_text not in _TRUE | _FALSE:
        return problem("active_boolean", "active", f"SKU {sku}: active is not a boolean")
    values: list[str | None] = [
        sku,
        gtin,
        raw.get("name"),
        raw.get("brand"),
        raw.get("category"),
        raw.get("description"),
        str(price),
        currency,
        str(vat),
        str(counts["stock"]),
        str(counts["reserved"]),
        "true" if active_text in _TRUE else "false",
        raw.get(cursor_column),
    ]
    return values, None


def _read_watermark(conn: psycopg.Connection, source: str) -> datetime | None:
    row = conn.execute(
        "SELECT watermark FROM hub.source_watermark WHERE source = %s AND dataset = %s", (source, DATASET)
    ).fetchone()
    return row[0] if row else None


def _quarantine(conn: psycopg.Connection, source: str, transfer_id: str, problems: Sequence[RowProblem]) -> None:
    if not problems:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, record_no, expectation,
                                           column_name, observed_value, reason, raw)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [
                (
                    DATASET,
                    source,
                    transfer_id,
                    p.key,
                    p.record_no,
                    p.expectation,
                    p.column,
                    p.observed,
                    p.reason,
                    Jsonb(p.raw),
                )
                for p in problems
            ],
        )


_MERGE_PRODUCT = """
MERGE INTO hub.product AS t
USING (
    SELECT s.sku, s.gtin, s.name, s.brand, s.category, s.description,
           s.purchase_price::numeric AS purchase_price, s.currency, s.vat_rate::numeric AS vat_rate,
           s.active::boolean AS active, s.source_updated_at::timestamptz AS source_updated_at,
           md5(concat_ws('|', s.sku, s.gtin, s.name, s.brand, s.category, s.description,
                         s.purchase_price::numeric, s.currency, s.vat_rate::numeric, s.active::boolean))
               AS row_hash
    FROM staging.erp_product AS s
    WHERE s.transfer_id = %(transfer_id)s
) AS s ON t.sku = s.sku
WHEN MATCHED AND t.row_hash IS DISTINCT FROM s.row_hash THEN UPDATE SET
    gtin = s.gtin, name = s.name, brand = s.brand, category = s.category, description = s.description,
    purchase_price = s.purchase_price, currency = s.currency, vat_rate = s.vat_rate, active = s.active,
    row_hash = s.row_hash, version = t.version + 1, source_updated_at = s.source_updated_at,
    updated_at = now(), transfer_id = %(transfer_id)s
WHEN NOT MATCHED THEN INSERT
    (sku, gtin, name, brand, category, description, purchase_price, currency, vat_rate, active,
     row_hash, source_updated_at, transfer_id)
    VALUES (s.sku, s.gtin, s.name, s.brand, s.category, s.description, s.purchase_price, s.currency,
            s.vat_rate, s.active, s.row_hash, s.source_updated_at, %(transfer_id)s)
"""

# Row-level changes, compared staging vs hub BEFORE the merges (same transaction): purchase price
# per product and sellable own stock per location. source_ref names the ERP row version.
_RECORD_CHANGES = """
INSERT INTO audit.change (transfer_id, dataset, sku, field, old_value, new_value, source_ref)
SELECT %(transfer_id)s, c.dataset, c.sku, c.field, c.old_value, c.new_value,
       jsonb_build_object('erp_updated_at', c.source_updated_at, 'record_no', c.record_no,
                          'product_version', c.product_version, 'location', c.location)
FROM (
    SELECT 'product' AS dataset, s.sku, 'purchase_price' AS field,
           t.purchase_price::text AS old_value, s.purchase_price::numeric(14, 4)::text AS new_value,
           s.source_updated_at, s.record_no, NULL::text AS location,
           CASE WHEN t.sku IS NULL THEN 1
                WHEN t.row_hash IS DISTINCT FROM md5(concat_ws('|', s.sku, s.gtin, s.name, s.brand, s.category,
                         s.description, s.purchase_price::numeric, s.currency, s.vat_rate::numeric,
                         s.active::boolean))
                THEN t.version + 1 ELSE t.version END AS product_version
    FROM staging.erp_product AS s
    LEFT JOIN hub.product AS t ON t.sku = s.sku
    WHERE s.transfer_id = %(transfer_id)s
      AND t.purchase_price IS DISTINCT FROM s.purchase_price::numeric(14, 4)
    UNION ALL
    SELECT 'stock', s.sku, f.field, f.old_value, f.new_value, s.source_updated_at, s.record_no,
           %(location)s, NULL::bigint
    FROM staging.erp_product AS s
    LEFT JOIN hub.stock AS t ON t.sku = s.sku AND t.location = %(location)s
    CROSS JOIN LATERAL (VALUES ('quantity', t.quantity::text, s.stock::integer::text),
                               ('reserved', t.reserved::text, s.reserved::integer::text))
        AS f (field, old_value, new_value)
    WHERE s.transfer_id = %(transfer_id)s AND f.old_value IS DISTINCT FROM f.new_value
) AS c
"""

_MERGE_STOCK = """
MERGE INTO hub.stock AS t
USING (
    SELECT s.sku, %(location)s AS location, s.stock::integer AS quantity, s.reserved::integer AS reserved,
           md5(concat_ws('|', s.stock::integer, s.reserved::integer)) AS row_hash,
           s.source_updated_at::timestamptz AS source_updated_at
    FROM staging.erp_product AS s
    WHERE s.transfer_id = %(transfer_id)s
) AS s ON t.sku = s.sku AND t.location = s.location
WHEN MATCHED AND t.row_hash IS DISTINCT FROM s.row_hash THEN UPDATE SET
    quantity = s.quantity, reserved = s.reserved, row_hash = s.row_hash, version = t.version + 1,
    source_updated_at = s.source_updated_at, updated_at = now(), transfer_id = %(transfer_id)s
-- A newer ERP version with the same figures: it may be the version that takes an order over (an order
-- booked and another released in between), so the version moves and pricing looks at the SKU again.
WHEN MATCHED AND t.source_updated_at IS DISTINCT FROM s.source_updated_at THEN UPDATE SET
    source_updated_at = s.source_updated_at, updated_at = now(), transfer_id = %(transfer_id)s
WHEN NOT MATCHED THEN INSERT (sku, location, quantity, reserved, row_hash, source_updated_at, transfer_id)
    VALUES (s.sku, s.location, s.quantity, s.reserved, s.row_hash, s.source_updated_at, %(transfer_id)s)
"""

# On a full resync, products the ERP no longer returns are deactivated, never deleted.
_DEACTIVATE_MISSING = """
UPDATE hub.product AS t
SET active = false, version = t.version + 1, updated_at = now(), transfer_id = %(transfer_id)s,
    row_hash = md5(concat_ws('|', t.sku, t.gtin, t.name, t.brand, t.category, t.description,
                             t.purchase_price, t.currency, t.vat_rate, false))
WHERE t.active
  AND NOT EXISTS (SELECT 1 FROM staging.erp_product AS s
                  WHERE s.transfer_id = %(transfer_id)s AND s.sku = t.sku)
  AND NOT EXISTS (SELECT 1 FROM hub.quarantine AS q
                  WHERE q.transfer_id = %(transfer_id)s AND q.record_key = t.sku)
"""

_RESOLVE_QUARANTINE = """
UPDATE hub.quarantine AS q
SET status = 'resolved', resolved_at = now(), resolved_transfer_id = %(transfer_id)s
WHERE q.status = 'open' AND q.dataset = %(dataset)s AND q.source = %(source)s
  AND EXISTS (SELECT 1 FROM staging.erp_product AS s
              WHERE s.transfer_id = %(transfer_id)s AND s.sku = q.record_key)
"""


def _stage(
    conn: psycopg.Connection,
    transfer_id: str,
    rows: Iterable[dict[str, Any]],
    currency: str,
    cursor_column: str,
) -> tuple[int, list[RowProblem], datetime | None, str]:
    """COPY valid rows into staging; return (rows read, problems, max cursor, payload sha256)."""
    read = 0
    problems: list[RowProblem] = []
    max_cursor: datetime | None = None
    digest = hashlib.sha256()
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in ("transfer_id", "record_no", *STAGED_COLUMNS))
    copy_sql = sql.SQL("COPY staging.erp_product ({}) FROM STDIN").format(columns)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for read, row in enumerate(rows, start=1):
            values, problem = validate_row(read, row, currency, cursor_column)
            cursor_value = row.get(cursor_column)
            if isinstance(cursor_value, datetime) and (max_cursor is None or cursor_value > max_cursor):
                max_cursor = cursor_value
            if problem is not None:
                problems.append(problem)
                continue
            assert values is not None
            digest.update("\x1f".join(v or "" for v in values).encode("utf-8") + b"\x1e")
            copy.write_row([transfer_id, read, *values])
    return read, problems, max_cursor, digest.hexdigest()


_DROP_QUARANTINED = """
DELETE FROM staging.erp_product AS s
USING hub.quarantine AS q
WHERE s.transfer_id = %(transfer_id)s AND q.transfer_id = %(transfer_id)s AND q.record_no = s.record_no
"""


def _validate(
    hub_dsn: str,
    erp: ErpSource | ErpRestSource,
    transfer: ledger.Transfer,
    *,
    full_resync: bool,
    override: Override | None,
    quality: QualityFile | None,
) -> None:
    """The quality gate: the SQL suite over the staged rows, Data Docs, then the batch breakers.

    Rows failing the suite are quarantined (committed) and removed from staging, so the merge only
    sees valid rows. Raises BreakerTripped before anything is merged.
    """
    quality = quality or load_quality()
    _, decision = check_batch(
        hub_dsn,
        ERP_PRODUCTS,
        transfer,
        limits=quality.breakers(ERP_PRODUCTS.name, erp.id),
        override=override,
        # An empty incremental batch has nothing to show; every other batch gets its evidence.
        docs_dir=data_docs_root(quality) if transfer.rows_read else None,
        # Incremental batches vary by nature: only a full resync is compared with the last full resync.
        compare_row_count=full_resync,
        same_kind={"full_resync": True},
        dataset=DATASET,
    )
    with connect(hub_dsn) as conn:
        conn.execute(_DROP_QUARANTINED, {"transfer_id": str(transfer.transfer_id)})
    decision.enforce()


def sync_erp(
    hub_dsn: str,
    erp: ErpSource | ErpRestSource,
    erp_dsn: str | ConnectionInfo,
    run: ledger.RunContext,
    *,
    full_resync: bool = False,
    override: Override | None = None,
    quality: QualityFile | None = None,
) -> ErpSyncResult:
    """Bring ERP products and own stock into the hub; see the module docstring for guarantees.

    Args:
        hub_dsn: the hub database.
        erp: the ERP source configuration.
        erp_dsn: the ERP database URL, or its Airflow connection (SQL: any SQLAlchemy URL; REST: the API).
        run: the Airflow run recording this transfer.
        full_resync: ignore the watermark, read everything and deactivate products the ERP no
            longer returns.
        override: the operator's override of tripped batch breakers for this run (DAG Param).
        quality: breakers and Data Docs settings (``quality.yaml`` when None).

    Raises:
        BreakerTripped: the batch as a whole looks wrong (too many rejected rows, or a full resync
            with far fewer rows than the last one) and no override was given; hub unchanged.
    """
    transfer = ledger.Transfer(source=erp.id, target="hub", dataset=DATASET, run=run)
    tid = str(transfer.transfer_id)
    # One run of this ERP at a time; the first thing under the lock: clear killed runs' staging.
    with ledger.recording(hub_dsn, transfer), source_lock(hub_dsn, erp.id, tid, staging=("staging.erp_product",)):
        with connect(hub_dsn) as conn:
            since = None if full_resync else _read_watermark(conn, erp.id)
        transfer.details = {"full_resync": full_resync, "since": since.isoformat() if since else None}
        with connect(hub_dsn) as conn:
            read, problems, max_cursor, payload = _stage(
                conn, tid, read_erp_rows(erp, erp_dsn, since), erp.currency, erp.cursor_column
            )
        try:
            with connect(hub_dsn) as conn:
                # Committed on its own: rejected rows stay on record even if the batch is then refused.
                _quarantine(conn, erp.id, tid, problems)
            transfer.rows_read = read
            _validate(hub_dsn, erp, transfer, full_resync=full_resync, override=override, quality=quality)
            with connect(hub_dsn) as conn:
                params = {
                    "transfer_id": tid,
                    "location": erp.stock_location,
                    "dataset": DATASET,
                    "source": erp.id,
                }
                conn.execute(_RECORD_CHANGES, params)
                changed = conn.execute(_MERGE_PRODUCT, params).rowcount
                deactivated = conn.execute(_DEACTIVATE_MISSING, params).rowcount if full_resync else 0
                stock_changed = conn.execute(_MERGE_STOCK, params).rowcount
                conn.execute(_RESOLVE_QUARANTINE, params)
                if max_cursor is not None:
                    conn.execute(
                        """INSERT INTO hub.source_watermark (source, dataset, watermark, transfer_id)
                           VALUES (%s, %s, %s, %s)
                           ON CONFLICT (source, dataset) DO UPDATE
                           SET watermark = GREATEST(hub.source_watermark.watermark, EXCLUDED.watermark),
                               updated_at = now(), transfer_id = EXCLUDED.transfer_id""",
                        (erp.id, DATASET, max_cursor, tid),
                    )
                skus_changed = conn.execute(
                    """SELECT count(*) FROM hub.product AS p
                       WHERE p.transfer_id = %(transfer_id)s
                          OR EXISTS (SELECT 1 FROM hub.stock AS s
                                     WHERE s.sku = p.sku AND s.transfer_id = %(transfer_id)s)""",
                    params,
                ).fetchone()[0]  # type: ignore[index]
                transfer.rows_changed = skus_changed
                transfer.payload_sha256 = payload
                changes.summarise(conn, transfer)
                transfer.details.update(
                    products_changed=changed,
                    products_deactivated=deactivated,
                    stock_changed=stock_changed,
                    watermark=max_cursor.isoformat() if max_cursor else None,
                    rejected=[{"sku": p.key, "reason": p.reason} for p in problems[:20]],
                )
                ledger.append(conn, transfer, "success")
        finally:
            with connect(hub_dsn) as conn:
                conn.execute("DELETE FROM staging.erp_product WHERE transfer_id = %s", (tid,))
    return ErpSyncResult(
        transfer_id=tid,
        rows_read=read,
        rows_loaded=transfer.rows_written,
        rows_quarantined=transfer.rows_rejected,
        rows_changed=transfer.rows_changed,
        rows_deactivated=deactivated,
        watermark=max_cursor.isoformat() if max_cursor else None,
    )
