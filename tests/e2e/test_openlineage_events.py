"""OpenLineage events of whole DAG runs: real datasets on every task, joined to the audit ledger.

Runs the sync DAGs once through Airflow (``DAG.test()``, as ``airflow dags test``) against the sandbox
with the OpenLineage file transport pointed at a temporary file, then reads the JSON-lines events and
checks that every task's COMPLETE event names the datasets it reads and writes (namespace + name), and
that every event of a transfer-writing task after START carries the ``commerce_sync_transfer`` facet
whose ids are rows of ``audit.transfer`` written by that very task run. About 25 s here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.db import connect
from commerce_sync.lineage import TRANSFER_FACET_KEY
from commerce_sync_devtools.demo import DAG_ORDER, run_dags
from tests.e2e.sandbox_world import sandbox_world

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SYNC_DAGS = tuple(d for d in DAG_ORDER if d != "hub_maintenance")

HUB = "postgres://hub_db:5432"
ERP = "postgres://erp_db:5432"
ALLEGRO = ("https://api.allegro.pl", "/sale/offers")
FEEDS = {
    ("file://commerce-sync-data", "/feeds/google_merchant.xml"),
    ("file://commerce-sync-data", "/feeds/meta_catalog.xml"),
    ("file://commerce-sync-data", "/feeds/ceneo.xml"),
}
EBAY = ("https://api.ebay.com", "/sell/inventory/v1/offer")
AMAZON = ("https://sellingpartnerapi-eu.amazon.com", "/listings/2021-08-01/items")
# The own shop: its asset's host is the channel's connection id (shop_sandbox), stable across environments.
SHOP = ("https://shop-sandbox", "/wp-json/wc/v3/products")
MARKETPLACE_KINDS = ("allegro", "ebay", "amazon", "woocommerce")


def hub(table: str) -> tuple[str, str]:
    return (HUB, f"commerce_hub.hub.{table}")


# (dag_id, task_id) -> (inputs, outputs) of every COMPLETE event of that task; None = per map index below.
EXPECTED: dict[tuple[str, str], tuple[set[tuple[str, str]], set[tuple[str, str]]] | None] = {
    ("erp_to_hub_products", "sync_erp_products"): (
        {(ERP, "commerce_erp.erp.products")},
        {hub("product"), hub("stock"), hub("quarantine")},
    ),
    ("erp_to_hub_products", "merge_supplier_offers"): (
        {hub("product"), hub("supplier_offer")},
        {hub("sku_supply")},
    ),
    ("suppliers_to_hub_offers", "list_suppliers"): (set(), set()),
    ("suppliers_to_hub_offers", "sync_supplier_feed"): None,
    ("suppliers_to_hub_offers", "merge_supplier_offers"): (
        {hub("product"), hub("supplier_offer")},
        {hub("sku_supply")},
    ),
    ("hub_to_channel_offers", "load_exchange_rates"): (set(), {hub("exchange_rate")}),
    ("hub_to_channel_offers", "check_hub_catalog"): ({hub("product"), hub("sku_supply")}, set()),
    ("hub_to_channel_offers", "list_channels"): (set(), set()),
    # Skipped when no price move is held (it still completes); it only reads the pending proposals.
    ("hub_to_channel_offers", "summarise_held_changes"): (set(), set()),
    ("hub_to_channel_offers", "compute_offers"): (
        {hub("product"), hub("stock"), hub("sku_supply"), hub("exchange_rate")},
        {hub("channel_offer"), hub("outbox")},
    ),
    # The offer event that starts hub_to_marketplaces for what compute_offers did not send inline (all of
    # a first sync); its outlet is that asset.
    ("hub_to_channel_offers", "start_marketplace_publish"): (set(), {hub("channel_offer")}),
    # Feed channels: the same table, reported at run time (no asset event: see the DAG's docs).
    ("hub_to_channel_offers", "list_feed_channels"): (set(), set()),
    ("hub_to_channel_offers", "compute_feed_offers"): (
        {hub("product"), hub("stock"), hub("sku_supply"), hub("exchange_rate")},
        {hub("channel_offer")},
    ),
    # One list/publish (and list/reconcile) task pair per marketplace kind, each in the kind's pool.
    **{("hub_to_marketplaces", f"list_{kind}_channels"): (set(), set()) for kind in MARKETPLACE_KINDS},
    **{("hub_to_marketplaces", f"publish_{kind}"): None for kind in MARKETPLACE_KINDS},
    ("hub_to_catalog_feeds", "list_channels"): (set(), set()),
    ("hub_to_catalog_feeds", "write_feed"): None,
    **{("marketplaces_to_hub_reconciliation", f"list_{kind}_channels"): (set(), set()) for kind in MARKETPLACE_KINDS},
    **{("marketplaces_to_hub_reconciliation", f"reconcile_{kind}"): None for kind in MARKETPLACE_KINDS},
}
SUPPLIER_FEEDS = {("https://supplier_acme", "/feeds/acme.xml"), ("https://supplier_bravo", "/feeds/bravo.csv")}
TRANSFER_TASKS = {
    ("erp_to_hub_products", "sync_erp_products"),
    ("suppliers_to_hub_offers", "sync_supplier_feed"),
    ("erp_to_hub_products", "merge_supplier_offers"),
    ("suppliers_to_hub_offers", "merge_supplier_offers"),
    ("hub_to_channel_offers", "load_exchange_rates"),
    ("hub_to_channel_offers", "check_hub_catalog"),
    ("hub_to_channel_offers", "compute_offers"),
    ("hub_to_channel_offers", "compute_feed_offers"),
    *(("hub_to_marketplaces", f"publish_{kind}") for kind in MARKETPLACE_KINDS),
    ("hub_to_catalog_feeds", "write_feed"),
    *(("marketplaces_to_hub_reconciliation", f"reconcile_{kind}") for kind in MARKETPLACE_KINDS),
}


@pytest.fixture(scope="module")
def lineage_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the sync DAGs once with their own hub/ERP databases, sandbox and OpenLineage file."""
    tmp = tmp_path_factory.mktemp("openlineage")
    events_file = tmp / "openlineage.jsonl"
    lineage_env = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "commerce_sync",
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": "commerce_sync.lineage.CommerceSyncTaskExtractor",
        "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": "commerce_sync.lineage.transfer_run_facets",
    }
    with sandbox_world(tmp, lineage_env) as world:
        outcome = run_dags(SYNC_DAGS, tmp / "logs")
        for dag_id, ok, _, log_file in outcome:
            assert ok, f"{dag_id} failed:\n" + log_file.read_text(errors="replace")[-4000:]
        events = [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines() if line]
        with connect(world.hub) as conn:
            cur = conn.execute(
                "SELECT transfer_id::text, run_id, dag_id, task_id, map_index, status FROM audit.transfer"
            )
            ledger = {row[0]: row[1:] for row in cur}
        yield {"events": events, "ledger": ledger}


