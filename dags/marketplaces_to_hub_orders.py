"""
### Marketplaces → hub → ERP: orders, stock reservations and the new quantity on every channel

At once when the **order doorbell** rings or a channel's webhook rings (an event on
`hub.webhook_delivery`, e.g. a WooCommerce order webhook), and every 5 minutes as a safety net (see
*Event path* below). Per kind, one mapped task per enabled channel whose kind imports orders, in
the kind's API pool on the `marketplace` queue (Allegro order events +
checkout forms, eBay Fulfillment `getOrders`, Amazon Orders API v2026-01-01 `searchOrders`, and any
registered kind that can): read the orders changed since the channel's stored cursor and store them,
their stock reservations and the new cursor in one transaction per up to 1,000 orders, reading the next
API page while a batch is stored (`hub.sales_order`, `hub.order_line`, `hub.stock_reservation`,
`hub.order_cursor`; a ledger transfer per transaction, row-level changes in `audit.change`, dataset
`order`). A sold unit is reserved as soon as the order is seen (it is
already gone from that marketplace); a cancelled order releases it.

Then, independently:
- `push_quantities`: recomputes the affected SKUs' quantity for every outbox channel (sellable = ERP on
  hand − ERP reserved − units held by orders the ERP has not taken over + chosen dropship − buffer;
  `max_listed_quantity`, `end_when_at_or_below`) and enqueues only what changed, then **sends them from
  the same task** to every marketplace and the shop, side by side (`publish_pending`: the sale does not
  wait for a second DAG run and its task start-ups, 10-15 s). That send is an accelerator, not the
  guarantee: a channel whose offer ids are due for a re-read (minutes for a large account), or whose send
  fails, is left, and `start_marketplace_publish` then emits the offer event that starts
  `hub_to_marketplaces`, which sends it with the API pools, retries and runbook (it is skipped when
  nothing was left). Rows another publisher holds are skipped (`FOR UPDATE SKIP LOCKED`), so a
  `hub_to_marketplaces` run at the same time is safe. The send runs outside the marketplace pools: at
  most one such task at a time (this DAG has `max_active_runs=1`) adds to a pool's calls.
  `COMMERCE_SYNC_INLINE_PUBLISH=0` turns it off (every sale's quantities then go through
  `hub_to_marketplaces`); a channel with more than 3 x `COMMERCE_SYNC_FAST_PATH_MAX_SKUS` pending rows is
  left to it too. Skipped when no reservation changed.
- `push_feed_quantities`: the same for the feed channels, beside it and off the sale's path (no asset
  event: the feed files are rewritten every 15 minutes by `hub_to_catalog_feeds`).
- `hand_off_to_erp`: hands each ready (paid) order to the ERP once, key `channel:order_id`, and cancels
  there the handed orders the marketplace cancelled. The reservation ends when the hub has read the ERP's
  product row that includes the order. Skipped when erp.yaml has no `orders` section.
- `report_oversold`: order lines sold beyond what the hub held (two channels sold the last unit) are
  alerted once through the notifiers (SMTP / webhook connections); 0 is published everywhere by the
  quantity push; the lines stay in `hub.stock_reservation` (oversold > 0), the ledger and
  `commerce-sync orders --oversold` until resolved.

**Event path (the order doorbell)**
`OrderDoorbellTrigger` (include/commerce_sync/triggers.py) runs in the triggerer as the `AssetWatcher`
`order_doorbell` of the asset `commerce_hub.marketplace_orders.news`. Every
`COMMERCE_SYNC_ORDER_POLL_SECONDS` (default 5 s) it reads `hub.order_cursor` and asks each enabled
channel whose kind has an order probe one small question: Allegro `GET /order/event-stats` (latest
event after the cursor?), eBay getOrders `lastmodifieddate:[<newest stored change + 1 ms>..]&limit=1`,
Amazon searchOrders with one result per page, but at most every ~6 minutes per channel (its searchOrders
budget is one call per ~3 minutes; `COMMERCE_SYNC_ORDER_PROBE_SECONDS=amazon=<s>` changes it). When a
channel has news it has not rung for, it sends one asset event naming the channels (payload
`channels`, `news`); the scheduler starts this DAG (events queued while a run is active fold into the
next run). It rings once per news (what it rang for is kept in the asset's state store, so a restarted
triggerer rings for sales made while it was down, and not again for what it already rang for). Kinds
without a probe (WooCommerce: webhooks) are not probed; a channel never imported (no cursor) rings once,
so its first import sets its starting point at once. A run the doorbell or a webhook started imports
only the channels its events name (the others' list tasks return nothing; Amazon's searchOrders budget
of one call per ~3 minutes is not spent on every Allegro sale, and the sale's push does not wait for
imports with no news); the 5-minute cron run, and a run started by hand or by an event naming no
channel, imports every channel.
The sale's tasks (`list_<kind>_channels`, `import_<kind>`, `push_quantities`, `start_marketplace_publish`)
are latency-critical
(priority weight 10, absolute): with the executor's slots taken they start before other DAGs' tasks. A
failing probe (marketplace down, 5xx, 429) is
logged in the triggerer's log and retried after a backoff; the trigger never yields an error event.

*Is it alive?* The triggerer's log shows `order doorbell: polling every 5 s; fired for ...` and
`order doorbell: probing channel <id> (<kind>) at most every N s` per channel at start, `order doorbell:
news on <channels>` per event, and `probe failed (...); asking again in N s` while a marketplace fails;
Admin → Triggers lists the running `OrderDoorbellTrigger`; Browse → Assets →
`commerce_hub.marketplace_orders.news` lists its events (`payload.channels`, `payload.news` with each
channel's marker); runs it started have run type `asset_triggered`; in the hub,
`SELECT * FROM pg_stat_activity WHERE application_name = 'commerce_sync order doorbell'` shows its
connection.

*What the cron covers* (every 5 minutes, relaxed from every minute now that the doorbell rings within a
poll): a triggerer that is down or a probe that keeps failing, Amazon between its spaced probes, a lost
webhook, news the doorbell rang for while an import failed (it rings once per news; the next import
retries it), and order changes a probe does not see (an order changed within the same millisecond as
the newest one stored). A cron at every minute would cost five times the runs of the safety net (each
several task start-ups of ~5 s) for no faster sale path on Allegro and eBay.

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
- *Deadline missed*: a run has not finished 5 minutes after it was queued: look for an import waiting
  in its marketplace pool (Admin > Pools) or a marketplace throttling (the task log shows 429s).
- Every task is safe to clear and re-run: a replayed batch changes nothing and writes no new rows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from commerce_sync import assets
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    LATENCY_CRITICAL,
    MARKETPLACE_QUEUE,
    MAX_PARALLEL_CHANNELS,
    START_DATE,
    hub_dsn,
    label_map_index,
    operator_errors,
    outbox_channels,
    per_kind,
    run_context,
    start_publish,
    sync_deadline,
)
from commerce_sync.triggers import order_doorbell_asset


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/5 * * * *", timezone="UTC"),
        assets=(assets.HUB_WEBHOOK_DELIVERY | order_doorbell_asset()),
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "marketplaces", "orders"],
    doc_md=__doc__,
    deadline=sync_deadline("marketplaces_to_hub_orders", __doc__, default=timedelta(minutes=5), what="order import"),
)
def marketplaces_to_hub_orders() -> None:
    @task(
        outlets=[assets.HUB_SALES_ORDER, assets.HUB_STOCK_RESERVATION],
        queue=MARKETPLACE_QUEUE,
        max_active_tis_per_dagrun=MAX_PARALLEL_CHANNELS,
        map_index_template="{{ channel_id }}",
        **LATENCY_CRITICAL,
    )
    def import_orders(channel_id: str) -> dict[str, Any]:
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.orders.importer import import_channel

        label_map_index(channel_id=channel_id)
        with operator_errors(f"channel {channel_id!r}"):
            result = import_channel(hub_dsn(), load_config().channel(channel_id), run_context())
        for transfer_id in result.transfer_ids:
            report_transfer(transfer_id)
        return result.as_dict()

    def push(imports: tuple[list[dict[str, Any]], ...], family: Literal["marketplace", "feed"]) -> dict[str, Any]:
        from dataclasses import asdict

        from commerce_sync.channels.publish import inline_publish_enabled, publish_inline
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.orders.importer import push_quantities

        results = [r for per_kind in imports for r in (per_kind or []) if r]
        if not any(r.get("lines_reserved") or r.get("lines_released") for r in results):
            raise AirflowSkipException("no reservation changed: no quantity to push")
        # The marketplace that sold (or took a cancelled order's units back) changed its own quantity.
        resend = [(r["channel"], sku) for r in results for sku in r.get("touched_skus", [])]
        with operator_errors("quantity push"):
            computed = push_quantities(
                hub_dsn(),
                load_config(),
                run_context(),
                resend=resend if family == "marketplace" else (),
                family=family,
            )
        for result in computed:
            report_transfer(result.transfer_id)
        answer: dict[str, Any] = {"computed": [asdict(r) for r in computed]}
        if family == "marketplace" and inline_publish_enabled():
            answer["inline"] = publish_inline(hub_dsn(), outbox_channels(load_config()), run_context())
        return answer

    @task(
        trigger_rule=TriggerRule.ALL_DONE,
        inlets=[assets.HUB_STOCK_RESERVATION],
        outlets=[assets.HUB_OUTBOX],
        **LATENCY_CRITICAL,
    )
    def push_quantities(*imports: list[dict[str, Any]]) -> dict[str, Any]:
        """The marketplaces and the shop (outbox channels): queued, then sent from here (see the DAG docs)."""
        from commerce_sync.lineage import report_output

        report_output(assets.HUB_CHANNEL_OFFER)  # lineage only: the asset event is start_marketplace_publish's
        return push(imports, "marketplace")

    @task(outlets=[assets.HUB_CHANNEL_OFFER], **LATENCY_CRITICAL)
    def start_marketplace_publish(pushed: Any) -> dict[str, str]:  # push_quantities' answer (an XComArg here)
        """The offer event that starts ``hub_to_marketplaces``, for what ``push_quantities`` did not send."""
        return start_publish([pushed])

    @task(trigger_rule=TriggerRule.ALL_DONE, inlets=[assets.HUB_STOCK_RESERVATION])
    def push_feed_quantities(*imports: list[dict[str, Any]]) -> dict[str, Any]:
        """The feed channels' offers (written to their files every 15 minutes): off the sale's path,
        no asset event (there is nothing to publish)."""
        from commerce_sync.lineage import report_output

        report_output(assets.HUB_CHANNEL_OFFER)
        return push(imports, "feed")

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
            raise AirflowFailException(
                f"ERP refused {len(result.refused)} order(s); the others were handed over. "
                + "; ".join(result.refused[:5])
                + " — fix the cause (see hub.sales_order.erp_error) and clear this task."
            )
        return asdict(result)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report_oversold() -> list[str]:
        from commerce_sync.orders.oversold import alert_oversold

        with operator_errors("oversold order lines"):
            return [line.describe() for line in alert_oversold(hub_dsn())]

    # The sale's path (list, import, push_quantities) starts first when executor slots are short.
    imports = per_kind(import_orders, "import", "import_orders", rung_only=True)
    start_marketplace_publish(push_quantities(*imports))
    push_feed_quantities(*imports)
    imports >> hand_off_to_erp()
    imports >> report_oversold()


marketplaces_to_hub_orders()
