"""Multi-supplier merge: per hub SKU the chosen supplier offer and the total dropship stock.

Fills ``hub.sku_supply`` (the contract read by pricing) set-based, in one transaction with its
ledger row (dataset ``sku_supply``) and the ``audit.change`` rows of what moved:

* offers meet hub products by GTIN (both normalised to 14 digits) or by SKU (``supplier_sku`` equals
  the hub SKU), per supplier (``match_by`` in suppliers.yaml); only active offers of enabled suppliers
  and active products take part;
* ``cheapest_in_stock`` (default): among offers with stock, the lowest purchase price (offers in the
  product's currency before others, since prices in different currencies are not comparable here),
  ties by supplier ``priority`` then config order; with no stock anywhere, the same order without it;
* ``priority``: the first supplier by ``priority`` (then config order) that has stock, else the first;
* ``total_quantity`` sums the stock of all active matched offers; ``offers_considered`` counts them;
* only rows whose hash changed get a new version; a SKU without any active offer leaves the table;
* suppliers that failed in this run, never loaded, or whose last successful load is older than
  ``stale_after_hours`` are listed as stale in the ledger row. With ``stale_offers: keep`` (default)
  their last good offers stay in the merge (the hub keeps the last good state, the ledger says how
  old it is); with ``exclude`` they leave it until the supplier loads again.

Re-running changes nothing (same hashes): the task is idempotent.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from commerce_sync.audit import changes, ledger
from commerce_sync.config import Supplier, SupplyMerge
from commerce_sync.db import connect

log = logging.getLogger(__name__)

DATASET = "sku_supply"
SUPPLIER_DATASET = "supplier_offer"

# Enabled suppliers from the config, as a table: (supplier, match_by, priority, position).
_SUPPLIERS_TABLE = """
    CREATE TEMP TABLE merge_supplier (supplier text PRIMARY KEY, match_by text NOT NULL,
                                      priority int NOT NULL, position int NOT NULL) ON COMMIT DROP
"""

_ORDER = {
    "cheapest_in_stock": sql.SQL(
        "(c.quantity > 0) DESC, (c.currency = c.product_currency) DESC, c.purchase_price, c.priority, c.position, "
        "c.supplier, c.supplier_sku"
    ),
    "priority": sql.SQL("(c.quantity > 0) DESC, c.priority, c.position, c.purchase_price, c.supplier, c.supplier_sku"),
}

_CHOSEN = sql.SQL(
    """
    CREATE TEMP TABLE merge_chosen ON COMMIT DROP AS
    WITH candidate AS (
        SELECT p.sku, p.currency AS product_currency, o.supplier, o.supplier_sku, o.purchase_price, o.currency,
               coalesce(o.quantity, 0) AS quantity, o.version, s.priority, s.position
          FROM hub.supplier_offer AS o
          JOIN merge_supplier AS s ON s.supplier = o.supplier AND s.match_by = 'gtin'
          JOIN hub.product AS p ON p.gtin = o.gtin
         WHERE o.active AND p.active AND o.gtin IS NOT NULL AND o.purchase_price IS NOT NULL
        UNION ALL
        SELECT p.sku, p.currency, o.supplier, o.supplier_sku, o.purchase_price, o.currency,
               coalesce(o.quantity, 0), o.version, s.priority, s.position
          FROM hub.supplier_offer AS o
          JOIN merge_supplier AS s ON s.supplier = o.supplier AND s.match_by = 'sku'
          JOIN hub.product AS p ON p.sku = o.supplier_sku
         WHERE o.active AND p.active AND o.purchase_price IS NOT NULL
    ), ranked AS (
        SELECT c.*,
               row_number() OVER (PARTITION BY c.sku ORDER BY {order}) AS rank,
               sum(c.quantity) OVER (PARTITION BY c.sku) AS total_quantity,
               count(*) OVER (PARTITION BY c.sku) AS offers_considered
          FROM candidate AS c
    )
    SELECT r.sku, r.supplier, r.supplier_sku, r.purchase_price, r.currency, r.quantity AS chosen_quantity,
           least(r.total_quantity, 2147483647)::integer AS total_quantity, r.offers_considered::integer,
           %(policy)s::text AS policy, r.version AS supplier_offer_version,
           md5(concat_ws('|', r.supplier, r.supplier_sku, r.purchase_price::text, r.currency, r.quantity::text,
                         least(r.total_quantity, 2147483647)::text, r.offers_considered::text, %(policy)s::text,
                         r.version::text)) AS row_hash
      FROM ranked AS r
     WHERE r.rank = 1
    """
)

# Before the merge: what moved, per SKU (chosen offer, its price, the total stock; removals).
_RECORD_CHANGES = """
    INSERT INTO audit.change (transfer_id, dataset, sku, supplier, field, old_value, new_value, source_ref)
    SELECT %(transfer_id)s, 'sku_supply', coalesce(n.sku, t.sku), coalesce(n.supplier, t.supplier), f.field,
           f.old_value, f.new_value,
           jsonb_build_object('policy', coalesce(n.policy, t.policy), 'supplier_sku', n.supplier_sku,
                              'supplier_offer_version', n.supplier_offer_version)
      FROM merge_chosen AS n
      FULL JOIN hub.sku_supply AS t ON t.sku = n.sku
     CROSS JOIN LATERAL (VALUES
            ('supplier_offer', t.supplier || ':' || t.supplier_sku, n.supplier || ':' || n.supplier_sku),
            ('purchase_price', t.purchase_price::text || ' ' || t.currency,
                               n.purchase_price::text || ' ' || n.currency),
            ('total_quantity', t.total_quantity::text, n.total_quantity::text)) AS f (field, old_value, new_value)
     WHERE (t.row_hash IS DISTINCT FROM n.row_hash) AND f.old_value IS DISTINCT FROM f.new_value
