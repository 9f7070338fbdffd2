"""The merged hub catalog suite: ``hub.product`` + ``hub.sku_supply`` checked where they live.

Unlike a source batch, the hub catalog has no delivery to quarantine rows from: its problems are
inconsistencies between what the ERP and the supplier merge left behind (an active product
without a price, a chosen supplier offer that is gone). Each check is a Great Expectations
``UnexpectedRowsExpectation`` run by GX's own PostgreSQL datasource against the hub (``{batch}`` is
``hub.product``): GX counts the offending SKUs, lists the first of them and renders Data Docs; the
result goes to the ledger (``source`` and ``target`` ``hub``, dataset ``hub_catalog``).

Call :func:`check_hub_catalog` after the supplier merge and before pricing (e.g. a task between
``merge_supplier_offers`` and ``compute_offers``); with ``max_failing_skus`` set it refuses the
catalog (DataError) when more SKUs than that are inconsistent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.errors import DataError
from commerce_sync.quality.evidence import gx_exception, sqlalchemy_url
from commerce_sync.quality.suites import ISO_4217, ExpectationResult, ValidationOutcome

log = logging.getLogger(__name__)

HUB_CATALOG_SUITE = "hub_catalog"
_CURRENCIES = ", ".join(f"'{c}'" for c in sorted(ISO_4217))


@dataclass(frozen=True)
class CatalogCheck:
    """One consistency rule: ``query`` returns the offending SKUs (``{batch}`` is hub.product)."""

    name: str
    column: str
    description: str
    query: str


HUB_CATALOG_CHECKS = (
    CatalogCheck(
        "active_product_priced",
        "purchase_price",
        "every active product has a purchase price above 0",
        # Without a JOIN GX aliases {batch} itself: no alias of our own here.
        "SELECT sku, purchase_price FROM {batch} WHERE active AND (purchase_price IS NULL OR purchase_price <= 0)",
    ),
    CatalogCheck(
        "product_currency_known",
        "currency",
        "every active product's currency is an ISO 4217 code",
        f"SELECT sku, currency FROM {{batch}} WHERE active AND currency NOT IN ({_CURRENCIES})",
    ),
    CatalogCheck(
        "supply_currency_known",
        "currency",
        "every chosen supplier offer's currency is an ISO 4217 code",
        "SELECT s.sku, s.currency FROM hub.sku_supply AS s JOIN {batch} AS p ON p.sku = s.sku "
        f"WHERE s.currency NOT IN ({_CURRENCIES})",
    ),
    CatalogCheck(
        "supply_offer_exists",
        "supplier_sku",
        "every chosen supplier offer still exists and is active",
        "SELECT s.sku, s.supplier, s.supplier_sku FROM hub.sku_supply AS s JOIN {batch} AS p ON p.sku = s.sku "
        "LEFT JOIN hub.supplier_offer AS o ON o.supplier = s.supplier AND o.supplier_sku = s.supplier_sku "
        "WHERE o.supplier IS NULL OR NOT o.active",
    ),
    CatalogCheck(
        "supply_quantity_consistent",
        "chosen_quantity",
        "the chosen offer's quantity is not above the total over all offers",
        "SELECT s.sku, s.chosen_quantity, s.total_quantity FROM hub.sku_supply AS s JOIN {batch} AS p "
        "ON p.sku = s.sku WHERE s.chosen_quantity > s.total_quantity",
    ),
    CatalogCheck(
        "supply_for_active_product",
        "sku",
        "supply is chosen only for active products",
        "SELECT s.sku FROM hub.sku_supply AS s JOIN {batch} AS p ON p.sku = s.sku WHERE NOT p.active",
    ),
)


# SKUs whose pricing inputs changed since the channel that is furthest behind last computed its
# offers (the scope an incremental pricing run will see), counted up to a cap.
_PENDING_SKUS = """
WITH since AS (SELECT min(inputs_seen_until) AS t FROM hub.pricing_state WHERE channel = ANY(%(channels)s))
SELECT count(*) FROM (
    SELECT sku FROM hub.product, since WHERE updated_at > since.t
    UNION SELECT sku FROM hub.stock, since WHERE updated_at > since.t
    UNION SELECT sku FROM hub.sku_supply, since WHERE updated_at > since.t
    LIMIT %(cap)s
) AS pending
"""


def small_change(dsn: str, channels: list[str], max_skus: int) -> int | None:
    """How many SKUs changed since the last pricing, if at most ``max_skus`` (the fast path); else None.

    None also when one of ``channels`` was never priced (its first run is a whole-catalog run) or
    ``max_skus`` is 0.
    Uses the ``updated_at`` indexes: the cost does not grow with the catalog.
    """
    if max_skus <= 0:
        return None
    with connect(dsn) as conn:
        priced = conn.execute("SELECT count(*) FROM hub.pricing_state WHERE channel = ANY(%s)", (channels,)).fetchone()
        if not channels or not priced or priced[0] != len(set(channels)):
            return None
        row = conn.execute(_PENDING_SKUS, {"cap": max_skus + 1, "channels": channels}).fetchone()
    pending = int(row[0]) if row else max_skus + 1
    return pending if pending <= max_skus else None


def check_hub_catalog(
    dsn: str,
    run: ledger.RunContext,
    docs_dir: Path | None,
    *,
    max_failing_skus: int | None = None,
    on_transfer: Callable[[str], None] | None = None,
) -> ValidationOutcome:
    """Run the hub catalog suite with GX on PostgreSQL; record it in the ledger (+ Data Docs).

    Args:
        dsn: Hub database.
        run: The Airflow run doing it.
        docs_dir: Root of the Data Docs (``config.data_docs_root``); None renders none.
        max_failing_skus: Refuse (DataError) when more SKUs than this break a rule; None only reports.
        on_transfer: Called with the ledger transfer id before the checks run (e.g. to name it in lineage).

    Returns:
        Per check the number of offending SKUs (``rows_quarantined`` is their total: nothing is
        moved to quarantine, the hub rows stay where they are).
    """
    import great_expectations as gx

    from commerce_sync.quality.evidence import _context, site_relative_dir

    transfer = ledger.Transfer(source="hub", target="hub", dataset=HUB_CATALOG_SUITE, run=run)
    if on_transfer:
        on_transfer(str(transfer.transfer_id))
    with ledger.recording(dsn, transfer):
        site = docs_dir / site_relative_dir("hub", transfer.transfer_id) if docs_dir else None
        context = _context(site)
        asset = context.data_sources.add_postgres("hub", connection_string=sqlalchemy_url(dsn)).add_table_asset(
            "product", table_name="product", schema_name="hub"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=HUB_CATALOG_SUITE))
        for check in HUB_CATALOG_CHECKS:
            suite.add_expectation(
                gx.expectations.UnexpectedRowsExpectation(
                    description=f"{check.name}: {check.description}", unexpected_rows_query=check.query
                )
            )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=HUB_CATALOG_SUITE, data=asset.add_batch_definition_whole_table("all"), suite=suite
            )
        )
        actions: list[Any] = (
            [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["evidence"])] if site else []
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=HUB_CATALOG_SUITE,
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "COMPLETE"},
            )
        )
        run_result = checkpoint.run()
        [validation] = run_result.run_results.values()
        by_name: dict[str, int] = {}
        samples: dict[str, list[str]] = {}
        for item in validation.results:
            name = str(item.expectation_config.description or "").split(":", 1)[0]
            failure = gx_exception(item.exception_info)
            if failure or item.result.get("observed_value") is None:
                raise DataError(f"hub catalog check {name} could not run: {failure or 'no result'}")
            by_name[name] = int(item.result.get("observed_value") or 0)
            rows = (item.result.get("details") or {}).get("unexpected_rows") or []
            if rows:
                samples[name] = [str(row.get("sku")) for row in rows[:20]]
        results = tuple(ExpectationResult(c.name, c.column, by_name.get(c.name, 0)) for c in HUB_CATALOG_CHECKS)
        with connect(dsn) as conn:
            counted = conn.execute("SELECT count(*) FROM hub.product").fetchone()
        outcome = ValidationOutcome(
            suite=HUB_CATALOG_SUITE,
            rows_evaluated=int(counted[0]) if counted else 0,
            rows_quarantined=sum(r.unexpected_count for r in results),
            results=results,
        )
        transfer.rows_rejected = outcome.rows_quarantined
        transfer.details["validation"] = outcome.summary() | {"failing_skus_sample": samples}
        if site:
            transfer.details["data_docs"] = f"{site_relative_dir('hub', transfer.transfer_id)}/index.html"
        if max_failing_skus is not None and outcome.rows_quarantined > max_failing_skus:
            problems = "; ".join(
                f"{r.expectation}: {r.unexpected_count} SKU(s), e.g. {', '.join(samples.get(r.expectation, [])[:5])}"
                for r in results
                if not r.success
            )
            raise DataError(
                f"hub catalog: {outcome.rows_quarantined} inconsistent SKU(s), more than the {max_failing_skus} "
                f"allowed: {problems}. Fix the ERP product or the supplier feed, or run the supplier merge again."
            )
    log.info("hub catalog: %s", transfer.details["validation"])
    return outcome
