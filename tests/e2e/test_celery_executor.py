"""The whole sync on the CeleryExecutor: two workers, a worker killed mid-run, pools, deadlines, alerts.

One Airflow for the module (``commerce_sync_devtools.celery_stack``): api-server, scheduler,
dag-processor, triggerer and two Celery workers (``worker-1``, ``worker-2``, 2 slots each, both queues)
on loopback, Redis as the broker (``CELERY_TEST_BROKER_URL``, default database 5 of the local Redis),
a throwaway PostgreSQL metadata database, the sandbox (60 products) with its simulators in this process,
and a local SMTP server and webhook receiver as the notification channels. The tests run in order on
that one deployment:

1. the whole sync succeeds task by task, tasks ran on both workers (task instance hostnames), and the
   ERP run's deadline (set to 1 s here) reached mail and webhook through the triggerer with DAG, run
   and runbook line;
2. a worker is killed (SIGKILL of its process group) while it publishes to Allegro: the scheduler
   notices the lost heartbeat, the task is retried on the other worker and the hub ends as after a
   clean run (nothing pending, every marketplace shows what the hub published, read-back finds 0
   differences, the ledger verifies);
3. the Allegro pool (1 slot) keeps the publish and the read-back of Allegro from calling it at the same
   time (the simulator counts concurrent requests) while eBay's tasks run alongside;
4. a supplier feed that is not XML fails its task, and the failure notification names the DAG, run,
   task and the runbook line that applies.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import urllib.error
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from commerce_sync.db import connect, drop_database
from commerce_sync_devtools.celery_stack import CeleryStack, Worker, celery_env
from commerce_sync_sandbox.erp import set_purchase_price
from tests.conftest import new_database
from tests.e2e.sandbox_world import sandbox_world
from tests.e2e.test_pricing_approval import Api
from tests.receivers import notification_connections, smtp_server, webhook_server

# ~12 minutes on 2 cores: in `make test-slow`, not in `make test` (its 25-minute budget).
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
N = 60
# Unique per run, like the broker key prefix below: another checkout may run this test on the same
# machine and Redis at the same time (same worker names would refuse to start, or steal tasks).
TAG = secrets.token_hex(3)
WORKERS = (f"worker-1-{TAG}", f"worker-2-{TAG}")
SYNC = ("erp_to_hub_products", "suppliers_to_hub_offers", "hub_to_channel_offers", "hub_to_marketplaces")
FEEDS = "hub_to_catalog_feeds"
RECONCILE = "marketplaces_to_hub_reconciliation"
MARKETPLACES = ("allegro", "ebay", "amazon", "shop")
"""The marketplace channels of the shipped config; their kinds (publish task, pool) below."""
KINDS = {"allegro": "allegro", "ebay": "ebay", "amazon": "amazon", "shop": "woocommerce"}
DONE = {"success", "failed"}


class Deployment:
    """The running stack, its REST API and the sandbox, with the waits the tests share."""

    def __init__(self, stack: CeleryStack, api: Api, world: Any, mails: Any, hooks: Any) -> None:
        self.stack, self.api, self.world, self.mails, self.hooks = stack, api, world, mails, hooks

    def wait(self, what: str, probe: Any, timeout: float = 240.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.stack.check_alive()
            try:
                value = probe()
            except (urllib.error.HTTPError, TimeoutError) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code != 404:
                    raise
                value = None
            if value:
                return value
            time.sleep(1)
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in self.stack.log_dir.glob("*.log")
        )
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")

    def unpause(self, *dag_ids: str, scheduled: bool = True) -> None:
        """Unpause; with ``scheduled``, wait until each has a run (a cron DAG starts its latest scheduled one)."""
        for dag_id in dag_ids:
            self.api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        for dag_id in dag_ids if scheduled else ():
            self.wait(f"a run of {dag_id}", lambda d=dag_id: self.runs(d), 120)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def runs(self, dag_id: str = "~", **query: str) -> list[dict[str, Any]]:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return list(self.api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&{params}")["dag_runs"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def quiet(self, checks: int = 4) -> None:
        """Wait until no run is queued or running ``checks`` polls in a row (asset-triggered runs follow)."""
        calm = 0

        def probe() -> bool:
            nonlocal calm
            busy = [r for r in self.runs() if r["state"] in ("queued", "running")]
            calm = 0 if busy else calm + 1
            return calm >= checks

        self.wait("every DAG run to finish", probe, 420)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100"
        return list(self.api.call("GET", path)["task_instances"])

    def all_task_instances(self, since: str | None = None) -> list[dict[str, Any]]:
        found = []
        for run in self.runs():
            if since is None or (run["queued_at"] or "") >= since:
                found += [
                    {**ti, "dag_run_state": run["state"]}
                    for ti in self.task_instances(run["dag_id"], run["dag_run_id"])
                ]
        return found


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if not (VENV_BIN / "airflow").exists():
        pytest.skip(f"needs the Airflow env ({VENV_BIN / 'airflow'} missing): run `make test` once to create it")
    broker = os.environ.get("CELERY_TEST_BROKER_URL", "redis://127.0.0.1:6379/5")
    import redis

    prefix = f"cs-test-{TAG}:"
    try:
        redis_client = redis.Redis.from_url(broker, socket_connect_timeout=3)
        redis_client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs Redis as the Celery broker at {broker}: {exc}")
    tmp = tmp_path_factory.mktemp("celery")
    home, plugins = tmp / "airflow", tmp / "plugins"
    home.mkdir()
    plugins.mkdir()
    metadata = new_database(prefix="cs_test_celery_af")
    metadata_url = "postgresql+psycopg2://" + metadata.split("://", 1)[1]
    port = int(os.environ.get("AIRFLOW_TEST_PORT", "0")) or _free_port()
    extra = {
        "COMMERCE_SYNC_DEADLINE_ERP_TO_HUB_PRODUCTS": "1s",  # every ERP run is late: the alert must arrive
        "COMMERCE_SYNC_RETRY_DELAY_SECONDS": "2",
        # Every publish through hub_to_marketplaces (its pools, the worker killed mid-publish), not inline
        # from pricing: what this module tests is the Celery deployment of that DAG.
        "COMMERCE_SYNC_INLINE_PUBLISH": "0",
    }
    with (
        smtp_server() as (mails, smtp_port),
        webhook_server() as (hooks, hook_port),
        sandbox_world(
            tmp, {**extra, **notification_connections(smtp_port, hook_port)}, n=N, needs_airflow=False
        ) as world,
    ):
        env = {
            **os.environ,
            **celery_env(metadata_url=metadata_url, broker_url=broker, api_port=port),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # A killed worker's task is noticed after 12 s without a heartbeat (default 300 s).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "12",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix,
        }
        _airflow(env, "db", "migrate")
        pools = {"allegro_api": 1, "ebay_api": 2, "amazon_api": 1}
        (tmp / "pools.json").write_text(
            json.dumps({name: {"slots": slots, "description": name} for name, slots in pools.items()})
        )
        _airflow(env, "pools", "import", str(tmp / "pools.json"))
        stack = CeleryStack(env, tmp / "logs", tuple(Worker(name, concurrency=2) for name in WORKERS))
        stack.start()
        try:
            stack.wait_ready(240)
            passwords = home / "simple_auth_manager_passwords.json.generated"
            api = Api(stack.api_url(), json.loads(passwords.read_text())["admin"])
            deployment = Deployment(stack, api, world, mails, hooks)
            for dag_id in (*SYNC, FEEDS, RECONCILE):
                deployment.wait(f"{dag_id} to be parsed", lambda d=dag_id: api.call("GET", f"/api/v2/dags/{d}"), 180)
            yield deployment
        finally:
            stack.stop()
            drop_database(metadata)
            for key in redis_client.scan_iter(match=prefix + "*"):
                redis_client.delete(key)
            shutil.rmtree(home / "logs", ignore_errors=True)


def _free_port() -> int:
    from tests.receivers import free_port

    return free_port()


def _airflow(env: dict[str, str], *args: str) -> None:
    import subprocess

    result = subprocess.run(["airflow", *args], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _hub_is_clean(d: Deployment) -> None:
    """The state a clean run leaves: nothing pending or failed, marketplaces show the hub's values, 0 differences."""
    with connect(d.world.hub) as conn:
        outbox = dict(conn.execute("SELECT status, count(*) FROM hub.outbox GROUP BY status").fetchall())
        failed = conn.execute("SELECT count(*) FROM audit.transfer WHERE status = 'failed'").fetchone()
        recon = conn.execute(
            "SELECT DISTINCT ON (source) source, (details->>'differences')::int FROM audit.transfer "
            "WHERE dataset = 'channel_reconciliation' ORDER BY source, seq DESC"
        ).fetchall()
        allegro = dict(conn.execute("SELECT sku, price FROM hub.channel_offer WHERE channel = 'allegro'").fetchall())
    assert outbox.get("sent", 0) > 0 and not outbox.get("pending") and not outbox.get("failed"), outbox
    assert failed == (0,)
    assert sorted(recon) == sorted((f"channel:{m}", 0) for m in MARKETPLACES), recon
    listed = d.world.server.simulator.list_offers(0, 1000)["offers"]
    shown = {o["external"]["id"]: Decimal(str(o["sellingMode"]["price"]["amount"])) for o in listed}
    assert allegro and {sku: shown.get(sku) for sku in allegro} == allegro


