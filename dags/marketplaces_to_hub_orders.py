"""
### Marketplaces → hub → ERP: orders, stock reservations and the new quantity on every channel

Every minute, and at once when a channel's webhook rings (an event on `hub.webhook_delivery`, e.g. a
WooCommerce order webhook). One mapped task per enabled channel whose kind imports orders (Allegro order events +
checkout forms, eBay Fulfillment `getOrders`, Amazon Orders API v2026-01-01 `searchOrders`, and any
registered kind that can): read the orders changed since the channel's stored cursor and store them,
their stock reservations and the new cursor in one transaction per batch (`hub.sales_order`,
`hub.order_line`, `hub.stock_reservation`, `hub.order_cursor`; a ledger transfer per batch, row-level
changes in `audit.change`, dataset `order`). A sold unit is reserved as soon as the order is seen (it is
already gone from that marketplace); a cancelled order releases it.

Then, independently:
- `push_quantities`: recomputes the affected SKUs' quantity for every outbox channel (sellable = ERP on
  hand − ERP reserved − units held by orders the ERP has not taken over + chosen dropship − buffer;
  `max_listed_quantity`, `end_when_at_or_below`) and enqueues only what changed; its asset event starts
  `hub_to_marketplaces`, which sends them. Skipped when no reservation changed.
- `hand_off_to_erp`: hands each ready (paid) order to the ERP once, key `channel:order_id`, and cancels
  there the handed orders the marketplace cancelled. The reservation ends when the hub has read the ERP's
  product row that includes the order. Skipped when erp.yaml has no `orders` section.
- `report_oversold`: lists order lines sold beyond what the hub held (two channels sold the last unit):
  0 is published everywhere by the quantity push; the lines are in `hub.stock_reservation` (oversold > 0),
  the ledger and `commerce-sync orders --oversold`.

**Runbook**
- *Import up for retry*: the marketplace throttled (429, `Retry-After` honoured) or is down; the cursor
  did not move, nothing is lost; the next run reads the same orders again (idempotent by order id).
- *Import failed, "configuration problem"*: the channel's connection or settings; fix and clear the task.
- *Order lines in quarantine* (dataset `order_line`, expectation `sku_resolvable`): the line's offer is not
  mapped to a SKU; run `hub_to_marketplaces` (it syncs the listings) or add the SKU to the ERP. The line
  reserves nothing until then; its order is not handed to the ERP.
- *hand_off_to_erp failed, "ERP refused"*: the order stays pending with the reason in
  `hub.sales_order.erp_error`; the other orders went through. Fix the cause (usually a SKU the ERP does
  not know) and clear the task. Clearing is always safe: the ERP books each key once.
- *Oversold lines*: decide per order (cancel on the marketplace, or source the unit); the cancellation
  releases the reservation on the next run.
- Every task is safe to clear and re-run: a replayed batch changes nothing and writes no new rows.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("* * * * *", timezone="UTC"), assets=[assets.HUB_WEBHOOK_DELIVERY]
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "marketplaces", "orders"],
    doc_md=__doc__,
)
def marketplaces_to_hub_orders() -> None:
    @task
    def list_channels() -> list[str]:
        from commerce_sync import registry
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return registry.channels_that(load_config().channels, "import_orders")

    @task(outlets=[assets.HUB_SALES_ORDER, assets.HUB_STOCK_RESERVATION])
    def import_orders(channel_id: str) -> dict[str, Any]:
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.orders.importer import import_channel

        with operator_errors(f"channel {channel_id!r}"):
            result = import_channel(hub_dsn(), load_config().channel(channel_id), run_context())
        for transfer_id in result.transfer_ids:
            report_transfer(transfer_id)
        return result.as_dict()

    @task(
        trigger_rule=TriggerRule.ALL_DONE,
        inlets=[assets.HUB_STOCK_RESERVATION],
        outlets=[assets.HUB_CHANNEL_OFFER, assets.HUB_OUTBOX],
    )
    def push_quantities(imports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from dataclasses import asdict

        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.orders.importer import push_quantities as push

        changed = [i for i in imports if i and (i.get("lines_reserved") or i.get("lines_released"))]
        if not changed:
            raise AirflowSkipException("no reservation changed: no quantity to push")
        with operator_errors("quantity push"):
            results = push(hub_dsn(), load_config(), run_context())
        for result in results:
            report_transfer(result.transfer_id)
        return [asdict(r) for r in results]

    @task(
        trigger_rule=TriggerRule.ALL_DONE,
        inlets=[assets.HUB_SALES_ORDER],
        outlets=[assets.ERP_ORDERS, assets.HUB_STOCK_RESERVATION],
    )
    def hand_off_to_erp() -> dict[str, Any]:
        from dataclasses import asdict

        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.orders.erp import hand_off, open_writer

        erp = load_config().erp
        if erp.orders is None:
            raise AirflowSkipException("erp.yaml has no 'orders' section: orders are not handed to the ERP")
        with operator_errors(f"ERP {erp.id!r} order hand-off"), open_writer(erp) as writer:
            result = hand_off(hub_dsn(), erp, writer, run_context())
        if result.transfer_id:
            report_transfer(result.transfer_id)
        if result.refused:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"ERP refused {len(result.refused)} order(s); the others were handed over. "
                + "; ".join(result.refused[:5])
                + " — fix the cause (see hub.sales_order.erp_error) and clear this task."
            )
        return asdict(result)

    imports = import_orders.expand(channel_id=list_channels())
    push_quantities(imports)
    imports >> hand_off_to_erp()


marketplaces_to_hub_orders()
