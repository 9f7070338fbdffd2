"""
### Hub → channel offers: prices and stock per channel, large moves held for approval

Triggered whenever products, stock or supplier offers in the hub change. Loads the exchange rates
of `include/config/pricing.yaml` into `hub.exchange_rate`, then for each enabled channel in
`include/config/channels.yaml` computes the offers set-based in SQL (`commerce_sync.pricing`):
rule per product (override precedence sku > brand > category > channel default), cost converted to
the channel's currency (the chosen supplier's cost when it is dearer and its stock is listed), margin,
fee, commission, VAT on gross channels, rounding, max price, and a hard floor (cost x (1 + minimum
margin) + fee, with commission and VAT, never below the rule's MAP) that always wins. Stock = own −
reserved + chosen supplier's dropship stock − the channel's buffer, capped, never negative.
Only SKUs whose inputs changed are recomputed (a rule/config/rate change recomputes the channel).
Changed offers get a new version; for marketplace channels each changed field becomes an outbox row.
Marketplace and shop channels are priced by `compute_offers`; feed channels by `compute_feed_offers`,
which emits no event (the feeds are written every 15 minutes by `hub_to_catalog_feeds`, and a feed
channel's event would only start an empty marketplace run that a real change then waits for).

**Small changes are sent from here.** On the fast path (below), after pricing a channel, `compute_offers`
sends its pending outbox rows itself when there are at most 3 x `COMMERCE_SYNC_FAST_PATH_MAX_SKUS` (3,000)
of them and its offer ids need no re-read: a single ERP change does not wait for a `hub_to_marketplaces`
run to be scheduled and to start its tasks (10-15 s). `start_marketplace_publish` then emits the offer event that starts
`hub_to_marketplaces` only for what was left (a large change, offer ids due for a re-read, a failed send:
that DAG sends it with the API pools, retries and runbook); it is skipped when everything went out. The
inline send runs outside the marketplace pools and the `marketplace` queue (at most one task per channel
at a time). `COMMERCE_SYNC_INLINE_PUBLISH=0` leaves every change to `hub_to_marketplaces`.
Approved held moves (`publish_held_changes`) start `hub_to_marketplaces` by the same event.

**Guards**
- *Hub catalog suite* (`check_hub_catalog`, GX on PostgreSQL over `hub.product` + `hub.sku_supply`): its
  evidence (counts, sample SKUs, Data Docs) goes to the ledger; with `hub_catalog.max_failing_skus` set in
  `quality.yaml` an inconsistent catalog stops pricing before anything is computed or published.
  **Fast path**: when at most `COMMERCE_SYNC_FAST_PATH_MAX_SKUS` SKUs (default 1000; 0 = never) changed
  since the last pricing of every enabled channel, the task only counts them (indexed, no GX import) and
  returns `{"fast_path": true, "skus_changed": N}`: a single ERP price change goes from the ERP commit to
  the marketplaces without whole-catalog work. The whole suite then runs daily in `hub_maintenance`, and here
  for every larger change, the first pricing of a channel and `full_recompute` runs.
- *Circuit breakers* (`breakers` in channels.yaml): too many offers moving more than W %, or too many
  going to stock 0, fail the channel's task and write nothing.
- *Change cap* (`change_cap`): when a run would move too many offers by more than X %, those price
  moves are held. `approve_held_changes` then waits in **Required Actions** showing the count, the
  largest moves and the path of a CSV with every proposed change. **Approve** publishes them;
  **Reject** publishes none of them (the rest of the run already went out) and the same moves are not
  proposed again until their inputs change. Decision, user and time are in `audit.transfer`.

**Runbook**
- *Failed, "configuration problem"*: a rule or channel in the YAML is invalid; the message names file and key.
- *Failed, "circuit breaker tripped"*: the numbers are in `audit.transfer.details->'breakers'`. If the
  moves are real, trigger the DAG with Param `override_breakers` = true and an `override_reason`.
- *Failed, "no exchange rate"*: add the rate to `pricing.yaml` `exchange_rates` (or its CSV) and clear the task.
- *Approval waiting* (task state `awaiting_input`): answer it in the UI (Browse → Required Actions) or via
  `PATCH /api/v2/dags/hub_to_channel_offers/dagRuns/{run_id}/taskInstances/approve_held_changes/-1/hitlDetails`
  with `{"chosen_options": ["Approve"]}` (or `["Reject"]`). A Reject is recorded by the approval task
  itself; an Approve by `publish_held_changes` (safe to clear). Unanswered moves stay pending (24 h
  timeout) and are shown again by the next run. `commerce-sync explain --channel C --sku S` shows how a price was made.
- Re-running is safe: unchanged offers are recognised by hash; nothing is enqueued twice; a decided
  proposal is never applied twice. Param `full_recompute` recomputes every SKU.
- *Deadline missed*: pricing was still running 15 minutes (`COMMERCE_SYNC_DEADLINE_HUB_TO_CHANNEL_OFFERS`)
  after it was queued: usually an approval of held price moves is waiting (Required Actions), or the
  hub database is slow; nothing is published until it finishes.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from commerce_sync import assets, registry
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    LATENCY_CRITICAL,
    START_DATE,
    breaker_override,
    check_hub_catalog_task,
    hub_dsn,
    label_map_index,
    operator_errors,
    run_context,
    start_publish,
    sync_deadline,
)
from commerce_sync.pricing.approval import SUMMARY_TASK, HeldPriceMovesApproval
from commerce_sync.quality.breakers import OVERRIDE_PARAM, OVERRIDE_REASON_PARAM

APPROVAL_TASK = "approve_held_changes"


@dag(
    schedule=(assets.HUB_PRODUCT | assets.HUB_SUPPLIER_OFFER | assets.HUB_SKU_SUPPLY),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "pricing", "hub"],
    doc_md=__doc__,
    deadline=sync_deadline(
        "hub_to_channel_offers",
        __doc__,
        default=timedelta(minutes=15),
        what="channel pricing",
    ),
    params={
        OVERRIDE_PARAM: Param(False, type="boolean", description="Let tripped pricing breakers through for this run."),
        OVERRIDE_REASON_PARAM: Param("", type="string", description="Why the breakers may be overridden (ledger)."),
        "full_recompute": Param(False, type="boolean", description="Recompute every SKU, not only changed inputs."),
    },
)
def hub_to_channel_offers() -> None:
    @task(outlets=[assets.HUB_EXCHANGE_RATE], **LATENCY_CRITICAL)
    def load_exchange_rates() -> int:
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.pricing.rates import configured_rates, load_rates
        from commerce_sync.settings import data_dir

        with operator_errors("pricing.yaml exchange_rates"):
            rates = configured_rates(load_config().exchange_rates, data_dir())
            loaded = load_rates(hub_dsn(), rates, run_context())
        if loaded.transfer_id:
            report_transfer(loaded.transfer_id)
        return loaded.changed

    @task(inlets=[assets.HUB_PRODUCT, assets.HUB_SKU_SUPPLY], **LATENCY_CRITICAL)
    def check_hub_catalog() -> dict[str, Any]:
        """The merged catalog suite (GX on PostgreSQL): evidence in the ledger, refusal above the limit."""
        from commerce_sync.config import load_config
        from commerce_sync.quality.catalog import small_change
        from commerce_sync.settings import fast_path_max_skus

        if not get_current_context()["params"].get("full_recompute"):
            with operator_errors("hub catalog"):
                channels = [c.id for c in load_config().channels if c.enabled]
                limit = fast_path_max_skus()
                pending = small_change(hub_dsn(), channels, limit)
            if pending is not None:  # the fast path; the suite also runs daily in hub_maintenance
                return {"fast_path": True, "skus_changed": pending, "limit": limit}
        return check_hub_catalog_task()

    @task(**LATENCY_CRITICAL)
    def list_channels() -> list[str]:
        """The enabled marketplace and shop channels (outbox channels, sent by hub_to_marketplaces)."""
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return [c.id for c in load_config().channels if c.enabled and registry.get(c.kind).family != "feed"]

    @task
    def list_feed_channels() -> list[str]:
        """The enabled feed channels (files written by hub_to_catalog_feeds)."""
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return [c.id for c in load_config().channels if c.enabled and registry.get(c.kind).family == "feed"]

    def compute(channel_id: str) -> dict[str, Any]:
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_transfer
        from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers

        full = bool(get_current_context()["params"].get("full_recompute"))
        with operator_errors(f"channel {channel_id!r}"):
            config = load_config()
            channel = config.channel(channel_id)
            setup = PricingSetup(config.rules, tuple(config.rule_overrides))
            result = compute_channel_offers(
                hub_dsn(),
                channel,
                config.rule_for(channel),
                run_context(),
                setup=setup,
                override=breaker_override(),
                full=full,
            )
        report_transfer(result.transfer_id)
        return asdict(result)

    inputs = [assets.HUB_PRODUCT, assets.HUB_STOCK, assets.HUB_SKU_SUPPLY, assets.HUB_EXCHANGE_RATE]

    @task(
        inlets=inputs,
        outlets=[assets.HUB_OUTBOX],
        map_index_template="{{ channel_id }}",
        **LATENCY_CRITICAL,
    )
    def compute_offers(channel_id: str) -> dict[str, Any]:
        """A marketplace or shop channel: its changed fields go to the outbox, and a small change is sent
        from here at once (see the DAG docs)."""
        from commerce_sync.channels.publish import inline_publish_enabled, publish_inline
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_output

        label_map_index(channel_id=channel_id)
        report_output(assets.HUB_CHANNEL_OFFER)  # lineage only: the asset event is start_marketplace_publish's
        answer = compute(channel_id)
        catalog = get_current_context()["ti"].xcom_pull(task_ids="check_hub_catalog") or {}
        if catalog.get("fast_path") and inline_publish_enabled():  # a small change: send it from here
            answer["inline"] = publish_inline(hub_dsn(), [load_config().channel(channel_id)], run_context())
        return answer

    @task(outlets=[assets.HUB_CHANNEL_OFFER], trigger_rule=TriggerRule.ALL_DONE, **LATENCY_CRITICAL)
    def start_marketplace_publish(computed: Any) -> dict[str, str]:  # compute_offers' answers (an XComArg)
        """The offer event that starts ``hub_to_marketplaces``, for what ``compute_offers`` did not send."""
        return start_publish(computed)

    @task(inlets=inputs, map_index_template="{{ channel_id }}")
    def compute_feed_offers(channel_id: str) -> dict[str, Any]:
        """A feed channel: no asset event (the feeds are written on their own schedule, and an offer event
        would start a marketplace run with nothing to send, which a real change would then queue behind)."""
        from commerce_sync.lineage import report_output

        label_map_index(channel_id=channel_id)
        report_output(assets.HUB_CHANNEL_OFFER)
        return compute(channel_id)

    @task(task_id=SUMMARY_TASK, trigger_rule=TriggerRule.ALL_DONE)
    def summarise_held_changes() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from commerce_sync.pricing.proposals import pending_summary
        from commerce_sync.settings import data_dir

        summary = pending_summary(hub_dsn(), data_dir() / "proposals")
        if summary is None:
            raise AirflowSkipException("no price moves are held: nothing to approve")
        return {
            "proposal_ids": summary.proposal_ids,
            "subject": f"Approve {summary.items} held price moves ({', '.join(sorted(summary.by_channel))})",
            "body": summary.markdown(),
            "csv_path": summary.csv_path,
        }

    approve = HeldPriceMovesApproval(
        task_id=APPROVAL_TASK,
        subject=f"{{{{ ti.xcom_pull(task_ids='{SUMMARY_TASK}')['subject'] }}}}",
        body=f"{{{{ ti.xcom_pull(task_ids='{SUMMARY_TASK}')['body'] }}}}",
        response_timeout=timedelta(hours=24),
    )

    @task(outlets=[assets.HUB_CHANNEL_OFFER])
    def publish_held_changes() -> list[dict[str, Any]]:
        """Runs only on Approve (on Reject the approval task skips it and records the rejection itself).
        The approved moves go to the outbox; the offer event starts ``hub_to_marketplaces`` to send them."""
        from commerce_sync.pricing.approval import decide_from_context

        context = get_current_context()
        return decide_from_context(context, context["ti"].xcom_pull(task_ids=APPROVAL_TASK), only_rejection=False)

    rates = load_exchange_rates()
    catalog = check_hub_catalog()
    offers = compute_offers.expand(channel_id=list_channels())
    computed = [offers, compute_feed_offers.expand(channel_id=list_feed_channels())]
    start_marketplace_publish(offers)
    [rates, catalog] >> computed[0]  # side by side: one task start-up less on the critical path
    [rates, catalog] >> computed[1]
    summary = summarise_held_changes()
    computed >> summary >> approve >> publish_held_changes()


hub_to_channel_offers()
