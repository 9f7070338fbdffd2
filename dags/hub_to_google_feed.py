"""
### Hub → Google Merchant Center feed

Triggered when channel offers change. Writes the full catalog of each enabled Google feed channel
as RSS 2.0 (`g:` namespace) to the configured path, streamed from the hub and written to a temporary
file that replaces the published one atomically, and only if the content changed. Out-of-stock
offers are kept with `out_of_stock` (a missing item would be removed by Google).

**Runbook**
- *Failed*: the previous feed file stays in place untouched; read the message (disk full, path not writable,
  configuration), fix, clear the task.
- The feed path and item count are in the task's return value and in `hub.feed_state`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context


@dag(
    schedule=[assets.HUB_CHANNEL_OFFER],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "channel:google", "publish"],
    doc_md=__doc__,
)
def hub_to_google_feed() -> None:
    @task
    def list_channels() -> list[str]:
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return [c.id for c in load_config().channels if c.enabled and c.kind == "google_merchant_feed"]

    @task(inlets=[assets.HUB_CHANNEL_OFFER, assets.HUB_PRODUCT], outlets=[assets.FEED_GOOGLE])
    def write_feed(channel_id: str) -> dict[str, Any]:
        from commerce_sync.channels.google_feed import write_google_feed
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.settings import data_dir

        with operator_errors(f"channel {channel_id!r}"):
            channel = load_config().channel(channel_id)
            result = write_google_feed(hub_dsn(), channel, data_dir(), run_context())
        report_transfer(result.transfer_id)
        return asdict(result)

    write_feed.expand(channel_id=list_channels())


hub_to_google_feed()
