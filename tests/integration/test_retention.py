"""Retention against the real PostgreSQL: what is removed, what is always kept."""

from __future__ import annotations

import uuid

import pytest

from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError
from commerce_sync.hub.retention import RetentionPolicy, apply_retention

pytestmark = pytest.mark.integration
RUN = ledger.RunContext(run_id="test", dag_id="hub_maintenance", task_id="apply_retention")


def _quarantine(conn, status: str, resolved_days_ago: int | None, key: str) -> None:
    conn.execute(
        """INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, expectation, reason, raw, status,
                                       resolved_at, created_at)
           VALUES ('supplier_offer', 'supplier:acme', %s, %s, 'e', 'r', '{}'::jsonb, %s,
                   CASE WHEN %s::int IS NULL THEN NULL ELSE now() - make_interval(days => %s::int) END,
                   now() - interval '800 days')""",
        (uuid.uuid4(), key, status, resolved_days_ago, resolved_days_ago),
    )


def test_removes_old_resolved_quarantine_and_stale_staging_only(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        _quarantine(conn, "resolved", 400, "OLD-RESOLVED")
        _quarantine(conn, "resolved", 10, "RECENT-RESOLVED")
        _quarantine(conn, "open", None, "OLD-OPEN")
        conn.execute(
            "INSERT INTO staging.supplier_offer (transfer_id, supplier, record_no, staged_at) "
            "VALUES (%s, 'acme', 1, now() - interval '3 days'), (%s, 'acme', 1, now())",
            (uuid.uuid4(), uuid.uuid4()),
        )
        conn.execute(
            "INSERT INTO staging.erp_product (transfer_id, record_no, staged_at) VALUES (%s, 1, now() - interval '2 days')",
            (uuid.uuid4(),),
        )
        for sku, days in (("OLD", 400), ("RECENT", 30)):
            conn.execute(
                "INSERT INTO hub.supplier_price_change (transfer_id, supplier, supplier_sku, old_price, old_currency, "
                "new_price, new_currency, change_pct, alert, created_at) "
                "VALUES (%s, 'acme', %s, 10, 'PLN', 11, 'PLN', 10, false, now() - make_interval(days => %s))",
                (uuid.uuid4(), sku, days),
            )
    result = apply_retention(hub_dsn, RetentionPolicy(quarantine_days=365, staging_hours=24), RUN)
    assert (result.quarantine_deleted, result.staging_deleted, result.price_change_deleted) == (1, 2, 1)
    with connect(hub_dsn) as conn:
        keys = [r[0] for r in conn.execute("SELECT record_key FROM hub.quarantine ORDER BY record_key")]
        staged = conn.execute("SELECT count(*) FROM staging.supplier_offer").fetchone()[0]
        row = conn.execute("SELECT dataset, rows_changed, status FROM audit.transfer").fetchone()
        price_changes = [r[0] for r in conn.execute("SELECT supplier_sku FROM hub.supplier_price_change")]
        assert ledger.verify(conn).ok
    assert keys == ["OLD-OPEN", "RECENT-RESOLVED"], "open rows are kept whatever their age"
    assert staged == 1
    assert price_changes == ["RECENT"]
    assert row == ("retention", 4, "success")


def test_keep_forever(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        _quarantine(conn, "resolved", 4000, "ANCIENT")
        conn.execute(
            "INSERT INTO hub.supplier_price_change (transfer_id, supplier, supplier_sku, old_price, old_currency, "
            "new_price, new_currency, alert, created_at) "
            "VALUES (%s, 'acme', 'ANCIENT', 10, 'PLN', 11, 'PLN', false, now() - interval '4000 days')",
            (uuid.uuid4(),),
        )
    result = apply_retention(hub_dsn, RetentionPolicy(quarantine_days=None, price_change_days=None), RUN)
    assert (result.quarantine_deleted, result.price_change_deleted) == (0, 0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, RetentionPolicy(365, 24, 365)),
        ({"COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS": "keep"}, RetentionPolicy(None, 24, 365)),
        ({"COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS": "0"}, RetentionPolicy(365, 24, None)),
        (
            {
                "COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS": "30",
                "COMMERCE_SYNC_STAGING_RETENTION_HOURS": "6",
                "COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS": "90",
            },
            RetentionPolicy(30, 6, 90),
        ),
    ],
)
def test_policy_from_env(monkeypatch: pytest.MonkeyPatch, env: dict, expected: RetentionPolicy) -> None:
    monkeypatch.delenv("COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("COMMERCE_SYNC_STAGING_RETENTION_HOURS", raising=False)
    monkeypatch.delenv("COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert RetentionPolicy.from_env() == expected


def test_policy_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMERCE_SYNC_STAGING_RETENTION_HOURS", "soon")
    with pytest.raises(ConfigError, match="COMMERCE_SYNC_STAGING_RETENTION_HOURS must be a whole number"):
        RetentionPolicy.from_env()
    monkeypatch.setenv("COMMERCE_SYNC_STAGING_RETENTION_HOURS", "6")
    monkeypatch.setenv("COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS", "-3")
    with pytest.raises(ConfigError, match="COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS must be >= 0"):
        RetentionPolicy.from_env()
