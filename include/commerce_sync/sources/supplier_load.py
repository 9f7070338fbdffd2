"""Load one supplier's feed into the hub: fetch, stage, validate, quarantine, merge, record.

Guarantees:

* the hub changes only in one transaction that also appends the ``success`` ledger row;
* any failure (feed unreadable, network, every row invalid, database) leaves ``hub.supplier_offer``
  as it was and appends a ``failed`` ledger row;
* rows that fail validation are kept in ``hub.quarantine`` with the reason, and the rest still load;
* re-running with the same feed changes nothing (the merge compares row hashes), so a retried or
  cleared task is harmless;
* in ``full`` mode, active offers missing from the feed are deactivated (quantity 0). An offer that
  is in the feed but quarantined keeps its last good state.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from commerce_sync.audit import changes, ledger
from commerce_sync.config import PriceChangeReport, QualityFile, Supplier, data_docs_root, load_quality
from commerce_sync.connections import ConnectionInfo
from commerce_sync.db import connect
from commerce_sync.errors import DataError, FeedError
from commerce_sync.hub.source_lock import source_lock
from commerce_sync.quality.breakers import Override
from commerce_sync.quality.gate import check_batch
from commerce_sync.quality.quarantine import resolve_fixed
from commerce_sync.quality.suites import NUMBER_SPACES, SUPPLIER_OFFERS, ValidationOutcome, price_pattern
from commerce_sync.sources import price_changes
from commerce_sync.sources.feeds import RawRecord, reader_for
from commerce_sync.sources.transports import FetchResult, FetchState, fetch

log = logging.getLogger(__name__)

DATASET = "supplier_offer"
STAGED_FIELDS = ("supplier_sku", "gtin", "name", "purchase_price", "currency", "quantity")


@dataclass(frozen=True)
class SupplierSyncResult:
    """What one supplier sync did (the same counts are in its ledger row)."""

    supplier: str
    location: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_changed: int
    not_modified: bool
    transfer_id: uuid.UUID
    duplicate_of: str | None = None
    price_changes: price_changes.PriceChangeSummary | None = None


def _row_hash(gtin: str, name: str, price: str, currency: str, quantity: str, active: str) -> sql.Composable:
    """The change hash over the business columns, given the SQL expression for each.

    ``quote_nullable`` keeps NULL and the empty string apart and makes the separator unambiguous;
    numbers are hashed in their canonical typed form, so "12,3" and "12.30" hash alike.
    """
    return sql.SQL(
        "md5(concat_ws('|', quote_nullable({g}), quote_nullable({n}), ({p})::text, ({c})::text, "
        "({q})::text, ({a})::text))"
    ).format(
        g=sql.SQL(gtin),
        n=sql.SQL(name),
        p=sql.SQL(price),
        c=sql.SQL(currency),
        q=sql.SQL(quantity),
        a=sql.SQL(active),
    )


# Typed, valid rows of one transfer. Quarantined records are excluded; the casts cannot fail on
# what is left because validation checked the same normalisation (NUMBER_SPACES, separators).
# The exclusion happens inside an OFFSET 0 subquery: PostgreSQL neither flattens it nor pushes the
# callers' predicates into it, so no cast (and no predicate over a cast, e.g. the price-change
# report's join with the hub) ever sees a quarantined value such as 'Infinity' or '1e308'.
_TYPED_SOURCE = sql.SQL(
    """
    SELECT v.*, {row_hash} AS row_hash
      FROM (SELECT s.supplier,
                   s.supplier_sku,
                   CASE WHEN s.gtin IS NULL THEN NULL
                        ELSE lpad(regexp_replace(s.gtin, '[^0-9]', '', 'g'), 14, '0') END AS gtin,
                   s.name,
                   replace(regexp_replace(s.purchase_price, %(spaces)s, '', 'g'), ',', '.')::numeric(14, 4)
                       AS purchase_price,
                   s.currency,
                   regexp_replace(s.quantity, %(spaces)s, '', 'g')::integer AS quantity,
                   true AS active,
                   s.record_no,
                   s.source_line
              FROM (SELECT s.*
                      FROM staging.supplier_offer AS s
                     WHERE s.transfer_id = %(transfer_id)s
                       AND NOT EXISTS (SELECT 1 FROM hub.quarantine AS q
                                        WHERE q.transfer_id = %(transfer_id)s AND q.record_no = s.record_no)
                    OFFSET 0) AS s
           ) AS v
    """
).format(row_hash=_row_hash("v.gtin", "v.name", "v.purchase_price", "v.currency", "v.quantity", "v.active"))

_MERGE = sql.SQL(
    """
    MERGE INTO hub.supplier_offer AS t
    USING ({source}) AS s
       ON t.supplier = s.supplier AND t.supplier_sku = s.supplier_sku
    WHEN MATCHED AND t.row_hash IS DISTINCT FROM s.row_hash THEN UPDATE SET
         gtin = s.gtin, name = s.name, purchase_price = s.purchase_price, currency = s.currency,
         quantity = s.quantity, active = true, row_hash = s.row_hash, version = t.version + 1,
         source_file_sha256 = %(sha256)s, source_record_no = s.record_no, source_line = s.source_line,
         updated_at = now(), transfer_id = %(transfer_id)s
    WHEN NOT MATCHED THEN INSERT
         (supplier, supplier_sku, gtin, name, purchase_price, currency, quantity, active, row_hash,
          source_file_sha256, source_record_no, source_line, transfer_id)
         VALUES (s.supplier, s.supplier_sku, s.gtin, s.name, s.purchase_price, s.currency, s.quantity, true,
                 s.row_hash, %(sha256)s, s.record_no, s.source_line, %(transfer_id)s)
    """
).format(source=_TYPED_SOURCE)

# Row-level changes, compared typed staging vs hub BEFORE the merge (same transaction): purchase
# price and quantity per supplier offer, with the feed file's checksum and the record number.
_RECORD_CHANGES = sql.SQL(
    """
    INSERT INTO audit.change (transfer_id, dataset, sku, supplier, field, old_value, new_value, source_ref)
    SELECT %(transfer_id)s, 'supplier_offer', s.supplier_sku, s.supplier, f.field, f.old_value, f.new_value,
           jsonb_build_object('file_sha256', %(sha256)s::text, 'record_no', s.record_no,
                              'source_line', s.source_line, 'gtin', s.gtin)
      FROM ({source}) AS s
      LEFT JOIN hub.supplier_offer AS t ON t.supplier = s.supplier AND t.supplier_sku = s.supplier_sku
     CROSS JOIN LATERAL (VALUES ('purchase_price', t.purchase_price::text, s.purchase_price::text),
                                ('quantity', t.quantity::text, s.quantity::text)) AS f (field, old_value, new_value)
     WHERE f.old_value IS DISTINCT FROM f.new_value
        OR (f.field = 'quantity' AND t.active IS DISTINCT FROM true)
    """
).format(source=_TYPED_SOURCE)

# In full mode, offers missing from the feed drop to quantity 0 (recorded before the update).
_RECORD_DEACTIVATIONS = """
    INSERT INTO audit.change (transfer_id, dataset, sku, supplier, field, old_value, new_value, source_ref)
    SELECT %(transfer_id)s, 'supplier_offer', t.supplier_sku, t.supplier, 'quantity', t.quantity::text, '0',
           jsonb_build_object('file_sha256', %(sha256)s::text, 'record_no', NULL, 'source_line', NULL,
                              'gtin', t.gtin, 'deactivated', true)
      FROM hub.supplier_offer AS t
     WHERE t.supplier = %(supplier)s
       AND t.active
       AND NOT EXISTS (SELECT 1 FROM staging.supplier_offer AS s
                        WHERE s.transfer_id = %(transfer_id)s AND s.supplier_sku = t.supplier_sku)