"""

_MERGE = """
    MERGE INTO hub.sku_supply AS t
    USING merge_chosen AS s ON t.sku = s.sku
    WHEN MATCHED AND t.row_hash IS DISTINCT FROM s.row_hash THEN UPDATE SET
         supplier = s.supplier, supplier_sku = s.supplier_sku, purchase_price = s.purchase_price,
         currency = s.currency, chosen_quantity = s.chosen_quantity, total_quantity = s.total_quantity,
         offers_considered = s.offers_considered, policy = s.policy,
         supplier_offer_version = s.supplier_offer_version, row_hash = s.row_hash, version = t.version + 1,
         updated_at = now(), transfer_id = %(transfer_id)s
    WHEN NOT MATCHED THEN INSERT
         (sku, supplier, supplier_sku, purchase_price, currency, chosen_quantity, total_quantity,
          offers_considered, policy, supplier_offer_version, row_hash, transfer_id)
         VALUES (s.sku, s.supplier, s.supplier_sku, s.purchase_price, s.currency, s.chosen_quantity,
                 s.total_quantity, s.offers_considered, s.policy, s.supplier_offer_version, s.row_hash,
                 %(transfer_id)s)
"""

_REMOVE = "DELETE FROM hub.sku_supply AS t WHERE NOT EXISTS (SELECT 1 FROM merge_chosen AS n WHERE n.sku = t.sku)"

_LAST_SUCCESS = """
    SELECT source, max(finished_at) FROM audit.transfer
     WHERE dataset = %s AND status = 'success' AND source = ANY(%s)
     GROUP BY source
"""

# Feeds this run tried to load and that did not succeed (a scheduled run loads only the feeds due).
_FAILED_IN_THIS_RUN = """
    SELECT source FROM audit.transfer
     WHERE dataset = %s AND dag_id = %s AND run_id = %s AND source = ANY(%s)
     GROUP BY source HAVING NOT bool_or(status = 'success')
