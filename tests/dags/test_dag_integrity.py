"""DAG import, structure and policy: every DAG parses, is documented, tagged and retried."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_every_file_defines_its_dag(dagbag) -> None:
    assert DAG_FILES, "no DAG files found"
    assert sorted(dagbag.dag_ids) == sorted(p.stem for p in DAG_FILES)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.stem)
def test_dag_policy(dagbag, dag_file: Path) -> None:
    dag = dagbag.dags.get(dag_file.stem)
    assert dag is not None
    assert dag.tags, "every DAG needs tags"
    assert "commerce-sync" in dag.tags
    assert dag.doc_md and "Runbook" in dag.doc_md, "doc_md must carry the operator runbook"
    assert dag.max_active_runs == 1
    assert not dag.catchup
    for task in dag.tasks:
        assert task.retries >= 1, f"{task.task_id} must retry transient faults"
        assert task.retry_exponential_backoff, f"{task.task_id} must back off exponentially"
        assert task.owner == "data-engineering"
        assert task.on_failure_callback, f"{task.task_id} must notify the operators when it fails for good"


MARKETPLACE_TASKS = {"hub_to_marketplaces": "publish", "marketplaces_to_hub_reconciliation": "reconcile"}


@pytest.mark.parametrize("dag_id", sorted(MARKETPLACE_TASKS))
def test_marketplace_calls_run_per_kind_in_its_pool_on_the_marketplace_queue(dagbag, dag_id: str) -> None:
    from commerce_sync import registry
    from commerce_sync.airflow_glue import HUB_QUEUE, MARKETPLACE_QUEUE

    dag = dagbag.dags[dag_id]
    capability = "publish" if MARKETPLACE_TASKS[dag_id] == "publish" else "read_back"
    for kind in registry.kinds("marketplace", capability):
        task = dag.get_task(f"{MARKETPLACE_TASKS[dag_id]}_{kind.name}")
        assert (task.pool, task.queue) == (kind.pool, MARKETPLACE_QUEUE), task.task_id
        assert task.max_active_tis_per_dagrun and task.map_index_template == "{{ channel_id }}"
        assert task.upstream_task_ids == {f"list_{kind.name}_channels"}, task.task_id
        assert dag.get_task(f"list_{kind.name}_channels").queue == HUB_QUEUE
    on_marketplace = {t.task_id for t in dag.tasks if t.queue == MARKETPLACE_QUEUE}
    assert on_marketplace == {t.task_id for t in dag.tasks if t.task_id.startswith(MARKETPLACE_TASKS[dag_id] + "_")}


CRITICAL_PATH = {
    "erp_to_hub_products": {"sync_erp_products"},
    "hub_to_channel_offers": {
        "load_exchange_rates",
        "check_hub_catalog",
        "list_channels",
        "compute_offers",
        "start_marketplace_publish",
    },
    "hub_to_marketplaces": {"publish_*"},
    "marketplaces_to_hub_reconciliation": set(),  # hourly: off the path, its list tasks too
}


@pytest.mark.parametrize("dag_id", sorted(CRITICAL_PATH))
def test_the_tasks_between_a_change_and_the_marketplaces_start_first(dagbag, dag_id: str) -> None:
    """When the executor's slots are taken, the scheduler starts the latency-critical tasks first."""
    dag = dagbag.dags[dag_id]
    from commerce_sync import registry

    expected = set(CRITICAL_PATH[dag_id])
    if "publish_*" in expected:
        kinds = [k.name for k in registry.kinds("marketplace", "publish")]
        expected = expected - {"publish_*"} | {f"publish_{k}" for k in kinds} | {f"list_{k}_channels" for k in kinds}
    critical = {t.task_id for t in dag.tasks if t.priority_weight == 10 and "absolute" in str(t.weight_rule).lower()}
    assert critical == expected


def test_feed_channels_pricing_does_not_start_a_marketplace_run(dagbag) -> None:
    """Only the outbox channels' pricing emits the offer event hub_to_marketplaces is scheduled on."""
    dag = dagbag.dags["hub_to_channel_offers"]
    names = lambda task: {a.name for a in task.outlets}  # noqa: E731
    # compute_offers sends a small change itself; start_marketplace_publish starts hub_to_marketplaces for
    # what it left, and approved held moves start it too.
    assert names(dag.get_task("compute_offers")) == {"commerce_hub.hub.outbox"}
    assert names(dag.get_task("start_marketplace_publish")) == {"commerce_hub.hub.channel_offer"}
    assert dag.get_task("start_marketplace_publish").upstream_task_ids == {"compute_offers"}
    assert names(dag.get_task("publish_held_changes")) == {"commerce_hub.hub.channel_offer"}
    assert names(dag.get_task("compute_feed_offers")) == set()
    orders = dagbag.dags["marketplaces_to_hub_orders"]
    # The sale's quantities are sent by push_quantities itself; hub_to_marketplaces starts only for what it left.
    assert names(orders.get_task("push_quantities")) == {"commerce_hub.hub.outbox"}
    assert names(orders.get_task("start_marketplace_publish")) == {"commerce_hub.hub.channel_offer"}
    assert orders.get_task("start_marketplace_publish").upstream_task_ids == {"push_quantities"}
    assert names(orders.get_task("push_feed_quantities")) == set()
    condition = dagbag.dags["hub_to_marketplaces"].timetable.asset_condition
    assert {a.name for a in condition.objects} == {"commerce_hub.hub.channel_offer"}


def test_every_sync_dag_has_a_deadline_alert(dagbag) -> None:
    from commerce_sync_devtools.demo import DAG_ORDER

    for dag_id in DAG_ORDER:
        deadlines = dagbag.dags[dag_id].deadline or []
        if dag_id == "hub_maintenance":
            assert not deadlines
            continue
        (alert,) = deadlines
        assert alert.callback.path == "commerce_sync.notify.deadline_missed", dag_id
        assert alert.callback.kwargs["runbook"].startswith("*Deadline missed*"), dag_id


def test_task_ids_are_verb_noun(dagbag) -> None:
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert "_" in task.task_id, f"{dag.dag_id}.{task.task_id} should be verb_noun"


def test_parsing_does_no_io(tmp_path: Path) -> None:
    """Import every DAG file with network, database and config-file access forbidden."""
    script = textwrap.dedent(
        f"""
        import builtins, socket, sys
        import psycopg

        def refuse(*args, **kwargs):
            raise RuntimeError("I/O at DAG parse time")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        psycopg.connect = refuse
        real_open = builtins.open
        def guarded_open(file, *args, **kwargs):
            name = str(file)
            if name.startswith(({str(REPO / "include" / "config")!r}, {str(REPO / ".data")!r})):
                raise RuntimeError(f"file read at DAG parse time: {{name}}")
            return real_open(file, *args, **kwargs)
        builtins.open = guarded_open

        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS_DIR)!r})
        if bag.import_errors:
            print(bag.import_errors)
            sys.exit(1)
        print(len(bag.dags))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(len(DAG_FILES))