def test_the_whole_sync_runs_on_both_workers_and_a_late_run_alerts(deployment: Deployment) -> None:
    d = deployment
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    # Unpausing a cron DAG starts its latest scheduled run. A paused DAG does not collect asset events:
    # pricing is unpaused and triggered once both sources are loaded (it prices what changed since its
    # last run), and its asset event starts publishing and the feeds, once each; the read-back last.
    d.unpause("erp_to_hub_products", "suppliers_to_hub_offers")
    d.quiet()
    (erp,) = [r["dag_run_id"] for r in d.runs("erp_to_hub_products")]
    d.unpause("hub_to_channel_offers", "hub_to_marketplaces", FEEDS, scheduled=False)
    d.trigger("hub_to_channel_offers")
    d.quiet()
    d.unpause(RECONCILE)
    d.quiet()
    # The suppliers' */15 schedule would start a whole new cycle in the middle of the next tests.
    d.api.call("PATCH", "/api/v2/dags/suppliers_to_hub_offers", {"is_paused": True})
    tis = d.all_task_instances(since=started)
    bad = [
        (t["dag_id"], t["task_id"], t["map_index"], t["state"]) for t in tis if t["state"] not in ("success", "skipped")
    ]
    assert not bad, bad
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["dag_id"] for t in ran} >= {*SYNC, FEEDS, RECONCILE}
    assert {f"publish_{KINDS[m]}" for m in MARKETPLACES} <= {t["task_id"] for t in ran}
    assert {t["hostname"] for t in ran} == set(WORKERS), "tasks ran on both workers, and only there"
    publishers = [t for t in ran if t["task_id"].startswith("publish_")]
    assert {t["rendered_map_index"] for t in publishers} == set(MARKETPLACES), "mapped instances carry channel names"
    assert {t["pool"] for t in publishers} == {f"{KINDS[m]}_api" for m in MARKETPLACES}
    assert {t["queue"] for t in publishers} == {"marketplace"}
    _hub_is_clean(d)

    late = d.mails.wait_for(lambda m: "erp_to_hub_products missed its deadline" in m["subject"], 120)
    assert f"Run: {erp}" in late["body"]
    assert "Runbook: *Deadline missed*: the ERP sync was still running" in late["body"]
    hook = d.hooks.wait_for(lambda h: h["subject"] == late["subject"] and h["run_id"] == erp, 60)
    assert hook["dag_id"] == "erp_to_hub_products" and hook["runbook"].startswith("*Deadline missed*")


