"""Alerts reach a real SMTP server and a real webhook receiver on loopback, from Airflow connections.

`alert` sends through every configured channel and never raises (a channel that is down is logged and
the others still deliver); the failure callback names the DAG, run, task and the runbook line that
applies; a tripped breaker says so; the deadline callback (as the triggerer calls it) and the supplier
price alert go through the same channels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from commerce_sync.errors import BreakerTripped
from commerce_sync.notify import FailureNotifier, SmtpNotifier, WebhookNotifier, alert, deadline_missed
from commerce_sync.sources.notifiers import LogFileNotifier
from tests.receivers import notification_connections, smtp_server, webhook_server
from tests.unit.test_notify import _doc

pytestmark = pytest.mark.integration


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with smtp_server() as (mails, smtp_port), webhook_server() as (hooks, hook_port):
        for name, value in notification_connections(smtp_port, hook_port).items():
            monkeypatch.setenv(name, value)
        yield {"mails": mails, "hooks": hooks, "smtp_port": smtp_port, "hook_port": hook_port}


def _task_context(dag_id: str, task_id: str, exception: BaseException, map_index: int = -1) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id=dag_id, run_id="scheduled__2026-12-05", task_id=task_id, map_index=map_index, try_number=4
    )
    return {"ti": ti, "dag": DAG(dag_id, schedule=None, doc_md=_doc(dag_id)), "exception": exception}


def test_alert_reaches_mail_and_webhook_with_dag_run_and_runbook(receivers: dict[str, Any]) -> None:
    alert(
        "commerce-sync: order line oversold",
        "allegro order 123: SKU-1 sold 3, sellable 1",
        runbook="Cancel or back-order the line in the ERP",
        dag_id="marketplaces_to_hub_orders",
        run_id="manual__7",
        details={"sku": "SKU-1"},
    )
    mail = receivers["mails"].wait_for(lambda m: "oversold" in m["subject"])
    assert mail["to"] == ["ops@shop.test", "oncall@shop.test"]
    for part in ("DAG: marketplaces_to_hub_orders", "Run: manual__7", "Runbook: Cancel or back-order", "SKU-1"):
        assert part in mail["body"]
    hook = receivers["hooks"].wait_for(lambda h: "oversold" in h["subject"])
    assert hook["_auth"] == "Bearer hook-token" and hook["_path"] == "/hooks/commerce"
    assert (hook["dag_id"], hook["run_id"], hook["details"]) == (
        "marketplaces_to_hub_orders",
        "manual__7",
        {"sku": "SKU-1"},
    )


def test_a_channel_that_is_down_is_logged_and_the_other_still_delivers(
    receivers: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    receivers["hooks"].status = 500
    alert("commerce-sync: first", "body", runbook="r", dag_id="d", run_id="r1")
    assert receivers["mails"].wait_for(lambda m: m["subject"] == "commerce-sync: first")
    assert "answered HTTP 500" in caplog.text
    # The SMTP server gone too: alert still returns, naming both failures in the log.
    monkeypatch.setenv("AIRFLOW_CONN_COMMERCE_SYNC_SMTP", '{"conn_type": "email", "host": "127.0.0.1", "port": 9}')
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        alert("commerce-sync: second", "body", runbook="r", dag_id="d", run_id="r1")
    assert "'commerce_sync_smtp'" in caplog.text and "'commerce_sync_webhook'" in caplog.text


def test_no_configured_channel_logs_the_alert_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        alert("commerce-sync: nobody listens", "body", runbook="the runbook", dag_id="d", run_id="r")
    assert "ALERT: commerce-sync: nobody listens" in caplog.text and "the runbook" in caplog.text


def test_failure_callback_carries_the_runbook_line_that_applies(receivers: dict[str, Any]) -> None:
    error = AirflowFailException("channel 'ebay': the channel refused the request, not retried. HTTP 401")
    FailureNotifier()(_task_context("hub_to_marketplaces", "publish_ebay", error, map_index=0))
    mail = receivers["mails"].wait_for(lambda m: "publish_ebay" in m["subject"])
    assert mail["subject"] == "commerce-sync: hub_to_marketplaces.publish_ebay[0] failed"
    assert "Run: scheduled__2026-12-05" in mail["body"] and "HTTP 401" in mail["body"]
    assert 'Runbook: *Failed, "channel refused"*: credentials' in mail["body"]
    hook = receivers["hooks"].wait_for(lambda h: "publish_ebay" in h["subject"])
    assert hook["runbook"].startswith('*Failed, "channel refused"*') and hook["details"]["try_number"] == 4


def test_a_tripped_breaker_says_so(receivers: dict[str, Any]) -> None:
    tripped = BreakerTripped("product", "erp", ["row_count_drop: 80% > limit 50%"])
    error = AirflowFailException(f"ERP: {tripped}")
    error.__cause__ = tripped
    FailureNotifier()(_task_context("erp_to_hub_products", "sync_erp_products", error))
    mail = receivers["mails"].wait_for(lambda m: "breaker" in m["subject"])
    assert mail["subject"] == "commerce-sync: circuit breaker tripped in erp_to_hub_products.sync_erp_products"
    assert 'Runbook: *Failed, "circuit breaker tripped"*' in mail["body"]


def test_deadline_callback_as_the_triggerer_calls_it(receivers: dict[str, Any]) -> None:
    context = {
        "dag_run": {"dag_id": "erp_to_hub_products", "dag_run_id": "scheduled__x", "state": "running"},
        "deadline": {"id": "d-1", "deadline_time": "2026-12-05T04:00:00+00:00"},
    }
    result = asyncio.run(
        deadline_missed(what="ERP sync not finished", runbook="*Deadline missed*: look", context=context)
    )
    assert "2 channel(s)" in result
    mail = receivers["mails"].wait_for(lambda m: "deadline" in m["subject"])
    assert mail["subject"] == "commerce-sync: erp_to_hub_products missed its deadline"
    assert "Run: scheduled__x" in mail["body"] and "Runbook: *Deadline missed*: look" in mail["body"]


def test_templated_channel_notifiers(receivers: dict[str, Any]) -> None:
    context = _task_context("hub_to_catalog_feeds", "write_feed", RuntimeError("x"))
    SmtpNotifier("feeds of {{ ti.dag_id }}", "body", runbook="rb")(context)
    WebhookNotifier("feeds of {{ ti.dag_id }}", "body", runbook="rb")(context)
    assert receivers["mails"].wait_for(lambda m: m["subject"] == "feeds of hub_to_catalog_feeds")
    assert receivers["hooks"].wait_for(lambda h: h["subject"] == "feeds of hub_to_catalog_feeds")["run_id"]


def test_supplier_price_alert_goes_through_the_same_channels(receivers: dict[str, Any], tmp_path: Path) -> None:
    notifier = LogFileNotifier(
        "supplier acme: 12 price moves beyond 30%",
        {"kind": "supplier_price_change"},
        tmp_path / "alerts.jsonl",
        subject="commerce-sync: supplier price alert (acme)",
        runbook="price alert",
    )
    notifier(_task_context("suppliers_to_hub_offers", "sync_supplier_feed", RuntimeError("unused")))
    mail = receivers["mails"].wait_for(lambda m: "price alert" in m["subject"])
    assert "Runbook: *Price alert*: read the CSV" in mail["body"] and "12 price moves" in mail["body"]
    assert (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").count("\n") == 1