"""


@dataclass(frozen=True)
class SupplyMergeResult:
    """What one merge did (the same facts are in its ledger row)."""

    skus: int
    rows_changed: int
    rows_removed: int
    stale: dict[str, str]
    transfer_id: uuid.UUID


def stale_suppliers(
    db: psycopg.Connection,
    suppliers: list[Supplier],
    settings: SupplyMerge,
    run: ledger.RunContext,
    check_run: bool,
    now: datetime | None = None,
) -> dict[str, str]:
    """Supplier id -> why its offers may be out of date (failed this run, never loaded, too old).

    Args:
        check_run: True when called after this run's supplier loads (the supplier DAG): a feed this run
            tried to load without success failed it (a feed not due in this run is judged by age only).
    """
    feeds = [(supplier, view.source) for supplier in suppliers for view in supplier.feed_views()]
    sources = [source for _, source in feeds]
    cur = db.cursor(row_factory=tuple_row)  # whatever row factory the caller's connection uses
    last: dict[str, datetime] = dict(cur.execute(_LAST_SUCCESS, (SUPPLIER_DATASET, sources)).fetchall())
    failed: set[str] = set()
    if check_run and run.dag_id and run.run_id:
        params = (SUPPLIER_DATASET, run.dag_id, run.run_id, sources)
        failed = {row[0] for row in cur.execute(_FAILED_IN_THIS_RUN, params).fetchall()}
    limit = (now or datetime.now(UTC)) - timedelta(hours=settings.stale_after_hours)
    stale: dict[str, str] = {}
    for supplier, source in feeds:
        # A supplier with several feeds is as stale as its stalest feed (named in the reason).
        feed = "" if source == f"supplier:{supplier.id}" else f"feed {source.partition('/')[2]}: "
        when = last.get(source)
        reason: str | None = None
        if source in failed:
            reason = f"its load failed in run {run.run_id}; last success {when.isoformat() if when else 'never'}"
        elif when is None:
            reason = "never loaded successfully"
        elif when < limit:
            reason = f"last successful load {when.isoformat()} is older than {settings.stale_after_hours} h"
        if reason is not None:
            stale[supplier.id] = "; ".join(filter(None, (stale.get(supplier.id), feed + reason)))
    return stale


def merge_supply(
    dsn: str,
    suppliers: list[Supplier],
    settings: SupplyMerge,
    run: ledger.RunContext,
    *,
    check_run: bool = False,
) -> SupplyMergeResult:
    """Recompute ``hub.sku_supply`` from the active offers of ``suppliers`` (enabled ones only).

    Args:
        dsn: Hub database URL.
        suppliers: All configured suppliers (disabled ones are ignored).
        settings: Policy and staleness age.
        run: The Airflow run and task, for the ledger.
        check_run: Report suppliers without a successful load in this run as stale.
    """
    enabled = [s for s in suppliers if s.enabled]
    transfer = ledger.Transfer(source="hub.supplier_offer", target="hub", dataset=DATASET, run=run)
    params = {"transfer_id": transfer.transfer_id, "policy": settings.policy}
    with ledger.recording(dsn, transfer), connect(dsn) as db:
        stale = stale_suppliers(db, enabled, settings, run, check_run)
        merged = [s for s in enabled if settings.stale_offers == "keep" or s.id not in stale]
        db.execute(_SUPPLIERS_TABLE)
        with (
            db.cursor() as cur,
            cur.copy("COPY merge_supplier (supplier, match_by, priority, position) FROM STDIN") as copy,
        ):
            for position, supplier in enumerate(merged):
                copy.write_row((supplier.id, supplier.match_by, supplier.priority, position))
        db.execute(_CHOSEN.format(order=_ORDER[settings.policy]), params)
        skus = db.execute("SELECT count(*) FROM merge_chosen").fetchone()
        db.execute(_RECORD_CHANGES, params)
        changed = db.execute(_MERGE, params).rowcount
        removed = db.execute(_REMOVE).rowcount
        transfer.rows_read = int(skus[0]) if skus else 0
        transfer.rows_written = transfer.rows_read
        transfer.rows_changed = changed + removed
        transfer.details = {
            "policy": settings.policy,
            "suppliers": [s.id for s in merged],
            "stale_offers": settings.stale_offers,
            "rows_removed": removed,
            "stale_suppliers": stale,
        }
        if stale:
            transfer.message = f"stale suppliers: {', '.join(sorted(stale))}"
        changes.summarise(db, transfer)
        ledger.append(db, transfer, "success")
    for supplier_id, why in sorted(stale.items()):
        log.warning(
            "supplier %s is stale: %s; its last good offers are %s",
            supplier_id,
            why,
            "still used" if settings.stale_offers == "keep" else "left out of hub.sku_supply",
        )
    log.info(
        "sku_supply: %d SKUs with a supplier offer, %d changed, %d removed (transfer %s)",
        transfer.rows_read,
        changed,
        removed,
        transfer.transfer_id,
    )
    return SupplyMergeResult(transfer.rows_read, changed, removed, stale, transfer.transfer_id)


_FAILED_IN_RUN = """
    SELECT DISTINCT source FROM audit.transfer AS t
     WHERE dataset = %s AND status = 'failed' AND dag_id = %s AND run_id = %s
       AND NOT EXISTS (SELECT 1 FROM audit.transfer AS ok
                        WHERE ok.dataset = t.dataset AND ok.source = t.source AND ok.status = 'success'
                          AND ok.dag_id = t.dag_id AND ok.run_id = t.run_id AND ok.seq > t.seq)
     ORDER BY source
"""


def failed_in_run(dsn: str, run: ledger.RunContext) -> list[str]:
    """Supplier ids whose load failed in this DAG run and did not succeed on a later try."""
    with connect(dsn) as db:
        cur = db.cursor(row_factory=tuple_row)
        rows = cur.execute(_FAILED_IN_RUN, (SUPPLIER_DATASET, run.dag_id, run.run_id)).fetchall()
    return [str(source).removeprefix("supplier:") for (source,) in rows]


_LOADED_IN_RUN = "SELECT EXISTS (SELECT 1 FROM audit.transfer WHERE dataset = %s AND dag_id = %s AND run_id = %s)"


def loaded_in_run(dsn: str, run: ledger.RunContext) -> bool:
    """Whether this DAG run tried to load any supplier feed (a scheduled run loads only the feeds due)."""
    with connect(dsn) as db:
        cur = db.cursor(row_factory=tuple_row)
        row = cur.execute(_LOADED_IN_RUN, (SUPPLIER_DATASET, run.dag_id, run.run_id)).fetchone()
    return bool(row and row[0])