"""

_DEACTIVATE_MISSING = sql.SQL(
    """
    UPDATE hub.supplier_offer AS t
       SET active = false, quantity = 0, version = t.version + 1, updated_at = now(),
           transfer_id = %(transfer_id)s, source_file_sha256 = %(sha256)s,
           row_hash = {row_hash}
     WHERE t.supplier = %(supplier)s
       AND t.active
       AND NOT EXISTS (SELECT 1 FROM staging.supplier_offer AS s
                        WHERE s.transfer_id = %(transfer_id)s AND s.supplier_sku = t.supplier_sku)
    """
).format(row_hash=_row_hash("t.gtin", "t.name", "t.purchase_price", "t.currency", "0", "false"))

_UPSERT_FETCH = """
    INSERT INTO hub.source_fetch
           (source, location, etag, last_modified, sha256, size_bytes, fetched_at, transfer_id)
    VALUES (%(source)s, %(location)s, %(etag)s, %(last_modified)s, %(sha256)s, %(size)s, now(),
            %(transfer_id)s)
    ON CONFLICT (source, location) DO UPDATE SET
        etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified, sha256 = EXCLUDED.sha256,
        size_bytes = EXCLUDED.size_bytes, fetched_at = EXCLUDED.fetched_at, transfer_id = EXCLUDED.transfer_id
