"""
### Hub → channel offers: prices and stock per channel

Triggered whenever products or supplier offers in the hub change. For each enabled channel in
`include/config/channels.yaml`, computes every offer set-based in SQL with the channel's pricing
rule (`include/config/pricing.yaml`): purchase price x (1 + margin) x (1 + commission), VAT for gross
channels, `.99` endings, and a hard floor (never below cost x (1 + minimum margin) x (1 + commission)).
Stock = own stock - reserved + supplier dropship stock - the channel's buffer, never negative.
Only changed offers get a new version; for marketplace channels each changed field becomes an outbox
row (with its idempotency key) in the same transaction.

**Runbook**
- *Failed, "configuration problem"*: a rule or channel in the YAML is invalid; the message names file and key.
- Re-running is safe: unchanged offers are recognised by hash; nothing is enqueued twice.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context


@dag(
    schedule=(assets.HUB_PRODUCT | assets.HUB_SUPPLIER_OFFER),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "pricing", "hub"],
    doc_md=__doc__,
)
def hub_to_channel_offers() -> None:
    @task
    def list_channels() -> list[str]:
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return [c.id for c in load_config().channels if c.enabled]

    @task(
        inlets=[assets.HUB_PRODUCT, assets.HUB_STOCK, assets.HUB_SUPPLIER_OFFER],
        outlets=[assets.HUB_CHANNEL_OFFER, assets.HUB_OUTBOX],
    )
    def compute_offers(channel_id: str) -> dict[str, Any]:
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.pricing.compute import compute_channel_offers

        with operator_errors(f"channel {channel_id!r}"):
            config = load_config()
            channel = config.channel(channel_id)
            result = compute_channel_offers(hub_dsn(), channel, config.rule_for(channel), run_context())
        report_transfer(result.transfer_id)
        return asdict(result)

    compute_offers.expand(channel_id=list_channels())


hub_to_channel_offers()
