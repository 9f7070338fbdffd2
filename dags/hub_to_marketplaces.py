"""
### Hub → marketplaces (Allegro, eBay, Amazon SP-API, any registered kind): publish price and quantity

Triggered when channel offers change. One task per marketplace kind that can publish (from the
channel registry: `publish_allegro`, `publish_ebay`, ...), mapped over the enabled channels of that kind
and run in the kind's pool on the `marketplace` queue: refresh the SKU → offer id map where the
marketplace has its own offer ids, then send the pending outbox rows in requests of the API's size
(Allegro: batch price/quantity change commands of ≤ 1,000 offers with deterministic command ids;
eBay: `bulkUpdatePriceQuantity`, ≤ 25 SKUs per call, per-item status; Amazon: a `JSON_LISTINGS_FEED`
of ≤ 25,000 PATCH messages, ≤ 5 submissions per 5 minutes, per-SKU errors from the processing report).
Channels run in parallel and independently: one channel down fails only its own task.

**Runbook**
- The task log and the ledger row (`details.backlog`, `details.backlog_after`) show each channel's
  backlog: pending outbox rows and the age of the oldest.
- *Up for retry, "circuit open"*: the channel answered 5xx repeatedly; the client stops calling it
  and the rows stay pending. Nothing is lost; the next run (or the retry) drains the backlog.
- *Up for retry, 429*: throttled; `Retry-After` is honoured (seconds or HTTP-date).
- *Failed, "channel refused"*: credentials (the connection named in channels.yaml) or a rejected
  payload; fix and clear the task. Re-sending is safe: updates carry absolute values, and Allegro
  commands carry ids derived from the outbox rows, so Allegro applies a re-sent command once.
- Per-SKU refusals stay in `hub.outbox` (status `failed`, the channel's message; e.g. no offer on the
  marketplace for a SKU); offers failing the pre-publish check (below floor, foreign currency) are in
  `hub.quarantine` (dataset `channel_offer`).
- *Deadline missed*: a publish was still running 15 minutes (`COMMERCE_SYNC_DEADLINE_HUB_TO_MARKETPLACES`)
  after its trigger: look for a task waiting in its marketplace pool (`allegro_api`, ...; Admin > Pools) or
  up for retry on a throttled API; the outbox keeps every pending row, nothing is lost while it waits.
- Upgrading: this DAG replaced `hub_to_allegro_offers` (Allegro's own DAG); see the README.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets, registry
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    LATENCY_CRITICAL,
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
    schedule=[assets.HUB_CHANNEL_OFFER],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "marketplaces", "publish"],
    doc_md=__doc__,
    deadline=sync_deadline(
        "hub_to_marketplaces",
        __doc__,
        default=timedelta(minutes=15),
        what="publish",
    ),
)
def hub_to_marketplaces() -> None:
    @task(
        inlets=[assets.HUB_OUTBOX, assets.HUB_CHANNEL_OFFER],
        outlets=[assets.HUB_OUTBOX, assets.HUB_CHANNEL_LISTING],
        queue=MARKETPLACE_QUEUE,
        max_active_tis_per_dagrun=MAX_PARALLEL_CHANNELS,
        map_index_template="{{ channel_id }}",
        **LATENCY_CRITICAL,
    )
    def publish_offers(channel_id: str) -> dict[str, Any]:
        from commerce_sync.channels.publish import publish_channel
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_output, report_transfer

        label_map_index(channel_id=channel_id)
        with operator_errors(f"channel {channel_id!r}"):
            channel = load_config().channel(channel_id)
            # Each mapped instance writes to one marketplace, known only at run time.
            report_output(registry.get(channel.kind).asset(channel))
            result = publish_channel(hub_dsn(), channel, run_context())
        for transfer_id in result["transfer_ids"]:
            report_transfer(transfer_id)
        return result

    per_kind(publish_offers, "publish", "publish", family="marketplace")


hub_to_marketplaces()