"""


# A partial delivery (BMEcat T_UPDATE_PRICES) omits fields: they keep the hub's last value.
_FILL_PARTIAL = """
    UPDATE staging.supplier_offer AS s
       SET gtin = coalesce(s.gtin, t.gtin),
           name = coalesce(s.name, t.name),
           purchase_price = coalesce(s.purchase_price, t.purchase_price::text),
           quantity = coalesce(s.quantity, t.quantity::text)
      FROM hub.supplier_offer AS t
     WHERE s.transfer_id = %(transfer_id)s AND t.supplier = s.supplier AND t.supplier_sku = s.supplier_sku
       AND (s.gtin IS NULL OR s.name IS NULL OR s.purchase_price IS NULL OR s.quantity IS NULL)
"""

# The last transfer that really loaded this supplier (not a not-modified or duplicate delivery).
_LAST_LOAD = """
    SELECT transfer_id, payload_sha256, details->>'config_sha256'
      FROM audit.transfer
     WHERE source = %s AND dataset = %s AND status = 'success' AND rows_read > 0
     ORDER BY seq DESC LIMIT 1
"""


def config_fingerprint(supplier: Supplier) -> str:
    """sha256 of the supplier's configuration: the same file read with another mapping is not a duplicate."""
    return hashlib.sha256(supplier.model_dump_json().encode("utf-8")).hexdigest()


def duplicate_of(dsn: str, source: str, sha256: str | None, fingerprint: str) -> str | None:
    """The transfer that already loaded this exact content with this configuration, if it was the last load.

    Only the latest load counts: a supplier that sends A, then B, then A again really went back to A.
    """
    if sha256 is None:
        return None
    with connect(dsn) as db:
        row = db.execute(_LAST_LOAD, (source, DATASET)).fetchone()
    if row is None or row[1] != sha256 or row[2] != fingerprint:
        return None
    return str(row[0])


def previous_fetch(dsn: str, source: str) -> FetchState | None:
    """The last successful fetch of ``source`` (for conditional GET), or None."""
    with connect(dsn) as db:
        row = db.execute(
            "SELECT location, sha256, size_bytes, etag, last_modified FROM hub.source_fetch "
            "WHERE source = %s ORDER BY fetched_at DESC LIMIT 1",
            (source,),
        ).fetchone()
    return FetchState(*row) if row else None


def _decimal_separator(supplier: Supplier) -> str:
    return supplier.decimal_separator


def _staged_rows(records: Iterator[RawRecord], supplier: Supplier, transfer_id: uuid.UUID) -> Iterator[tuple[Any, ...]]:
    for record in records:
        values = record.values
        yield (
            transfer_id,
            supplier.id,
            record.record_no,
            record.source_line,
            *(values.get(name) for name in STAGED_FIELDS[:4]),
            values.get("currency") or supplier.currency,
            values.get("quantity"),
        )