def _task_events(events: list[dict[str, Any]], event_type: str | None = None) -> dict[tuple[str, str], list[dict]]:
    by_task: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for event in events:
        airflow = event["run"]["facets"].get("airflow")
        if not airflow or "task" not in airflow:  # DAG-level events
            continue
        if event_type and event["eventType"] != event_type:
            continue
        by_task[(airflow["dag"]["dag_id"], airflow["task"]["task_id"])].append(event)
    return by_task


def _names(datasets: list[dict[str, Any]] | None) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in datasets or []}


def test_every_task_complete_event_names_its_datasets(lineage_run: dict[str, Any]) -> None:
    completes = _task_events(lineage_run["events"], "COMPLETE")
    assert set(completes) == set(EXPECTED), "one COMPLETE per task of the sync DAGs"
    for key, expected in EXPECTED.items():
        for event in completes[key]:
            got = (_names(event.get("inputs")), _names(event.get("outputs")))
            if expected is not None:
                assert got == expected, key
            elif key[1] == "sync_supplier_feed":  # one supplier feed per mapped task, known only at run time
                assert len(got[0]) == 1 and got[0] <= SUPPLIER_FEEDS, (key, got)
                assert got[1] == {hub("supplier_offer"), hub("quarantine"), hub("supplier_price_change")}, (key, got)
            elif key[1].startswith("reconcile_"):  # one marketplace read back per mapped task
                assert len(got[0] & {ALLEGRO, EBAY, AMAZON, SHOP}) == 1, (key, got)
                assert got[0] - {ALLEGRO, EBAY, AMAZON, SHOP} == {hub("outbox")}, (key, got)
                assert got[1] == {hub("channel_reconciliation"), hub("outbox")}, (key, got)
            elif key[1] == "write_feed":  # one feed file per mapped writer: the file it wrote
                assert got[0] == {hub("channel_offer"), hub("product")}, (key, got)
                assert len(got[1]) == 1 and got[1] <= FEEDS, (key, got)
            else:  # one marketplace per mapped publisher
                assert got[0] == {hub("outbox"), hub("channel_offer")}, (key, got)
                assert len(got[1] & {ALLEGRO, EBAY, AMAZON, SHOP}) == 1, (key, got)
                assert got[1] - {ALLEGRO, EBAY, AMAZON, SHOP} == {hub("outbox"), hub("channel_listing")}, (key, got)
    feeds = [next(iter(_names(e["inputs"]))) for e in completes[("suppliers_to_hub_offers", "sync_supplier_feed")]]
    assert sorted(feeds) == sorted(SUPPLIER_FEEDS), "each supplier's task names its own feed"
    marketplaces = [
        _names(e["outputs"]) & {ALLEGRO, EBAY, AMAZON, SHOP}
        for kind in MARKETPLACE_KINDS
        for e in completes[("hub_to_marketplaces", f"publish_{kind}")]
    ]
    assert sorted(map(sorted, marketplaces)) == sorted([[ALLEGRO], [AMAZON], [EBAY], [SHOP]]), (
        "each marketplace publisher names its channel"
    )
    files = [_names(e["outputs"]) for e in completes[("hub_to_catalog_feeds", "write_feed")]]
    assert sorted(map(sorted, files)) == sorted([[f] for f in FEEDS]), "each feed writer names the file it wrote"
    read_back = [
        _names(e["inputs"]) & {ALLEGRO, EBAY, AMAZON, SHOP}
        for kind in MARKETPLACE_KINDS
        for e in completes[("marketplaces_to_hub_reconciliation", f"reconcile_{kind}")]
    ]
    assert sorted(map(sorted, read_back)) == sorted([[ALLEGRO], [AMAZON], [EBAY], [SHOP]]), (
        "each reconciler names its channel"
    )


def test_transfer_writing_events_carry_ledger_transfer_ids(lineage_run: dict[str, Any]) -> None:
    ledger = lineage_run["ledger"]
    seen: set[str] = set()
    for key, events in _task_events(lineage_run["events"]).items():
        for event in events:
            facet = event["run"]["facets"].get(TRANSFER_FACET_KEY)
            if key not in TRANSFER_TASKS or event["eventType"] == "START":
                # START is emitted before the task body runs, when no transfer exists yet.
                assert facet is None, (key, event["eventType"])
                continue
            assert facet is not None, (key, event["eventType"])
            assert facet["_schemaURL"].endswith("#CommerceSyncTransferRunFacet")
            task = event["run"]["facets"]["airflow"]["taskInstance"]
            run_id = event["run"]["facets"]["airflow"]["dagRun"]["run_id"]
            for transfer_id in facet["transfer_ids"]:
                assert transfer_id in ledger, f"{key}: {transfer_id} not in audit.transfer"
                assert ledger[transfer_id][:3] == (run_id, *key), "the id belongs to this very task run"
                assert ledger[transfer_id][3] == task.get("map_index", -1)
                seen.add(transfer_id)
    assert seen == set(ledger), "every ledger row of the run is named by some OpenLineage event"
