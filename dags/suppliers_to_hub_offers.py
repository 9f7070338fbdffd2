"""
### Supplier feeds → hub: wholesaler offers (purchase price, dropship stock)

One mapped task per enabled supplier in `include/config/suppliers.yaml`: download the feed
(conditional GET), parse it streamed with the safe XML parser or the CSV reader, COPY it into
staging, validate it with the Great Expectations suite (failing rows go to `hub.quarantine` with
the expectation and the observed value), then merge valid rows into `hub.supplier_offer` by change
hash. A supplier failing does not stop the others.

**Runbook**
- *A supplier's task failed, "data was refused"*: the feed was not usable as a whole (not XML, truncated,
  every row invalid); nothing in the hub changed and the last good offers stay live. The message names the
  supplier and the URL: contact the supplier or fix the mapping, then clear that mapped task only.
- *Up for retry*: the supplier's server did not answer or answered 5xx/429; retries back off.
- Quarantined rows: `SELECT * FROM hub.quarantine WHERE status = 'open' AND dataset = 'supplier_offer'`.
  They leave quarantine automatically when a later delivery brings the row valid.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context


@dag(
    schedule="15 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "source:supplier", "hub"],
    doc_md=__doc__,
)
def suppliers_to_hub_offers() -> None:
    @task
    def list_suppliers() -> list[str]:
        from commerce_sync.config import load_config

        with operator_errors("suppliers.yaml"):
            return [s.id for s in load_config().suppliers if s.enabled]

    # The feed read is per supplier (configuration, unknown at parse time): it is reported at run time.
    @task(outlets=[assets.HUB_SUPPLIER_OFFER, assets.HUB_QUARANTINE], max_active_tis_per_dagrun=4)
    def sync_supplier_feed(supplier_id: str) -> dict[str, Any]:
        from commerce_sync.config import HttpTransport, load_config
        from commerce_sync.connections import get_connection
        from commerce_sync.lineage import report_input, report_transfer
        from commerce_sync.settings import data_dir
        from commerce_sync.sources.supplier_load import sync_supplier

        with operator_errors(f"supplier {supplier_id!r}"):
            supplier = load_config().supplier(supplier_id)
            transport = supplier.transport
            conn_id = transport.conn_id if isinstance(transport, HttpTransport) else None
            report_input(assets.supplier_feed(supplier_id, transport.type, transport.path, conn_id))
            conn = get_connection(conn_id) if conn_id else None
            work_dir = data_dir() / "downloads" / supplier_id
            work_dir.mkdir(parents=True, exist_ok=True)
            result = sync_supplier(hub_dsn(), supplier, conn, run_context(), work_dir)
        report_transfer(result.transfer_id)
        return asdict(result)

    sync_supplier_feed.expand(supplier_id=list_suppliers())


suppliers_to_hub_offers()
