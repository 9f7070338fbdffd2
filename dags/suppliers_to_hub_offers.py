"""
### Supplier feeds → hub: wholesaler offers (purchase price, dropship stock)

One mapped task per feed of each enabled supplier in `include/config/suppliers.yaml` (a supplier has
one feed, or several such as a BMEcat price catalogue plus a CSV stock feed: each loads on its own and
sets only the fields it delivers; the offer keeps the other feed's fields). The DAG runs every 15 minutes;
a scheduled run loads the feeds that are due (`every_minutes` per feed, default 60, so a stock feed can load
every run and a catalogue once a day); a manual run loads every feed. A scheduled run with no feed due
skips `merge_supplier_offers` (no `sku_supply` event, so no pricing run). Each task: fetch the feed (HTTP with
conditional GET, SFTP with a checked host key, or a local file; `.gz` accepted; incomplete transfers
refused whole), parse it streamed (generic XML mapping, BMEcat 1.2/2005 or CSV), COPY it into
staging, validate it (failing rows go to `hub.quarantine` with the reason), then merge valid rows
into `hub.supplier_offer` by change hash. The same file delivered again (same sha256) is recorded as
a `duplicate` transfer and loads nothing. Purchase prices that moved beyond the report threshold are
listed in `hub.supplier_price_change`, the task log and a CSV under
`$COMMERCE_SYNC_DATA_DIR/reports/supplier_price_changes/`; beyond the alert threshold the notifier
fires (default: a JSON line in `$COMMERCE_SYNC_DATA_DIR/alerts/supplier_price_changes.jsonl`).
A supplier failing does not stop the others: `merge_supplier_offers` runs on what succeeded
(`trigger_rule=all_done`), recomputes `hub.sku_supply` (chosen offer per SKU, total dropship stock)
and records in its ledger row which suppliers are stale.

**Runbook**
- *A supplier's task failed, "data was refused"*: the feed was not usable as a whole (not XML, truncated,
  every row invalid); nothing in the hub changed and the last good offers stay live. The message names the
  supplier and the URL: contact the supplier or fix the mapping, then clear that mapped task only.
- *Up for retry*: the supplier's server did not answer or answered 5xx/429; retries back off.
- *Price alert*: read the CSV named in the alert (largest moves first) and check the supplier's price
  list; pricing's own gates hold implausible moves. Thresholds: `price_change` in suppliers.yaml.
- *Stale suppliers* (in `merge_supplier_offers`' log and ledger row): their last good offers are still
  used (unless `merge.stale_offers: exclude`); fix the failing supplier task and clear it, then clear
  `merge_supplier_offers`. `report_failed_suppliers` runs only when a supplier failed: it fails the run on
  purpose (so the run shows red) and names the suppliers; nothing to clear there.
- Quarantined rows: `SELECT * FROM hub.quarantine WHERE status = 'open' AND dataset = 'supplier_offer'`.
  They leave quarantine automatically when a later delivery brings the row valid.
- *Failed, "circuit breaker tripped"*: the batch as a whole looks wrong (a full feed with far fewer rows
  than the last good one, or too many invalid rows; limits in `include/config/quality.yaml`). Nothing was
  merged or published; the numbers are in the message and in `audit.transfer.details->'breakers'`, the
  evidence (GX Data Docs) is linked from the transfer in the Audit view. If the batch is right (the
  supplier really shrank its range), trigger the DAG with the Param `override_breakers` = true and an
  `override_reason`: that run lets the batch through and the ledger records the override and who triggered it.
- *Deadline missed*: the supplier sync was still running 15 minutes (`COMMERCE_SYNC_DEADLINE_SUPPLIERS_TO_HUB_OFFERS`)
  after it was queued: a feed server is slow or retrying, or a run waits on its source lock; read the
  supplier tasks' logs. The last good offers stay live.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

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
    schedule="*/15 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "source:supplier", "hub"],
    doc_md=__doc__,
    deadline=sync_deadline(
        "suppliers_to_hub_offers",
        __doc__,
        default=timedelta(minutes=15),
        what="supplier feed sync",
    ),
    params={
        "override_breakers": Param(
            False,
            type="boolean",
            description="Let tripped circuit breakers through, for this run only (recorded in the ledger).",
        ),
        "override_reason": Param(
            "", type="string", description="Why the override is right (e.g. 'acme discontinued 60% of its range')."
        ),
    },
)
def suppliers_to_hub_offers() -> None:
    @task
    def list_suppliers() -> list[dict[str, str | None]]:
        from airflow.sdk import get_current_context

        from commerce_sync.config import load_config
        from commerce_sync.sources.feed_schedule import due_feeds

        with operator_errors("suppliers.yaml"):
            suppliers = load_config().suppliers
            scheduled = get_current_context()["dag_run"].run_type == "scheduled"
            views = (
                due_feeds(hub_dsn(), suppliers)
                if scheduled
                else [view for s in suppliers if s.enabled for view in s.feed_views()]
            )
            return [{"supplier_id": view.id, "feed_id": view.feed_id} for view in views]

    # The feed read is per supplier (configuration, unknown at parse time): it is reported at run time.
    @task(
        outlets=[assets.HUB_SUPPLIER_OFFER, assets.HUB_QUARANTINE, assets.HUB_SUPPLIER_PRICE_CHANGE],
        max_active_tis_per_dagrun=4,
    )
    def sync_supplier_feed(supplier_id: str, feed_id: str | None = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from commerce_sync.config import load_config, load_quality
        from commerce_sync.connections import get_connection
        from commerce_sync.lineage import report_input, report_transfer
        from commerce_sync.settings import data_dir
        from commerce_sync.sources.notifiers import price_change_notifier
        from commerce_sync.sources.supplier_load import sync_supplier

        with operator_errors(f"supplier {supplier_id!r}"):
            config = load_config()
            supplier = config.supplier(supplier_id).feed_view(feed_id)
            transport = supplier.spec.transport
            conn_id = getattr(transport, "conn_id", None)
            report_input(assets.supplier_feed(supplier_id, transport.type, transport.path, conn_id))
            conn = get_connection(conn_id) if conn_id else None
            work_dir = data_dir() / "downloads" / supplier_id / (feed_id or "")
            work_dir.mkdir(parents=True, exist_ok=True)
            result = sync_supplier(
                hub_dsn(),
                supplier,
                conn,
                run_context(),
                work_dir,
                config.price_change,
                override=breaker_override(),
                quality=load_quality(),
            )
        report_transfer(result.transfer_id)
        if result.price_changes is not None and result.price_changes.alert:
            price_change_notifier(result.price_changes, config.price_change)(get_current_context())
        return asdict(result)

    @task(
        trigger_rule="all_done",
        inlets=[assets.HUB_PRODUCT, assets.HUB_SUPPLIER_OFFER],
        outlets=[assets.HUB_SKU_SUPPLY],
    )
    def merge_supplier_offers() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.sources.supply_merge import loaded_in_run, merge_supply

        with operator_errors("supplier merge"):
            loaded = loaded_in_run(hub_dsn(), run_context())
        if not loaded:
            # No feed was due (a 15-minute run between hourly loads): no sku_supply event, no pricing run.
            raise AirflowSkipException("no supplier feed was loaded in this run; hub.sku_supply is unchanged")
        with operator_errors("supplier merge"):
            config = load_config()
            result = merge_supply(hub_dsn(), config.suppliers, config.supply_merge, run_context(), check_run=True)
        report_transfer(result.transfer_id)
        return asdict(result)

    # The merge is a leaf that succeeds on partial input, so without this watcher a run with a failed
    # supplier would show as successful. It runs only when something upstream failed, and fails the run.
    @task(trigger_rule="one_failed")
    def report_failed_suppliers() -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from commerce_sync.sources.supply_merge import failed_in_run

        failed = failed_in_run(hub_dsn(), run_context())
        raise AirflowFailException(
            f"supplier load(s) failed in this run: {', '.join(failed) or 'see the failed tasks'}; "
            "hub.sku_supply was merged from the suppliers that succeeded (the failed ones are listed as stale). "
            "Fix the cause named in the failed sync_supplier_feed task, clear it, then clear merge_supplier_offers."
        )

    synced = sync_supplier_feed.expand_kwargs(list_suppliers())
    merged = merge_supplier_offers()
    synced >> merged
    [synced, merged] >> report_failed_suppliers()


suppliers_to_hub_offers()
