"""A real Airflow holds large price moves for approval; approve and reject are answered over the REST API.

Starts ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer; SQLite, LocalExecutor,
parallelism 4) in a temporary AIRFLOW_HOME with only the pricing DAG, against a test hub whose channel
has a change cap. Run 1: five large moves are held, the run waits on ``approve_held_changes``
(Airflow 3.3 parks it in ``awaiting_input``), the summary is on the HITL detail, answering
``Approve`` through ``PATCH .../hitlDetails`` publishes them. Run 2: five more are held and ``Reject``
publishes none of them. Both decisions, the user and the time are in the ledger.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from commerce_sync.config import ChangeCap, Channel, PricingRule
from commerce_sync.db import connect
from commerce_sync.pricing.compute import PricingSetup, compute_channel_offers
from tests.integration.test_pricing_compute import RUN, seed_products

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DAG_ID = "hub_to_channel_offers"
APPROVAL = "approve_held_changes"
HUMAN_DELAY_S = 8
CAP = ChangeCap(move_pct=Decimal(15), max_count=2, max_share_pct=Decimal(50))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """The Airflow REST API with a JWT from the simple auth manager's generated admin password."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        token = self.call("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)
        self.token = token["access_token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def wait(self, what: str, probe: Any, timeout: float, log: Path) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = probe()
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                value = None
            except TimeoutError:  # a loaded machine: the api-server answers late, ask again
                value = None
            if value:
                return value
            time.sleep(1)
        pytest.fail(f"timed out after {timeout} s waiting for {what}; log tail:\n{log.read_text()[-3000:]}")


def _config_dir(tmp: Path) -> Path:
    config = tmp / "config"
    shutil.copytree(REPO / "include" / "config", config)
    channels = yaml.safe_load((config / "channels.yaml").read_text())
    allegro = next(c for c in channels["channels"] if c["kind"] == "allegro")
    allegro["change_cap"] = {"move_pct": str(CAP.move_pct), "max_count": CAP.max_count, "max_share_pct": "50"}
    channels["channels"] = [allegro]
    (config / "channels.yaml").write_text(yaml.safe_dump(channels))
    return config


@pytest.fixture
def airflow(hub_dsn: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not (VENV_BIN / "airflow").exists():
        pytest.skip(f"needs the Airflow env ({VENV_BIN / 'airflow'} missing): run `make test` once to create it")
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    (tmp_path / "plugins").mkdir()
    (dags / f"{DAG_ID}.py").symlink_to(REPO / "dags" / f"{DAG_ID}.py")
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "HUB_DATABASE_URL": hub_dsn,
        "AIRFLOW_CONN_HUB_DB": hub_dsn,
        "COMMERCE_SYNC_DATA_DIR": str(tmp_path / "data"),
        "COMMERCE_SYNC_CONFIG_DIR": str(_config_dir(tmp_path)),
    }
    log_path = tmp_path / "standalone.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["airflow", "standalone"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: SIGINT reaches every component
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow standalone exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/v2/version", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server did not answer within 150 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        passwords = home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 30
        while not passwords.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        api = Api(base, json.loads(passwords.read_text())["admin"])
        yield {"api": api, "log": log_path, "env": env, "tmp": tmp_path}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _prices(dsn: str, skus: list[str]) -> dict[str, Decimal]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT sku, price FROM hub.channel_offer WHERE sku = ANY(%s)", (skus,)).fetchall())


def _raise_costs(dsn: str, skus: list[str]) -> None:
    with connect(dsn) as conn:
        conn.execute("UPDATE hub.product SET purchase_price = purchase_price * 1.5 WHERE sku = ANY(%s)", (skus,))


def _decisions_and_price_rows(dsn: str, skus: list[str]) -> tuple[list[tuple[Any, str]], int]:
    """The ledger's approval decisions (with their run ids) and the new price outbox rows of ``skus``."""
    with connect(dsn) as conn:
        decisions = conn.execute(
            "SELECT details->'approval', run_id FROM audit.transfer WHERE details ? 'approval' ORDER BY seq"
        ).fetchall()
        row = conn.execute(
            "SELECT count(*) FROM hub.outbox WHERE field = 'price' AND sku = ANY(%s) AND offer_version > 1", (skus,)
        ).fetchone()
    return decisions, int(row[0]) if row else 0


def _run_until_answered(a: dict[str, Any], option: str) -> tuple[str, dict[str, Any]]:
    api: Api = a["api"]
    log: Path = a["log"]
    api.wait("the DAG to be parsed", lambda: api.call("GET", f"/api/v2/dags/{DAG_ID}"), 90, log)
    run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}})
    run_id = run["dag_run_id"]
    ti_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{APPROVAL}"
    ti_state = lambda: api.call("GET", ti_path)  # noqa: E731
    api.wait("the approval task to wait for input", lambda: ti_state()["state"] == "awaiting_input", 150, log)

    def settled() -> str | None:
        """The run's end state; re-answers if Airflow asked again (see below)."""
        state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return str(state)
        ti = ti_state()
        if ti["state"] == "awaiting_input" and ti["try_number"] > answered_try[-1]:
            answer(ti["try_number"])
        return None

    def answer(try_number: int) -> None:
        # A person answers seconds later. Airflow 3.3.2 (LocalExecutor) has a race: an answer that lands
        # before the executor reports the parked worker's exit (0.5-7 s here under load) makes the
        # scheduler see a "queued" TI finish, mark it up_for_retry and ask again in the next try. A second
        # answer to that try goes through; only the answered try's execute_complete writes the decision.
        time.sleep(HUMAN_DELAY_S)
        answered_try.append(try_number)
        done = api.call("PATCH", f"{ti_path}/-1/hitlDetails", {"chosen_options": [option], "params_input": {}})
        assert done["chosen_options"] == [option]

    answered_try: list[int] = []
    detail = api.call("GET", f"{ti_path}/-1/hitlDetails")
    answer(ti_state()["try_number"])
    assert api.wait("the run to finish", settled, 240, log) == "success"
    if len(answered_try) > 1:
        print(f"Airflow asked again after the answer (race, see answer()): tries answered {answered_try}")
    return run_id, detail


