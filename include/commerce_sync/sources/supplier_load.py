"""Load one supplier's feed into the hub: fetch, stage, validate, quarantine, merge, record.

Guarantees:

* the hub changes only in one transaction that also appends the ``success`` ledger row;
* any failure (feed unreadable, network, every row invalid, database) leaves ``hub.supplier_offer``
  as it was and appends a ``failed`` ledger row;
* rows that fail validation are kept in ``hub.quarantine`` with the reason, and the rest still load;
* re-running with the same feed changes nothing (the merge compares row hashes), so a retried or
  cleared task is harmless;
* in ``full`` mode, active offers missing from the feed are deactivated (quantity 0). An offer that
  is in the feed but quarantined keeps its last good state;
* a supplier may have several feeds (a price catalogue and a stock feed): each is loaded on its own
  (ledger source ``supplier:<id>/<feed>``) and sets only the fields it delivers; a field a delivery
  does not carry keeps what another feed set (NULL-aware, per field), and ``price_feed`` /
  ``quantity_feed`` (with their transfer ids) record which feed last changed each field. Feeds with
  prices define the range: a stock-only feed never (re)activates an offer (one it brings first stays
  inactive until a price feed lists it) and its ``full`` mode only zeroes the stock of absent offers;
* a record without stock follows the feed's ``missing_quantity`` policy: ``keep`` (what another feed
  delivered; unknown, i.e. not sellable, until one does), ``zero`` or ``default``.
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
from commerce_sync.errors import ConfigError, DataError, FeedError
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
    numbers are hashed in their canonical typed form, so "12,3" and "12.30" hash alike. An unknown
    price or quantity (split feeds) hashes as ``NULL``, which no number's text equals; known values
    hash exactly as before the split feeds, so existing offers keep their hashes.
    """
    return sql.SQL(
        "md5(concat_ws('|', quote_nullable({g}), quote_nullable({n}), coalesce(({p})::text, 'NULL'), ({c})::text, "
        "coalesce(({q})::text, 'NULL'), ({a})::text))"
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
                   -- Feeds with prices define the range: they (re)activate their offers. A stock feed leaves
                   -- that alone, and an offer it brings first stays inactive until a price feed lists it.
                   CASE WHEN %(sets_price)s THEN true ELSE coalesce(h.active, false) END AS active,
                   s.record_no,
                   s.source_line
              FROM (SELECT s.*
                      FROM staging.supplier_offer AS s
                     WHERE s.transfer_id = %(transfer_id)s
                       AND NOT EXISTS (SELECT 1 FROM hub.quarantine AS q
                                        WHERE q.transfer_id = %(transfer_id)s AND q.record_no = s.record_no)
                    OFFSET 0) AS s
              LEFT JOIN hub.supplier_offer AS h ON h.supplier = s.supplier AND h.supplier_sku = s.supplier_sku
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
         quantity = s.quantity, active = s.active, row_hash = s.row_hash, version = t.version + 1,
         source_file_sha256 = %(sha256)s, source_record_no = s.record_no, source_line = s.source_line,
         updated_at = now(), transfer_id = %(transfer_id)s,
         -- Fields this delivery did not carry were filled from the hub, so a change came from this feed.
         price_feed = CASE WHEN t.purchase_price IS DISTINCT FROM s.purchase_price OR t.currency <> s.currency
                           THEN %(feed)s ELSE t.price_feed END,
         price_transfer_id = CASE WHEN t.purchase_price IS DISTINCT FROM s.purchase_price OR t.currency <> s.currency
                                  THEN %(transfer_id)s ELSE t.price_transfer_id END,
         quantity_feed = CASE WHEN t.quantity IS DISTINCT FROM s.quantity THEN %(feed)s ELSE t.quantity_feed END,
         quantity_transfer_id = CASE WHEN t.quantity IS DISTINCT FROM s.quantity
                                     THEN %(transfer_id)s ELSE t.quantity_transfer_id END
    WHEN NOT MATCHED THEN INSERT
         (supplier, supplier_sku, gtin, name, purchase_price, currency, quantity, active, row_hash,
          source_file_sha256, source_record_no, source_line, transfer_id,
          price_feed, price_transfer_id, quantity_feed, quantity_transfer_id)
         VALUES (s.supplier, s.supplier_sku, s.gtin, s.name, s.purchase_price, s.currency, s.quantity, s.active,
                 s.row_hash, %(sha256)s, s.record_no, s.source_line, %(transfer_id)s,
                 CASE WHEN s.purchase_price IS NOT NULL THEN %(feed)s END,
                 CASE WHEN s.purchase_price IS NOT NULL THEN %(transfer_id)s END,
                 CASE WHEN s.quantity IS NOT NULL THEN %(feed)s END,
                 CASE WHEN s.quantity IS NOT NULL THEN %(transfer_id)s END)
    """
).format(source=_TYPED_SOURCE)

# Row-level changes, compared typed staging vs hub BEFORE the merge (same transaction): purchase
# price and quantity per supplier offer, with the feed file's checksum and the record number.
_RECORD_CHANGES = sql.SQL(
    """
    INSERT INTO audit.change (transfer_id, dataset, sku, supplier, field, old_value, new_value, source_ref)
    SELECT %(transfer_id)s, 'supplier_offer', s.supplier_sku, s.supplier, f.field, f.old_value, f.new_value,
           jsonb_build_object('file_sha256', %(sha256)s::text, 'record_no', s.record_no,
                              'source_line', s.source_line, 'gtin', s.gtin, 'feed', %(feed)s::text)
      FROM ({source}) AS s
      LEFT JOIN hub.supplier_offer AS t ON t.supplier = s.supplier AND t.supplier_sku = s.supplier_sku
     CROSS JOIN LATERAL (VALUES ('purchase_price', t.purchase_price::text, s.purchase_price::text),
                                ('quantity', t.quantity::text, s.quantity::text)) AS f (field, old_value, new_value)
     WHERE f.old_value IS DISTINCT FROM f.new_value
        OR (f.field = 'quantity' AND f.new_value IS NOT NULL AND s.active AND t.active IS DISTINCT FROM true)
    """
).format(source=_TYPED_SOURCE)

# In full mode, offers missing from the feed are deactivated (recorded before the update). A feed with
# prices defines the range: absent offers leave it (active false), their stock drops to 0 when the feed
# also delivers stock, else it stays as the stock feed set it. A stock-only feed zeroes absent offers'
# stock and leaves the range alone.
_MISSING = """
       t.supplier = %(supplier)s
       AND t.active
       AND (%(sets_price)s OR t.quantity IS DISTINCT FROM 0)
       AND NOT EXISTS (SELECT 1 FROM staging.supplier_offer AS s
                        WHERE s.transfer_id = %(transfer_id)s AND s.supplier_sku = t.supplier_sku)
"""
_NEW_QUANTITY = "CASE WHEN %(sets_quantity)s THEN 0 ELSE t.quantity END"
_NEW_ACTIVE = "NOT %(sets_price)s"

_RECORD_DEACTIVATIONS = sql.SQL(
    """
    INSERT INTO audit.change (transfer_id, dataset, sku, supplier, field, old_value, new_value, source_ref)
    SELECT %(transfer_id)s, 'supplier_offer', t.supplier_sku, t.supplier, f.field, f.old_value, f.new_value,
           jsonb_build_object('file_sha256', %(sha256)s::text, 'record_no', NULL, 'source_line', NULL,
                              'gtin', t.gtin, 'deactivated', %(sets_price)s, 'feed', %(feed)s::text)
      FROM hub.supplier_offer AS t
     CROSS JOIN LATERAL (VALUES ('quantity', t.quantity::text, ({quantity})::text),
                                ('active', 'true', ({active})::text)) AS f (field, old_value, new_value)
     WHERE {missing}
       -- The stock a feed with stock sets to 0 (as always, even from 0: the row marks the deactivation),
       -- else the offer leaving the range.
       AND ((f.field = 'quantity' AND %(sets_quantity)s) OR (f.field = 'active' AND NOT %(sets_quantity)s))
    """
).format(quantity=sql.SQL(_NEW_QUANTITY), active=sql.SQL(_NEW_ACTIVE), missing=sql.SQL(_MISSING))

_DEACTIVATE_MISSING = sql.SQL(
    """
    UPDATE hub.supplier_offer AS t
       SET active = {active}, quantity = {quantity}, version = t.version + 1, updated_at = now(),
           transfer_id = %(transfer_id)s, source_file_sha256 = %(sha256)s,
           quantity_feed = CASE WHEN %(sets_quantity)s THEN %(feed)s ELSE t.quantity_feed END,
           quantity_transfer_id = CASE WHEN %(sets_quantity)s THEN %(transfer_id)s ELSE t.quantity_transfer_id END,
           row_hash = {row_hash}
     WHERE {missing}
    """
).format(
    active=sql.SQL(_NEW_ACTIVE),
    quantity=sql.SQL(_NEW_QUANTITY),
    missing=sql.SQL(_MISSING),
    row_hash=_row_hash("t.gtin", "t.name", "t.purchase_price", "t.currency", _NEW_QUANTITY, _NEW_ACTIVE),
)

_UPSERT_FETCH = """
    INSERT INTO hub.source_fetch
           (source, location, etag, last_modified, sha256, size_bytes, fetched_at, transfer_id)
    VALUES (%(source)s, %(location)s, %(etag)s, %(last_modified)s, %(sha256)s, %(size)s, now(),
            %(transfer_id)s)
    ON CONFLICT (source, location) DO UPDATE SET
        etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified, sha256 = EXCLUDED.sha256,
        size_bytes = EXCLUDED.size_bytes, fetched_at = EXCLUDED.fetched_at, transfer_id = EXCLUDED.transfer_id
"""


# Fields a delivery does not carry keep the hub's last value (whichever feed set it): fields the feed
# does not deliver at all, every missing field of a partial delivery (BMEcat T_UPDATE_PRICES), and a
# record's missing stock (a catalogue without stock; a mapped stock column must hold a number instead).
_FILL_UNDELIVERED = """
    UPDATE staging.supplier_offer AS s
       SET gtin = CASE WHEN %(fill_gtin)s THEN coalesce(s.gtin, t.gtin) ELSE s.gtin END,
           name = CASE WHEN %(fill_name)s THEN coalesce(s.name, t.name) ELSE s.name END,
           purchase_price = CASE WHEN %(fill_price)s THEN coalesce(s.purchase_price, t.purchase_price::text)
                                 ELSE s.purchase_price END,
           currency = coalesce(s.currency, t.currency),
           quantity = CASE WHEN %(fill_quantity)s THEN coalesce(s.quantity, t.quantity::text) ELSE s.quantity END
      FROM hub.supplier_offer AS t
     WHERE s.transfer_id = %(transfer_id)s AND t.supplier = s.supplier AND t.supplier_sku = s.supplier_sku
       AND (s.gtin IS NULL OR s.name IS NULL OR s.purchase_price IS NULL OR s.currency IS NULL OR s.quantity IS NULL)
"""

# An offer a stock feed brings first has no currency yet: the supplier's default until prices arrive.
_DEFAULT_CURRENCY = """
    UPDATE staging.supplier_offer SET currency = %(currency)s WHERE transfer_id = %(transfer_id)s AND currency IS NULL
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
    spec = supplier.spec
    delivers_price = "purchase_price" in spec.delivered_fields
    # The supplier's default currency comes with its prices; a stock feed leaves the currency as it is.
    default_currency = supplier.currency if delivers_price else None
    policy = {"keep": None, "zero": "0", "default": str(spec.default_quantity)}[spec.missing_quantity]
    flags = (delivers_price, spec.quantity_required)
    for record in records:
        values = record.values
        quantity = values.get("quantity")
        yield (
            transfer_id,
            supplier.id,
            record.record_no,
            record.source_line,
            *(values.get(name) for name in STAGED_FIELDS[:4]),
            values.get("currency") or default_currency,
            policy if quantity is None and not spec.quantity_required else quantity,
            *flags,
        )


def _fill_params(supplier: Supplier, transfer_id: uuid.UUID, partial: bool) -> dict[str, Any]:
    delivered = supplier.spec.delivered_fields
    return {
        "transfer_id": transfer_id,
        "currency": supplier.currency,
        "fill_gtin": partial or "gtin" not in delivered,
        "fill_name": partial or "name" not in delivered,
        "fill_price": partial or "purchase_price" not in delivered,
        "fill_quantity": partial or not supplier.spec.quantity_required,  # an empty stock column is quarantined
    }


def stage(db: psycopg.Connection, supplier: Supplier, fetched: FetchResult, transfer_id: uuid.UUID) -> tuple[int, bool]:
    """Stream the feed's records into ``staging.supplier_offer`` with one COPY.

    Returns:
        The record count, and whether the delivery is partial (some fields or articles only): then
        missing fields were filled from the hub and absent offers must not be deactivated.
    """
    assert fetched.path is not None
    columns = (
        "transfer_id",
        "supplier",
        "record_no",
        "source_line",
        *STAGED_FIELDS,
        "price_expected",
        "quantity_expected",
    )
    statement = sql.SQL("COPY staging.supplier_offer ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    count = 0
    reader = reader_for(supplier, fetched.location)
    with db.cursor() as cur, cur.copy(statement) as copy:
        for row in _staged_rows(reader.records(fetched.path), supplier, transfer_id):
            copy.write_row(row)
            count += 1
    params = _fill_params(supplier, transfer_id, reader.partial)
    db.execute(_FILL_UNDELIVERED, params)
    db.execute(_DEFAULT_CURRENCY, params)
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
        supplier: The supplier's configuration, or for a supplier with several feeds the view of the
            feed to load (:meth:`Supplier.feed_view`).
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
    if supplier.feeds:
        raise ConfigError(
            f"supplier {supplier.id!r} has feeds {[f.id for f in supplier.feeds]}: load each with feed_view(feed_id)"
        )
    source = supplier.source
    delivered = supplier.spec.delivered_fields
    transfer = ledger.Transfer(source=source, target="hub", dataset=DATASET, run=run)
    transfer_id = transfer.transfer_id
    fetched: FetchResult | None = None
    staged = False
    price_change = price_change or PriceChangeReport()
    report: price_changes.PriceChangeSummary | None = None
    fingerprint = config_fingerprint(supplier)
    try:
        # One run of this supplier at a time; the first thing under the lock: clear killed runs' staging.
        # The lock is the supplier's, not the feed's: its feeds write the same offers, and each fills the
        # fields it does not deliver from what the others wrote (a concurrent feed would be overwritten).
        with (
            ledger.recording(dsn, transfer),
            source_lock(dsn, f"supplier:{supplier.id}", transfer_id, staging=("staging.supplier_offer",)),
        ):
            fetched = fetch(supplier, conn, work_dir, previous_fetch(dsn, source))
            transfer.details = {
                "location": fetched.location,
                "size_bytes": fetched.size,
                "etag": fetched.etag,
                "config_sha256": fingerprint,
                "feed": supplier.feed_label,
                "fields": sorted(delivered),
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
                    "feed": supplier.feed_label,
                    "sets_price": "purchase_price" in delivered,
                    "sets_quantity": "quantity" in delivered,
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
