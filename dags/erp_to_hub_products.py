"""
### ERP → hub: products and own stock

Reads the ERP's products incrementally (by the `updated_at` watermark kept in
`hub.source_watermark`) over SQL (any SQLAlchemy URL; PostgreSQL streams with a server-side cursor)
or a paged REST API (`erp.type` in `include/config/erp.yaml`), validates each row, COPYs valid rows
into staging and merges them into `hub.product` and `hub.stock` by change hash. Only changed SKUs get
a new version; the ledger row (`audit.transfer`, dataset `product`) is written in the same transaction.

Then `merge_supplier_offers` recomputes `hub.sku_supply` (new or changed products may match supplier
offers by GTIN or SKU), which triggers pricing.

**Params**: `full_resync` (default off) reads everything and deactivates products the ERP no
longer returns (never deletes them). `override_breakers` + `override_reason`: see below.

**Runbook**
- *Failed, "configuration problem"*: fix `include/config/erp.yaml` or the `erp_db` connection, clear the task.
- *Failed, "data was refused"*: nothing changed in the hub; see `hub.quarantine` (dataset `product`) for rows
  and reasons, fix them in the ERP, clear the task.
- *Up for retry*: the ERP (database or API) or the hub did not answer; retries back off exponentially.
- *Failed with "HTTP 401/403" from the ERP API*: the token or login in the ERP connection is wrong or expired.
- Re-running or clearing is always safe: rows already merged are recognised by hash and not changed again.
- *Failed, "circuit breaker tripped"*: too many rows failed the product suite, or a full resync returned far
  fewer rows than the last one (limits in `include/config/quality.yaml`, dataset `erp_product`). Nothing was
  merged. The numbers are in the message and in `audit.transfer.details->'breakers'`; the GX Data Docs of the
  batch are linked from the transfer in the Audit view. If the batch is right, trigger the DAG with
  `override_breakers` = true and an `override_reason`; the ledger records the override and who triggered it.
- *Deadline missed*: the ERP sync was still running 10 minutes (`COMMERCE_SYNC_DEADLINE_ERP_TO_HUB_PRODUCTS`)
  after it was queued: look for a task waiting on the source lock (another run of the ERP holds it), a slow
  ERP query or retries; the last good hub state stays live meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from commerce_sync import assets
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    START_DATE,
    breaker_override,
    hub_dsn,
    operator_errors,
    run_context,
    sync_deadline,
)


@dag(
    schedule="*/30 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "source:erp", "hub"],
    doc_md=__doc__,
    deadline=sync_deadline(
        "erp_to_hub_products",
        __doc__,
        default=timedelta(minutes=10),
        what="ERP sync",
    ),
    params={
        "full_resync": Param(
            False,
            type="boolean",
            description="Read every ERP row (ignore the watermark) and deactivate products the ERP no longer has.",
        ),
        "override_breakers": Param(
            False,
            type="boolean",
            description="Let tripped circuit breakers through, for this run only (recorded in the ledger).",
        ),
        "override_reason": Param("", type="string", description="Why the override is right (shown in the ledger)."),
    },
)
def erp_to_hub_products() -> None:
    @task(inlets=[assets.ERP_PRODUCTS], outlets=[assets.HUB_PRODUCT, assets.HUB_STOCK, assets.HUB_QUARANTINE])
    def sync_erp_products() -> dict[str, Any]:
        from commerce_sync.config import load_config, load_quality
        from commerce_sync.connections import get_connection
        from commerce_sync.lineage import report_transfer
        from commerce_sync.sources.erp import sync_erp

        full_resync = bool(get_current_context()["params"]["full_resync"])
        with operator_errors("ERP"):
            config = load_config()
            erp_conn = get_connection(config.erp.conn_id)  # a database (any SQLAlchemy dialect) or the ERP API
            result = sync_erp(
                hub_dsn(),
                config.erp,
                erp_conn,
                run_context(),
                full_resync=full_resync,
                override=breaker_override(),
                quality=load_quality(),
            )
        report_transfer(result.transfer_id)
        return asdict(result)

    @task(inlets=[assets.HUB_PRODUCT, assets.HUB_SUPPLIER_OFFER], outlets=[assets.HUB_SKU_SUPPLY])
    def merge_supplier_offers() -> dict[str, Any]:
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.sources.supply_merge import merge_supply

        with operator_errors("supplier merge"):
            config = load_config()
            result = merge_supply(hub_dsn(), config.suppliers, config.supply_merge, run_context())
        report_transfer(result.transfer_id)
        return asdict(result)

    sync_erp_products() >> merge_supplier_offers()


erp_to_hub_products()
