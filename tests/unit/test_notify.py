"""Notification text, runbook lines picked from the DAGs' docs, and deadline intervals: pure functions."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest

from commerce_sync.airflow_glue import parse_duration, sync_deadline
from commerce_sync.errors import ConfigError
from commerce_sync.notify import NO_RUNBOOK, Message, runbook_entries, runbook_line
from commerce_sync_devtools.demo import DAG_ORDER

DAGS = Path(__file__).resolve().parents[2] / "dags"
SYNC_DAGS = tuple(dag_id for dag_id in DAG_ORDER if dag_id != "hub_maintenance")


def _doc(dag_id: str) -> str:
    doc = ast.get_docstring(ast.parse((DAGS / f"{dag_id}.py").read_text(encoding="utf-8")), clean=False)
    assert doc
    return doc


@pytest.mark.parametrize(
    ("dag_id", "error", "task_id", "expected"),
    [
        (
            "erp_to_hub_products",
            "ERP: the data was refused, not retried; nothing was changed",
            None,
            "data was refused",
        ),
        ("erp_to_hub_products", "ERP: configuration problem, not retried. erp.yaml", None, "configuration problem"),
        ("erp_to_hub_products", "ERP: circuit breaker tripped for product from erp", None, "circuit breaker tripped"),
        ("hub_to_channel_offers", "channel 'allegro': no exchange rate EUR->PLN", None, "no exchange rate"),
        ("hub_to_marketplaces", "channel 'ebay': the channel refused the request", None, "channel refused"),
        ("hub_maintenance", "chain broken at seq 7", "verify_ledger", "verify_ledger failed"),
        ("hub_to_catalog_feeds", "No space left on device", "write_feed", "the previous feed file stays"),
        ("suppliers_to_hub_offers", "price alert", None, "read the CSV named in the alert"),
    ],
)
def test_the_runbook_line_that_applies_is_picked_from_the_dag_docs(
    dag_id: str, error: str, task_id: str | None, expected: str
) -> None:
    line = runbook_line(_doc(dag_id), error, task_id)
    assert expected in line, line
    assert line in _doc(dag_id).replace("\n  ", " ").replace("\n", " ") or line.startswith("*")


@pytest.mark.parametrize("dag_id", SYNC_DAGS)
def test_every_sync_dag_has_a_deadline_runbook_line(dag_id: str) -> None:
    line = runbook_line(_doc(dag_id), "deadline missed")
    assert line.startswith("*Deadline missed*"), line
    assert f"COMMERCE_SYNC_DEADLINE_{dag_id.upper()}" in line


def test_no_matching_entry_says_where_to_look() -> None:
    assert runbook_line("no runbook here", "boom") == NO_RUNBOOK
    assert runbook_line(None, "boom") == NO_RUNBOOK


def test_continuation_lines_belong_to_their_bullet() -> None:
    doc = '**Runbook**\n- *Failed, "x"*: first part\n  second part.\n- *Other*: y\n\nAfter the list.'
    assert runbook_entries(doc) == [('Failed, "x"', '*Failed, "x"*: first part second part.'), ("Other", "*Other*: y")]


def test_message_text_names_dag_run_and_runbook() -> None:
    message = Message("subject", "body text", "*Failed*: do this", "erp_to_hub_products", "manual__1", {"task_id": "t"})
    text = message.text()
    for part in ("subject", "DAG: erp_to_hub_products", "Run: manual__1", "body text", "Runbook: *Failed*: do this"):
        assert part in text
    assert message.payload()["details"] == {"task_id": "t"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10", timedelta(minutes=10)),
        ("10m", timedelta(minutes=10)),
        ("90s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("1.5m", timedelta(seconds=90)),
        ("off", None),
        ("0", None),
    ],
)
def test_deadline_durations(raw: str, expected: timedelta | None) -> None:
    assert parse_duration(raw, "X") == expected


@pytest.mark.parametrize("raw", ["ten", "-5", "5d", ""])
def test_bad_deadline_duration_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="COMMERCE_SYNC_DEADLINE_ERP"):
        parse_duration(raw, "COMMERCE_SYNC_DEADLINE_ERP")


def test_deadline_is_configurable_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc("erp_to_hub_products")
    (default,) = sync_deadline("erp_to_hub_products", doc, default=timedelta(minutes=10), what="ERP sync")
    assert default.interval == timedelta(minutes=10)
    assert default.callback.kwargs["runbook"].startswith("*Deadline missed*")
    assert "ERP sync not finished 0:10:00" in default.callback.kwargs["what"]
    monkeypatch.setenv("COMMERCE_SYNC_DEADLINE_ERP_TO_HUB_PRODUCTS", "45s")
    (short,) = sync_deadline("erp_to_hub_products", doc, default=timedelta(minutes=10), what="ERP sync")
    assert short.interval == timedelta(seconds=45)
    monkeypatch.setenv("COMMERCE_SYNC_DEADLINE_ERP_TO_HUB_PRODUCTS", "off")
    assert sync_deadline("erp_to_hub_products", doc, default=timedelta(minutes=10), what="ERP sync") == []
