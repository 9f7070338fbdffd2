"""Crashes and concurrency of source runs: one run per source at a time, killed runs' staging
removed by the next run (never a live run's), a lost database session is a retryable fault."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from commerce_sync.audit import changes, ledger
from commerce_sync.db import connect, connection_lost, drop_database, lost_connection_is_transient
from commerce_sync.errors import TransientError
from commerce_sync.hub.source_lock import RUN_PREFIX, live_transfers, lock_key, source_lock
from commerce_sync.sources.erp import sync_erp
from commerce_sync_sandbox.erp import load_erp
from tests.conftest import new_database
from tests.integration.test_erp_load import ERP, RUN

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def erp_dsn() -> Iterator[str]:
    url = new_database()
    load_erp(url, n=300)
    yield url
    drop_database(url)


def _hub_state(hub: str) -> list[tuple[Any, ...]]:
    with connect(hub) as conn:
        products = conn.execute(
            "SELECT sku, gtin, name, purchase_price, active, row_hash FROM hub.product ORDER BY sku"
        ).fetchall()
        stock = conn.execute("SELECT sku, location, quantity, reserved FROM hub.stock ORDER BY sku").fetchall()
    return products + stock


def test_two_concurrent_erp_syncs_converge_without_unique_violation(
    hub_dsn: str, hub_template: str, erp_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both runs hold their merge open until the other one merged too (or 3 s passed): without a lock
    the second run's MERGE waits on the first one's uncommitted products and then fails on
    ``product_pkey``; with it, the second run waits for the lock and finds nothing left to change."""
    merged = threading.Barrier(2)
    summarise = changes.summarise

    def summarise_after_the_other_merged(conn: psycopg.Connection, transfer: ledger.Transfer) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            merged.wait(timeout=3)
        summarise(conn, transfer)

    monkeypatch.setattr(changes, "summarise", summarise_after_the_other_merged)
    outcomes: list[Any] = [None, None]

    def run(index: int) -> None:
        try:
            outcomes[index] = sync_erp(hub_dsn, ERP, erp_dsn, RUN)
        except Exception as exc:
            outcomes[index] = exc

    caplog.set_level(logging.INFO, logger="commerce_sync.hub.source_lock")
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, f"a concurrent run failed: {errors!r}"
    assert sorted(o.rows_changed for o in outcomes) == [0, 300], "the second run found the first one's work"
    waits = [r.getMessage() for r in caplog.records if "another run holds the source lock" in r.getMessage()]
    assert len(waits) == 1
    assert waits[0].startswith("erp: another run holds the source lock (pid ") and waits[0].endswith("); waiting")

    with connect(hub_dsn) as conn:
        statuses = conn.execute("SELECT status, rows_changed FROM audit.transfer ORDER BY seq").fetchall()
        assert ledger.verify(conn).ok
    assert statuses == [("success", 300), ("success", 0)]
    concurrent = _hub_state(hub_dsn)
    reference = new_database(hub_template)
    try:
        monkeypatch.setattr(changes, "summarise", summarise)
        sync_erp(reference, ERP, erp_dsn, RUN)
        assert _hub_state(reference) == concurrent, "two concurrent runs leave what one run leaves"
    finally:
        drop_database(reference)


_KILLED_RUN = """
import sys, time
from commerce_sync.sources import erp
from tests.integration.test_erp_load import ERP, RUN

def stop_after_staging(*args, **kwargs):
    print("staged", flush=True)
    time.sleep(600)

erp._validate = stop_after_staging
erp.sync_erp(sys.argv[1], ERP, sys.argv[2], RUN)
"""


def test_next_run_removes_a_killed_runs_staging_but_not_a_live_runs(hub_dsn: str, erp_dsn: str) -> None:
    # A real ERP sync, killed with SIGKILL after its rows were staged (before validation and merge).
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, hub_dsn, erp_dsn],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert killed.stdout is not None
        assert killed.stdout.readline().strip() == "staged"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    with connect(hub_dsn) as conn:
        left = conn.execute("SELECT count(DISTINCT transfer_id), count(*) FROM staging.erp_product").fetchone()
    assert left == (1, 300), "the killed run left its staging rows"

    # A live run of another source (its lock connection open) with rows in the same staging table.
    live_tid = uuid.uuid4()
    with psycopg.connect(hub_dsn, autocommit=True, application_name=f"{RUN_PREFIX}{live_tid}") as live:
        live.execute(
            """INSERT INTO staging.erp_product (transfer_id, record_no, sku, name, purchase_price, currency)
               VALUES (%s, 1, 'LIVE-1', 'still being loaded', 1, 'PLN')""",
            (live_tid,),
        )
        deadline = time.monotonic() + 10
        while str(live_tid) not in live_transfers(live) and time.monotonic() < deadline:
            time.sleep(0.1)  # the killed backend may take a moment to go; the live one is there at once
        result = sync_erp(hub_dsn, ERP, erp_dsn, RUN)
        assert result.rows_changed == 300
        with connect(hub_dsn) as conn:
            rows = conn.execute("SELECT transfer_id, sku FROM staging.erp_product").fetchall()
        assert rows == [(live_tid, "LIVE-1")], "only the live run's staging rows stay"


def test_a_terminated_backend_is_a_transient_error(hub_dsn: str) -> None:
    with connect(hub_dsn) as victim, connect(hub_dsn, autocommit=True) as admin:
        pid = victim.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        lost = r"lost the connection to the hub \(AdminShutdown: "
        with pytest.raises(TransientError, match=lost) as caught, lost_connection_is_transient("the hub"):
            victim.execute("SELECT 1")
        assert isinstance(caught.value.__cause__, psycopg.errors.AdminShutdown)
    # The connection is gone for good too: the next statement has no SQLSTATE at all.
    with connect(hub_dsn) as conn:
        conn.close()
        with pytest.raises(TransientError), lost_connection_is_transient():
            conn.execute("SELECT 1")


def test_statements_the_database_refused_stay_what_they_are(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        conn.execute("SET statement_timeout = '10ms'")
        with pytest.raises(psycopg.errors.QueryCanceled), lost_connection_is_transient():
            conn.execute("SELECT pg_sleep(1)")
    with connect(hub_dsn) as conn, pytest.raises(psycopg.errors.DivisionByZero), lost_connection_is_transient():
        conn.execute("SELECT 1 / 0")
    assert not connection_lost(ValueError("x"))
    assert connection_lost(psycopg.OperationalError("server closed the connection unexpectedly"))


def test_a_terminated_backend_is_retried_by_airflow_with_its_message(hub_dsn: str) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from commerce_sync.airflow_glue import operator_errors

    with connect(hub_dsn) as victim, connect(hub_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(AirflowException) as raised, operator_errors("ERP 'erp'"):
            victim.execute("SELECT 1")
    assert not isinstance(raised.value, AirflowFailException), "retryable, not a final failure"
    message = str(raised.value)
    assert message.startswith("ERP 'erp': temporary fault, will retry with backoff. lost the connection")
    assert "AdminShutdown" in message


def test_the_lock_key_is_per_source_and_released_with_the_run(hub_dsn: str) -> None:
    assert lock_key("erp") != lock_key("supplier:acme")
    assert lock_key("erp") == lock_key("erp")
    with source_lock(hub_dsn, "supplier:acme", uuid.uuid4()), connect(hub_dsn, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("supplier:acme"),)).fetchone() == (False,)
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("supplier:bravo"),)).fetchone() == (True,)
    with connect(hub_dsn, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("supplier:acme"),)).fetchone() == (True,)