def test_a_worker_killed_mid_publish_is_retried_on_the_other(deployment: Deployment) -> None:
    d = deployment
    for i in range(1, 6):  # new purchase prices: every marketplace gets work
        set_purchase_price(d.world.erp, f"SKU-{i:06d}", Decimal("400.00") + i)
    d.world.server.simulator.faults.arm(slow=2.0)  # each Allegro request takes 2 s: the publish is long
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    d.trigger("erp_to_hub_products")

    def publishing() -> dict[str, Any] | None:
        for run in d.runs("hub_to_marketplaces"):
            if (run["queued_at"] or "") >= started:
                for ti in d.task_instances("hub_to_marketplaces", run["dag_run_id"]):
                    if ti["task_id"] == "publish_allegro" and ti["state"] == "running" and ti["hostname"]:
                        return ti
        return None

    victim_ti = d.wait("publish_allegro to run", publishing, 300)
    time.sleep(1)  # inside the task: requests on their way
    victim = victim_ti["hostname"]
    d.stack.kill(victim)
    d.world.server.simulator.faults.clear()
    d.quiet()
    survivor = next(w for w in WORKERS if w != victim)
    retried = d.task_instances("hub_to_marketplaces", victim_ti["dag_run_id"])
    publish = next(t for t in retried if t["task_id"] == "publish_allegro")
    assert publish["state"] == "success" and publish["try_number"] >= 2, publish
    assert publish["hostname"] == survivor
    d.trigger(RECONCILE)
    d.quiet()
    tis = d.all_task_instances(since=started)
    bad = [(t["dag_id"], t["task_id"], t["state"]) for t in tis if t["state"] not in ("success", "skipped")]
    assert not bad, bad
    _hub_is_clean(d)
    with connect(d.world.hub) as conn:
        prices = dict(
            conn.execute(
                "SELECT sku, purchase_price FROM hub.product WHERE sku = ANY(%s)",
                ([f"SKU-{i:06d}" for i in range(1, 6)],),
            ).fetchall()
        )
    assert prices == {f"SKU-{i:06d}": Decimal("400.00") + i for i in range(1, 6)}
    d.stack.start([victim])  # back to two workers for the next tests
    d.stack.wait_ready(120)


