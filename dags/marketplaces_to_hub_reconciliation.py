"""
### Marketplaces → hub: read-back reconciliation of published offers

Hourly, one mapped task per enabled marketplace channel whose kind can read back (Allegro, eBay,
Amazon, and any registered kind that can): read the channel's
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

**Runbook**
- Many differences at once usually mean someone bulk-edited offers on the marketplace: check the CSV
  report before the next publish run re-sends the hub's values (set `reconcile: report_only` to pause).
- *Up for retry*: the channel is throttling or down; nothing was changed in the hub.
- Amazon fails with "needs extra.seller_id and extra.marketplace_id": add them to the channel's
  connection (the publisher needs them too).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context


@dag(
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "marketplaces", "reconcile"],
    doc_md=__doc__,
)
def marketplaces_to_hub_reconciliation() -> None:
    @task
    def list_channels() -> list[str]:
        from commerce_sync import registry
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return registry.channels_that(load_config().channels, "read_back", family="marketplace")

    @task(
        inlets=[assets.HUB_OUTBOX],
        outlets=[assets.HUB_CHANNEL_RECONCILIATION, assets.HUB_OUTBOX],
    )
    def reconcile_offers(channel_id: str) -> dict[str, Any]:
        from commerce_sync import registry
        from commerce_sync.channels.publish import reconcile_channel
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_input, report_transfer
        from commerce_sync.settings import data_dir

        with operator_errors(f"channel {channel_id!r}"):
            channel = load_config().channel(channel_id)
            # Each mapped instance reads one marketplace, known only at run time.
            report_input(registry.get(channel.kind).asset(channel))
            result = reconcile_channel(hub_dsn(), channel, run_context(), data_dir() / "reports")
        for transfer_id in result["transfer_ids"]:
            report_transfer(transfer_id)
        return result

    reconcile_offers.expand(channel_id=list_channels())


marketplaces_to_hub_reconciliation()
