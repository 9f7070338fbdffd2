"""Source DAG wiring: one supplier failing does not stop the merge, the merge feeds pricing."""

from __future__ import annotations

from pathlib import Path

import pytest

from commerce_sync import assets

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def _uris(objects: object) -> set[str]:
    return {getattr(item, "uri", "") for item in objects}  # type: ignore[attr-defined]


def test_supplier_merge_runs_after_every_mapped_load_whatever_their_outcome(dagbag) -> None:
    dag = dagbag.dags["suppliers_to_hub_offers"]
    merge = dag.get_task("merge_supplier_offers")
    assert merge.trigger_rule == "all_done"
    assert merge.upstream_task_ids == {"sync_supplier_feed"}
    assert assets.HUB_SKU_SUPPLY.uri in _uris(merge.outlets)
    load = dag.get_task("sync_supplier_feed")
    assert assets.HUB_SUPPLIER_PRICE_CHANGE.uri in _uris(load.outlets)
    # A failed supplier still fails the run: the watcher runs only then, downstream of everything.
    watcher = dag.get_task("report_failed_suppliers")
    assert watcher.trigger_rule == "one_failed"
    assert watcher.upstream_task_ids == {"sync_supplier_feed", "merge_supplier_offers"}
    assert {t.task_id for t in dag.leaves} == {"report_failed_suppliers"}


def test_erp_dag_merges_supply_after_the_products(dagbag) -> None:
    dag = dagbag.dags["erp_to_hub_products"]
    merge = dag.get_task("merge_supplier_offers")
    assert merge.upstream_task_ids == {"sync_erp_products"}
    assert assets.HUB_SKU_SUPPLY.uri in _uris(merge.outlets)
    assert "full_resync" in dag.params


def test_pricing_is_triggered_by_sku_supply(dagbag) -> None:
    condition = dagbag.dags["hub_to_channel_offers"].timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # any one of its inputs changing triggers pricing
    assert assets.HUB_SKU_SUPPLY.uri in _uris(condition.objects)


def test_erp_dag_runs_on_the_doorbell_or_the_cron(dagbag) -> None:
    from commerce_sync.triggers import ERP_NOTIFY_CHANNEL, PostgresChangeTrigger

    dag = dagbag.dags["erp_to_hub_products"]
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert timetable.timetable.expression == "*/30 * * * *"  # the safety net
    (asset,) = timetable.asset_condition.objects
    (watcher,) = asset.watchers
    trigger = watcher.trigger
    assert isinstance(trigger, PostgresChangeTrigger)
    _, kwargs = trigger.serialize()
    # A connection id, never a DSN; a poll within the 15–30 s the design asks for.
    assert kwargs["conn_id"] == "erp_db" and kwargs["channel"] == ERP_NOTIFY_CHANNEL
    assert 15 <= kwargs["poll_seconds"] <= 30