def stage(db: psycopg.Connection, supplier: Supplier, fetched: FetchResult, transfer_id: uuid.UUID) -> tuple[int, bool]:
    """Stream the feed's records into ``staging.supplier_offer`` with one COPY.

    Returns:
        The record count, and whether the delivery is partial (some fields or articles only): then
        missing fields were filled from the hub and absent offers must not be deactivated.
    """
    assert fetched.path is not None
    columns = ("transfer_id", "supplier", "record_no", "source_line", *STAGED_FIELDS)
    statement = sql.SQL("COPY staging.supplier_offer ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    count = 0
    reader = reader_for(supplier, fetched.location)
    with db.cursor() as cur, cur.copy(statement) as copy:
        for row in _staged_rows(reader.records(fetched.path), supplier, transfer_id):
            copy.write_row(row)
            count += 1
    if reader.partial:
        db.execute(_FILL_PARTIAL, {"transfer_id": transfer_id})
    return count, reader.partial


def _validate(
    dsn: str,
    supplier: Supplier,
    transfer: ledger.Transfer,
    *,
    partial: bool,
    override: Override | None,
    quality: QualityFile,
) -> ValidationOutcome:
    """The quality gate: row checks in SQL (failures to quarantine), Data Docs, batch breakers.

    Raises:
        DataError: every row failed validation.
        BreakerTripped: a batch breaker tripped and no override was given (nothing is merged).
    """
    separator = _decimal_separator(supplier)
    outcome, decision = check_batch(
        dsn,
        SUPPLIER_OFFERS,
        transfer,
        limits=quality.breakers(DATASET, transfer.source),
        override=override,
        docs_dir=data_docs_root(quality),
        # Only a whole feed is comparable with the last good one (delta feeds and partial deliveries vary).
        compare_row_count=supplier.mode == "full" and not partial,
        same_kind={"partial_delivery": False},  # the baseline must be a whole feed too
        params={"decimal_separator": separator, "price_pattern": price_pattern(separator), "spaces": NUMBER_SPACES},
    )
    if transfer.rows_written == 0:
        with connect(dsn) as db:
            first = db.execute(
                "SELECT record_no, reason FROM hub.quarantine WHERE transfer_id = %s ORDER BY record_no, id LIMIT 5",
                (transfer.transfer_id,),
            ).fetchall()
        reasons = "; ".join(f"record {record_no}: {reason}" for record_no, reason in first)
        raise DataError(
            f"supplier {supplier.id!r}: all {transfer.rows_read} rows of {transfer.details.get('location')} failed "
            f"validation ({outcome.failed} of {outcome.expectations} expectations failed; rows quarantined); "
            f"first reasons: {reasons}"
        )
    decision.enforce()
    return outcome


def sync_supplier(
    dsn: str,
    supplier: Supplier,
    conn: ConnectionInfo | None,
    run: ledger.RunContext,
    work_dir: Path,
    price_change: PriceChangeReport | None = None,
    *,
    override: Override | None = None,
    quality: QualityFile | None = None,
) -> SupplierSyncResult:
    """Fetch ``supplier``'s feed and bring its valid offers into ``hub.supplier_offer``.

    Args:
        dsn: Hub database URL.
        supplier: The supplier's configuration.
        conn: Its transport's Airflow connection (None for file transports).
        run: The Airflow run and task doing the work, for the ledger.
        work_dir: Where downloads are written (deleted after success).
        price_change: Thresholds of the price-change report (defaults when None).
        override: The operator's override of tripped batch breakers for this run (DAG Param).
        quality: Breakers and Data Docs settings (``quality.yaml`` when None).

    Raises:
        FeedError: the feed could not be fetched or parsed (hub unchanged).
        TransientError: the feed server stayed unreachable through the retries.
        DataError: every row failed validation (rows are in quarantine; hub unchanged).
        BreakerTripped: the batch as a whole looks wrong (row count collapsed, too many rejects) and no
            override was given; hub unchanged, the decision is in the failed ledger row.
    """
    source = f"supplier:{supplier.id}"
    transfer = ledger.Transfer(source=source, target="hub", dataset=DATASET, run=run)
    transfer_id = transfer.transfer_id
    fetched: FetchResult | None = None
    staged = False
    price_change = price_change or PriceChangeReport()
    report: price_changes.PriceChangeSummary | None = None
    fingerprint = config_fingerprint(supplier)
    try:
        # One run of this supplier at a time; the first thing under the lock: clear killed runs' staging.
        with (
            ledger.recording(dsn, transfer),
            source_lock(dsn, source, transfer_id, staging=("staging.supplier_offer",)),
        ):
            fetched = fetch(supplier, conn, work_dir, previous_fetch(dsn, source))
            transfer.details = {
                "location": fetched.location,
                "size_bytes": fetched.size,
                "etag": fetched.etag,
                "config_sha256": fingerprint,
            }
            transfer.payload_sha256 = fetched.sha256
            if fetched.not_modified:
                transfer.message = "not modified"
                with connect(dsn) as db:
                    ledger.append(db, transfer, "success")
                return SupplierSyncResult(supplier.id, fetched.location, 0, 0, 0, 0, True, transfer_id)
            original = duplicate_of(dsn, source, fetched.sha256, fingerprint)
            if original is not None:
                # Same bytes as the last load (no ETag over file/SFTP, or a server that ignores it): not re-parsed.
                transfer.message = "duplicate"
                transfer.details["duplicate_of"] = original
                with connect(dsn) as db:
                    ledger.append(db, transfer, "success")
                if fetched.temporary and fetched.path is not None:
                    fetched.path.unlink(missing_ok=True)
                log.info(
                    "supplier %s: %s is the content of transfer %s; nothing loaded",
                    supplier.id,
                    fetched.location,
                    original,
                )
                return SupplierSyncResult(
                    supplier.id, fetched.location, 0, 0, 0, 0, False, transfer_id, duplicate_of=original
                )

            with connect(dsn) as db:
                staged = True
                transfer.rows_read, partial = stage(db, supplier, fetched, transfer_id)
                db.execute("ANALYZE staging.supplier_offer")
            if transfer.rows_read == 0:
                raise FeedError(supplier.id, fetched.location, "the feed holds no records")

            # Quarantine is committed inside: rejected rows stay on record even if nothing is merged.
            _validate(dsn, supplier, transfer, partial=partial, override=override, quality=quality or load_quality())

            with connect(dsn) as db:
                params = {
                    "transfer_id": transfer_id,
                    "sha256": fetched.sha256,
                    "spaces": NUMBER_SPACES,
                    "supplier": supplier.id,
                }
                report = price_changes.record(db, _TYPED_SOURCE, params, supplier.id, price_change)
                transfer.details["price_changes"] = report.ledger_details()
                db.execute(_RECORD_CHANGES, params)
                merged = db.execute(_MERGE, params).rowcount
                deactivated = 0
                transfer.details["partial_delivery"] = partial
                if supplier.mode == "full" and not partial:
                    db.execute(_RECORD_DEACTIVATIONS, params)
                    deactivated = db.execute(_DEACTIVATE_MISSING, params).rowcount
                resolved = resolve_fixed(db, DATASET, source, transfer_id)
                db.execute(
                    _UPSERT_FETCH,
                    {
                        "source": source,
                        "location": fetched.location,
                        "etag": fetched.etag,
                        "last_modified": fetched.last_modified,
                        "sha256": fetched.sha256,
                        "size": fetched.size,
                        "transfer_id": transfer_id,
                    },
                )
                transfer.rows_changed = merged + deactivated
                transfer.details.update({"rows_deactivated": deactivated, "quarantine_resolved": resolved})
                changes.summarise(db, transfer)
                ledger.append(db, transfer, "success")
    finally:
        if staged:
            _drop_staging(dsn, transfer_id)
    if fetched.temporary and fetched.path is not None:
        fetched.path.unlink(missing_ok=True)
    if report is not None:
        report = price_changes.publish(dsn, report, price_change)
    log.info(
        "supplier %s: read %d, loaded %d, quarantined %d, changed %d (transfer %s)",
        supplier.id,
        transfer.rows_read,
        transfer.rows_written,
        transfer.rows_rejected,
        transfer.rows_changed,
        transfer_id,
    )
    return SupplierSyncResult(
        supplier=supplier.id,
        location=fetched.location,
        rows_read=transfer.rows_read,
        rows_loaded=transfer.rows_written,
        rows_quarantined=transfer.rows_rejected,
        rows_changed=transfer.rows_changed,
        not_modified=False,
        transfer_id=transfer_id,
        price_changes=report,
    )


def _drop_staging(dsn: str, transfer_id: uuid.UUID) -> None:
    # Staging is scratch: failing to clean it must not hide the real outcome of the sync.
    try:
        with connect(dsn, autocommit=True) as db:
            db.execute("DELETE FROM staging.supplier_offer WHERE transfer_id = %s", (transfer_id,))
    except psycopg.Error as exc:
        log.warning("could not delete staging rows of transfer %s: %s", transfer_id, exc)
