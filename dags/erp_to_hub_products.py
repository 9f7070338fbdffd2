"""
### ERP → hub: products and own stock

Reads the ERP's products incrementally (by the `updated_at` watermark kept in
`hub.source_watermark`) over SQL (any SQLAlchemy URL; PostgreSQL streams with a server-side cursor)
or a paged REST API (`erp.type` in `include/config/erp.yaml`), validates each row, COPYs valid rows
into staging and merges them into `hub.product` and `hub.stock` by change hash. Only changed SKUs get
a new version; the ledger row (`audit.transfer`, dataset `product`) is written in the same transaction.

Then `merge_supplier_offers` recomputes `hub.sku_supply` (new or changed products may match supplier
offers by GTIN or SKU), which triggers pricing. It is skipped when the run added no product and changed
no GTIN, currency or active flag (a price or stock change): pricing then runs once, on the product event.

**When it runs: the ERP doorbell, and the cron as the safety net** (`AssetOrTimeSchedule`)
- *Event path*: the sandbox ERP's trigger `products_notify_changed` does `pg_notify('erp_products_changed')`
  on every statement that changes `erp.products` (products and stock). The triggerer runs
  `commerce_sync.triggers.PostgresChangeTrigger` (`AssetWatcher` `erp_doorbell` on the asset
  `commerce_erp.erp.products.changes`): it `LISTEN`s through the `erp_db` connection, waits for 1 s of quiet
  after a NOTIFY (a burst is one event, at most 5 s late), reads the ERP's `(updated_at, sku)` watermark and
  fires only if it moved past the one it last fired for (kept in the asset's `asset_state_store`, key
  `fired_watermark`). It also reads the watermark every `COMMERCE_SYNC_ERP_POLL_SECONDS` (default 20), so a
  NOTIFY lost while nobody listened (triggerer restart, dropped connection) costs one poll interval, not
  half an hour. Events that arrive while a run is active fold into the next run (`max_active_runs=1`).
- *Is it alive?* The triggerer's log shows `doorbell erp_products_changed: listening; last fired for ...`
  (and `reconnecting in N s` after a lost connection: it never gives up and never fires on errors);
  Browse → Assets → `commerce_erp.erp.products.changes` lists its events (`payload.watermark`,
  `payload.woken_by`: `notify xN` or `poll`); Admin → Triggers lists the running trigger; runs it started
  have run type `asset_triggered`; in the ERP, `SELECT * FROM pg_stat_activity WHERE application_name =
  'commerce_sync doorbell'` shows its LISTEN connection.
- *Safety net*: the cron (every 30 min, UTC) starts a run whatever happened, so a dead triggerer, an ERP
  without the NOTIFY trigger or a lost event delays a change by at most 30 minutes. Every run reads from the
  hub's watermark (`hub.source_watermark`), never from the event: an event without a change is a no-op run.
- *Your own ERP*: add a statement-level trigger that calls `pg_notify('erp_products_changed', '')` on the
  table the `erp.yaml` query reads (see `dev/commerce_sync_sandbox/erp.py`). An ERP reached over REST
  (or any system that can call a webhook) rings the same asset through Airflow's API:
  `POST /api/v2/assets/events` with `{"asset_id": <id of commerce_erp.erp.products.changes>, "extra": {...}}`
  (id from `GET /api/v2/assets?name_pattern=commerce_erp.erp.products.changes`; a user or token allowed to
  create asset events). Without either, the cron alone keeps the 30-minute cadence.

**Fast path** (a change of at most `COMMERCE_SYNC_FAST_PATH_MAX_SKUS` SKUs, default 1000): a clean
incremental batch of that size gets no Great Expectations Data Docs (the SQL row checks, quarantine and
breakers run as always; a batch with a failing row gets its Data Docs). Full resyncs and larger batches
render them. The critical path of an ERP change is five task start-ups in a row: `sync_erp_products` →
(asset event) → `hub_to_channel_offers`: `load_exchange_rates` ‖ `check_hub_catalog` ‖ `list_channels` →
`compute_offers[channel]` → (asset event) → `hub_to_marketplaces`: `list_<kind>_channels` → `publish_<kind>[channel]`.
`merge_supplier_offers` and the feeds are off it: feed channels are priced by `compute_feed_offers`, which
emits no offer event (it would start a marketplace run with nothing to send, and a real change would wait
for it). The tasks on the critical path carry priority weight 10 (every other task 1), so when the
executor's slots are taken they start first. Where the time goes: `make bench-latency` (bench/README.md).

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

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from commerce_sync import assets
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    LATENCY_CRITICAL,
    START_DATE,
    breaker_override,
    hub_dsn,
    operator_errors,
    run_context,
    sync_deadline,
)
from commerce_sync.triggers import erp_changes_asset


@dag(
    # The ERP doorbell (an AssetWatcher in the triggerer) starts a run as soon as the ERP changes;
    # the cron stays as the safety net.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/30 * * * *", timezone="UTC"), assets=[erp_changes_asset()]
    ),
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
    @task(
        inlets=[assets.ERP_PRODUCTS],
        outlets=[assets.HUB_PRODUCT, assets.HUB_STOCK, assets.HUB_QUARANTINE],
        **LATENCY_CRITICAL,
    )
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
    def merge_supplier_offers(erp: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.sources.supply_merge import merge_supply

        if not get_current_context()["params"]["full_resync"] and not erp.get("supply_keys_changed"):
            # Skipped, it emits no supply event: pricing runs once for this change, not twice.
            raise AirflowSkipException("no product was added or changed its GTIN, currency or status: nothing to merge")

        with operator_errors("supplier merge"):
            config = load_config()
            result = merge_supply(hub_dsn(), config.suppliers, config.supply_merge, run_context())
        report_transfer(result.transfer_id)
        return asdict(result)

    merge_supplier_offers(sync_erp_products())


erp_to_hub_products()
