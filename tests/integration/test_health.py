"""The operators' health view: per source and channel from the hub, event triggers from Airflow's tables.

The hub side runs on a real migrated hub database. The trigger side runs the same SELECT that reads
Airflow's metadata database against a PostgreSQL database holding the four Airflow 3.3 tables it reads
(``asset``, ``asset_watcher``, ``trigger``, ``job``; only the columns it uses), so each state an
operator can meet (alive, triggerer gone, no triggerer, none configured) is produced on purpose; the
Celery end-to-end test reads a real Airflow metadata database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from commerce_sync import cli
from commerce_sync.audit import ledger
from commerce_sync.audit.health import endpoint_health, format_health, health, trigger_health
from commerce_sync.db import drop_database
from tests.conftest import new_database

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="manual__1", dag_id="d", task_id="t")


def _fill(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        for source, target, status in [
            ("erp", "hub", "success"),
            ("supplier:acme", "hub", "success"),
            ("supplier:acme", "hub", "failed"),
            ("hub", "channel:allegro", "success"),
            ("hub", "hub", "success"),  # pricing-internal: no endpoint
            ("config:exchange_rates", "hub", "success"),
        ]:
            ledger.append(conn, ledger.Transfer(source=source, target=target, dataset="x", run=RUN), status)
        transfer = uuid.uuid4()
        for i, status in enumerate(["pending", "pending", "sent"]):
            conn.execute(
                "INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, status, "
                "created_at, created_transfer_id) VALUES ('allegro', %s, 'price', '{}', 1, %s, %s, now() - %s, %s)",
                (f"SKU-{i}", f"k{i}", status, timedelta(minutes=10 * (3 - i)), transfer),
            )
        for key in ("ACM-1", "ACM-2"):
            conn.execute(
                "INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, expectation, reason, raw) "
                "VALUES ('supplier_offer', 'supplier:acme', %s, %s, 'e', 'bad', '{}')",
                (transfer, key),
            )
        proposal = uuid.uuid4()
        conn.execute(
            "INSERT INTO hub.price_proposal (proposal_id, channel, items, created_transfer_id) VALUES (%s, 'ebay', 1, %s)",
            (proposal, transfer),
        )
        conn.execute(
            """INSERT INTO hub.price_proposal_item (proposal_id, channel, sku, old_price, price, move_pct, currency,
                   cost, floor_price, floor_applied, max_price_applied, rule_id, rule_version, rule_level,
                   cost_source, exchange_rate, price_hash)
               VALUES (%s, 'ebay', 'SKU-9', 10, 20, 100, 'PLN', 5, 6, false, false, 'r', '1', 'channel', 'erp', 1, 'h')""",
            (proposal,),
        )


def test_per_source_and_channel(hub_dsn: str) -> None:
    _fill(hub_dsn)
    with psycopg.connect(hub_dsn) as conn:
        rows = {e.endpoint: e for e in endpoint_health(conn)}
    assert list(rows) == ["erp", "supplier:acme", "channel:allegro", "channel:ebay"], "sources first, then channels"
    acme, allegro, ebay = rows["supplier:acme"], rows["channel:allegro"], rows["channel:ebay"]
    assert acme.quarantine_open == 2 and acme.last_failure is not None and acme.last_success is not None
    assert (allegro.outbox_pending, allegro.kind) == (2, "channel")
    assert allegro.oldest_pending is not None and datetime.now(UTC) - allegro.oldest_pending > timedelta(minutes=25)
    assert (ebay.held_moves, ebay.last_success, ebay.outbox_pending) == (1, None, 0)
    text = format_health(health(psycopg.connect(hub_dsn), ""))
    assert "last transfer FAILED" in text.splitlines()[2], text  # supplier:acme's last transfer failed
    assert "event triggers: unknown: Airflow's metadata database is not configured" in text


@pytest.fixture
def airflow_tables() -> Iterator[str]:
    url = new_database(prefix="cs_test_af_tables")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE asset (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute('CREATE TABLE "trigger" (id integer PRIMARY KEY, classpath text NOT NULL, triggerer_id integer)')
        conn.execute("CREATE TABLE asset_watcher (name text, asset_id integer, trigger_id integer)")
        conn.execute(
            "CREATE TABLE job (id integer PRIMARY KEY, state text, job_type text, latest_heartbeat timestamptz)"
        )
    yield url
    drop_database(url)


def test_event_triggers_alive_dead_or_none(airflow_tables: str) -> None:
    sqlalchemy_url = "postgresql+psycopg://" + airflow_tables.split("://", 1)[1]
    assert trigger_health(sqlalchemy_url) == ([], "none configured")
    now = datetime.now(UTC)
    with psycopg.connect(airflow_tables) as conn:
        conn.execute("INSERT INTO asset VALUES (1, 'erp_product_changes'), (2, 'supplier_feed_drop'), (3, 'orders')")
        conn.execute(
            "INSERT INTO job VALUES (7, 'running', 'TriggererJob', %s), (8, 'failed', 'TriggererJob', %s)",
            (now - timedelta(seconds=3), now - timedelta(hours=2)),
        )
        conn.execute(
            """INSERT INTO "trigger" VALUES (1, 'commerce_sync.events.ErpNotifyTrigger', 7),
                                            (2, 'x.FeedTrigger', 8), (3, 'x.OrdersTrigger', NULL)"""
        )
        conn.execute("INSERT INTO asset_watcher VALUES ('erp_notify', 1, 1), ('feed_drop', 2, 2), ('orders', 3, 3)")
    triggers, note = trigger_health(sqlalchemy_url, now)
    assert note == "1 of 3 alive"
    by_name = {t.watcher: t for t in triggers}
    assert by_name["erp_notify"].alive and "heartbeat 3 s ago" in by_name["erp_notify"].detail
    assert not by_name["feed_drop"].alive and "is failed" in by_name["feed_drop"].detail
    assert not by_name["orders"].alive and "not picked up by any triggerer" in by_name["orders"].detail


def test_cli_status(hub_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(hub_dsn)
    monkeypatch.setenv("HUB_DATABASE_URL", hub_dsn)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert cli.main(["status", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ebay = next(e for e in report["endpoints"] if e["endpoint"] == "channel:ebay")
    assert (ebay["held_moves"], ebay["kind"]) == (1, "channel")
    assert report["triggers_note"].startswith("unknown: Airflow's metadata database could not be read")
    assert cli.main(["status"]) == 0
    assert "channel:allegro" in capsys.readouterr().out