def test_the_pool_caps_one_marketplace_while_another_proceeds(deployment: Deployment) -> None:
    d = deployment
    allegro, ebay = d.world.server.request_stats("allegro"), d.world.server.request_stats("ebay")
    d.world.server.simulator.faults.arm(slow=0.5)
    d.world.server.ebay.faults.arm(slow=0.5)
    allegro.reset()
    ebay.reset()
    try:
        # Publishing and read-back both call Allegro (and eBay); started together they compete for the pools.
        publish = d.trigger("hub_to_marketplaces")
        recon = d.trigger(RECONCILE)
        d.quiet()
    finally:
        d.world.server.simulator.faults.clear()
        d.world.server.ebay.faults.clear()
    tis = {
        (t["dag_id"], t["task_id"]): t
        for dag_id, run in (("hub_to_marketplaces", publish), (RECONCILE, recon))
        for t in d.task_instances(dag_id, run)
    }
    assert all(t["state"] == "success" for t in tis.values()), tis
    a1, a2 = tis[("hub_to_marketplaces", "publish_allegro")], tis[(RECONCILE, "reconcile_allegro")]
    assert a1["end_date"] <= a2["start_date"] or a2["end_date"] <= a1["start_date"], "the Allegro tasks overlapped"
    assert allegro.total > 2 and allegro.max_in_flight == 1, (allegro.total, allegro.max_in_flight)
    # eBay (its own pool) did not wait: one of its tasks started while the later Allegro task waited for
    # the Allegro pool, and the simulator answered it.
    later = max(a1, a2, key=lambda t: t["start_date"])
    ebay_tis = [tis[("hub_to_marketplaces", "publish_ebay")], tis[(RECONCILE, "reconcile_ebay")]]
    assert any(t["start_date"] < later["start_date"] for t in ebay_tis), (ebay_tis, later)
    assert ebay.total > 0


def test_a_failed_task_notifies_with_the_runbook_line(deployment: Deployment) -> None:
    d = deployment
    feed = d.world.tmp / "sandbox" / "feeds" / "acme.xml"
    feed.write_text("this is not XML\n", encoding="utf-8")
    d.unpause("suppliers_to_hub_offers", scheduled=False)
    run = d.trigger("suppliers_to_hub_offers")
    d.wait("the supplier run", lambda: d.run_state("suppliers_to_hub_offers", run) in DONE)
    mail = d.mails.wait_for(lambda m: "sync_supplier_feed" in m["subject"] and run in m["body"], 120)
    assert mail["subject"].startswith("commerce-sync: suppliers_to_hub_offers.sync_supplier_feed[")
    assert mail["subject"].endswith("] failed")
    assert f"Run: {run}" in mail["body"] and "DAG: suppliers_to_hub_offers" in mail["body"]
    assert 'Runbook: *A supplier\'s task failed, "data was refused"*' in mail["body"]
    hook = d.hooks.wait_for(lambda h: h["subject"] == mail["subject"] and h["run_id"] == run, 60)
    assert hook["runbook"].startswith("*A supplier's task failed")
