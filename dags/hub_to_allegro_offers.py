"""
### Hub → Allegro: publish price and quantity changes through the outbox

Triggered when channel offers change. For each enabled Allegro channel: refresh the SKU → offer id
map from Allegro's offer list (`sync_listings`), then send the pending outbox rows as batch price and
quantity change commands (`publish_deltas`). Each command's id is derived from the idempotency keys
it carries, so a retry after a crash re-sends the same command and Allegro applies it once; a newer
change supersedes an older unsent one.

**Runbook**
- *Up for retry*: Allegro answered 429/5xx or did not answer; retries honour `Retry-After` and back off.
- *Failed, "channel refused"*: e.g. invalid credentials (check the connection named in channels.yaml) or a
  rejected payload; fix and clear the task. Nothing is sent twice.
- Per-offer failures (e.g. no Allegro offer for a SKU) stay in `hub.outbox` with status `failed` and the
  channel's message; they are counted as rejected in the ledger.
- The backlog (pending outbox rows, age of the oldest) before and after is in the task log and in the
  ledger row (`details.backlog`, `details.backlog_after`). *Up for retry, "circuit open"*: Allegro
  answered 5xx repeatedly; the rows stay pending and the next run drains them.
- Prices below the offer's floor or in another currency never reach Allegro: they fail the pre-publish
  check and are listed in `hub.quarantine` (dataset `channel_offer`).
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
    tags=["commerce-sync", "channel:allegro", "publish"],
    doc_md=__doc__,
)
def hub_to_allegro_offers() -> None:
    @task
    def list_channels() -> list[str]:
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return [c.id for c in load_config().channels if c.enabled and c.kind == "allegro"]

    @task(inlets=[assets.ALLEGRO_OFFERS], outlets=[assets.HUB_CHANNEL_LISTING])
    def sync_listings(channel_id: str) -> str:
        from commerce_sync.audit.ledger import Transfer, recording
        from commerce_sync.channels import allegro
        from commerce_sync.config import load_config
        from commerce_sync.connections import get_connection
        from commerce_sync.lineage import report_transfer

        with operator_errors(f"channel {channel_id!r}"):
            channel = load_config().channel(channel_id)
            client = allegro.AllegroClient.from_connection(get_connection(str(channel.conn_id)))
            dsn = hub_dsn()
            transfer = Transfer(
                source=f"channel:{channel_id}", target="hub", dataset="channel_listing", run=run_context()
            )
            report_transfer(transfer.transfer_id)
            with recording(dsn, transfer):
                allegro.sync_listings(dsn, channel_id, client, transfer)
        return channel_id

    @task(inlets=[assets.HUB_OUTBOX, assets.HUB_CHANNEL_LISTING], outlets=[assets.ALLEGRO_OFFERS, assets.HUB_OUTBOX])
    def publish_deltas(channel_id: str) -> dict[str, Any]:
        from commerce_sync.audit.ledger import Transfer, recording
        from commerce_sync.channels import allegro
        from commerce_sync.channels.publish import backlog_of
        from commerce_sync.config import load_config
        from commerce_sync.connections import get_connection
        from commerce_sync.lineage import report_transfer

        with operator_errors(f"channel {channel_id!r}"):
            channel = load_config().channel(channel_id)
            client = allegro.AllegroClient.from_connection(get_connection(str(channel.conn_id)))
            dsn = hub_dsn()
            before = backlog_of(dsn, channel_id)
            transfer = Transfer(
                source="hub",
                target=f"channel:{channel_id}",
                dataset="offer_update",
                run=run_context(),
                details={"backlog": before},
            )
            report_transfer(transfer.transfer_id)
            with recording(dsn, transfer):
                try:
                    result = allegro.publish_outbox(
                        dsn,
                        channel_id,
                        client,
                        transfer,
                        batch_size=channel.batch_size,
                        currencies=channel.currencies,
                    )
                finally:
                    transfer.details = {**transfer.details, "backlog_after": backlog_of(dsn, channel_id)}
        return {**asdict(result), "backlog_before": before, "backlog_after": transfer.details["backlog_after"]}

    publish_deltas.expand(channel_id=sync_listings.expand(channel_id=list_channels()))


hub_to_allegro_offers()
