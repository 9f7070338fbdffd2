"""
### Marketplaces → hub: read-back reconciliation of published offers

Hourly, one task per marketplace kind that can read back (`reconcile_allegro`, `reconcile_ebay`, ...;
any registered kind that can), mapped over its enabled channels, in the kind's pool (shared with
publishing) on the `marketplace` queue: read the channel's
current offers and compare them with what the hub last sent (the newest `sent` outbox row per SKU and
field; SKUs with a change in flight are skipped). Differences — an offer edited directly on the marketplace,
or a change the channel silently did not apply — are logged, written to a CSV report under
`<data dir>/reports/`, recorded in `hub.channel_reconciliation` and in the ledger, and handled by the
channel's `reconcile` setting in channels.yaml:
`hub_wins` (default) queues the hub's value again with a fresh idempotency key (the next publish run
sends it), `channel_wins` records the channel's value as published, `report_only` changes nothing.

Amazon is read through the Listings Items API (`searchListingsItems`, 5 requests/s): only the SKUs
the hub published, 20 per request, because Amazon pages through at most 1,000 results of a search.
A catalog of N published SKUs takes about N / 100 seconds.

Before comparing, a channel whose kind imports orders has its new orders imported and their quantities
pushed (as `marketplaces_to_hub_orders` does): a marketplace lowers an offer's quantity itself when it
sells, and that must not be mistaken for an edit and sent back up.

**Runbook**
- Many differences at once usually mean someone bulk-edited offers on the marketplace: check the CSV
  report before the next publish run re-sends the hub's values (set `reconcile: report_only` to pause).
- *Up for retry*: the channel is throttling or down; nothing was changed in the hub.
- Amazon fails with "needs extra.seller_id and extra.marketplace_id": add them to the channel's
  connection (the publisher needs them too).
- *Deadline missed*: still running 30 minutes (`COMMERCE_SYNC_DEADLINE_MARKETPLACES_TO_HUB_RECONCILIATION`)
  after it was queued: a task waits in its marketplace's pool behind a publish, or the API is throttling.
  Nothing is at risk; look at Admin > Pools and the task log.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets, registry
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    MARKETPLACE_QUEUE,
    MAX_PARALLEL_CHANNELS,
    START_DATE,
    hub_dsn,
    label_map_index,
    operator_errors,
    per_kind,
    run_context,
    sync_deadline,
)


@dag(
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "marketplaces", "reconcile"],
    doc_md=__doc__,
    deadline=sync_deadline(
        "marketplaces_to_hub_reconciliation",
        __doc__,
        default=timedelta(minutes=30),
        what="read-back reconciliation",
    ),
)
def marketplaces_to_hub_reconciliation() -> None:
    @task(
        inlets=[assets.HUB_OUTBOX],
        outlets=[assets.HUB_CHANNEL_RECONCILIATION, assets.HUB_OUTBOX],
        queue=MARKETPLACE_QUEUE,
        max_active_tis_per_dagrun=MAX_PARALLEL_CHANNELS,
        map_index_template="{{ channel_id }}",
    )
    def reconcile_offers(channel_id: str) -> dict[str, Any]:
        from commerce_sync.channels.publish import reconcile_channel
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_input, report_transfer
        from commerce_sync.orders.importer import catch_up
        from commerce_sync.settings import data_dir

        label_map_index(channel_id=channel_id)
        with operator_errors(f"channel {channel_id!r}"):
            config = load_config()
            channel = config.channel(channel_id)
            # Each mapped instance reads one marketplace, known only at run time.
            report_input(registry.get(channel.kind).asset(channel))
            # Sales first: a quantity the marketplace lowered by selling must not be "corrected" back up.
            orders = catch_up(hub_dsn(), config, channel, run_context())
            result = reconcile_channel(hub_dsn(), channel, run_context(), data_dir() / "reports")
        for transfer_id in orders + result["transfer_ids"]:
            report_transfer(transfer_id)
        return result

    # Per marketplace kind, in the kind's pool (shared with publishing and order import).
    per_kind(reconcile_offers, "reconcile", "read_back", family="marketplace")


marketplaces_to_hub_reconciliation()