def test_held_price_moves_wait_for_approval_and_follow_the_answer(airflow: dict[str, Any], hub_dsn: str) -> None:
    from commerce_sync.config import load_config

    os.environ["COMMERCE_SYNC_CONFIG_DIR"] = airflow["env"]["COMMERCE_SYNC_CONFIG_DIR"]
    try:
        config = load_config()
    finally:
        os.environ.pop("COMMERCE_SYNC_CONFIG_DIR", None)
    channel: Channel = config.channels[0]
    rule: PricingRule = config.rule_for(channel)
    seed_products(hub_dsn, 30)
    compute_channel_offers(hub_dsn, channel, rule, RUN, setup=PricingSetup(config.rules))
    first, second = [f"SKU-{i:05d}" for i in range(1, 6)], [f"SKU-{i:05d}" for i in range(11, 16)]
    live_first, live_second = _prices(hub_dsn, first), _prices(hub_dsn, second)

    # Run 1: approve -> the held moves are published
    _raise_costs(hub_dsn, first)
    run_id, detail = _run_until_answered(airflow, "Approve")
    assert "5 held price moves" in detail["subject"]
    assert "price-proposals-" in detail["body"] and "SKU-0000" in detail["body"]
    new_first = _prices(hub_dsn, first)
    assert all(new_first[s] > live_first[s] for s in first)
    decisions, outboxed = _decisions_and_price_rows(hub_dsn, first)
    assert [(d["decision"], d["decided_by"], d["applied"]) for d, _ in decisions] == [("approved", "admin", 5)]
    assert decisions[0][1] == run_id and decisions[0][0]["decided_at"]
    assert outboxed == 5

    # Run 2: reject -> nothing of the held set is published, and the rejection is in the ledger
    _raise_costs(hub_dsn, second)
    run_id, _ = _run_until_answered(airflow, "Reject")
    assert _prices(hub_dsn, second) == live_second
    decisions, outboxed = _decisions_and_price_rows(hub_dsn, second)
    assert [(d["decision"], d["decided_by"], d["rejected"]) for d, _ in decisions][1] == ("rejected", "admin", 5)
    assert decisions[1][1] == run_id
    assert outboxed == 0
