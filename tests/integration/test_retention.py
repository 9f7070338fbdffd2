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


def _outbox(conn, sku: str, field: str, version: int, status: str, days_ago: int, response: bool = False) -> int:
    row = conn.execute(
        """INSERT INTO hub.outbox (channel, sku, field, payload, offer_version, idempotency_key, status, response,
                                   created_at, sent_at, created_transfer_id)
           VALUES ('allegro', %s, %s, '{"value": 1}'::jsonb, %s, %s, %s, %s,
                   now() - make_interval(days => %s), CASE WHEN %s = 'sent' THEN now() - make_interval(days => %s) END,
                   %s)
           RETURNING id""",
        (
            sku,
            field,
            version,
            f"allegro:{sku}:{field}:v{version}:{uuid.uuid4()}",
            status,
            '{"error": "refused"}' if response else None,
            days_ago,
            status,
            days_ago,
            uuid.uuid4(),
        ),
    ).fetchone()
    return int(row[0])


def test_outbox_keeps_what_is_still_read_and_webhook_ids_expire(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        ids = {
            # SKU A: an old value overtaken by a newer sent one goes; the newest sent one stays, however old.
            "A-old": _outbox(conn, "A", "price", 1, "sent", 500),
            "A-newest": _outbox(conn, "A", "price", 2, "sent", 450),
            "A-quantity": _outbox(conn, "A", "quantity", 1, "sent", 500),  # another field: its own newest
            # SKU B: a refusal overtaken by a later send goes; an old superseded row goes; a recent one stays.
            "B-refused": _outbox(conn, "B", "price", 1, "failed", 500, response=True),
            "B-superseded": _outbox(conn, "B", "price", 2, "superseded", 500),
            "B-sent": _outbox(conn, "B", "price", 3, "sent", 420),
            "B-recent-superseded": _outbox(conn, "B", "quantity", 1, "superseded", 5),
            # SKU C: a refusal nothing overtook stays (read-back still compares it), and so does a pending row.
            "C-refused": _outbox(conn, "C", "price", 1, "failed", 500, response=True),
            "C-pending": _outbox(conn, "C", "quantity", 1, "pending", 500),
            # SKU D: overtaken but recent: kept until it is old.
            "D-old": _outbox(conn, "D", "price", 1, "sent", 10),
            "D-new": _outbox(conn, "D", "price", 2, "sent", 5),
        }
        conn.execute(
            "INSERT INTO hub.outbox_attempt (outbox_id, channel, transfer_id) VALUES (%s, 'allegro', %s), "
            "(%s, 'allegro', %s)",
            (ids["A-old"], uuid.uuid4(), ids["C-pending"], uuid.uuid4()),
        )
        conn.execute(
            "INSERT INTO hub.webhook_delivery (channel, delivery_id, topic, received_at) "
            "VALUES ('shop', 'old', 'order.created', now() - interval '40 days'), ('shop', 'new', 'order.created', now())"
        )
    result = apply_retention(hub_dsn, RetentionPolicy(outbox_days=400, webhook_days=30), RUN)
    assert (result.outbox_deleted, result.webhook_deleted) == (3, 1)
    with connect(hub_dsn) as conn:
        kept = {row[0] for row in conn.execute("SELECT id FROM hub.outbox")}
        attempts = [row[0] for row in conn.execute("SELECT outbox_id FROM hub.outbox_attempt")]
        deliveries = [row[0] for row in conn.execute("SELECT delivery_id FROM hub.webhook_delivery")]
        details = conn.execute(
            "SELECT details->>'outbox_deleted', details->>'webhook_deleted' FROM audit.transfer "
            "WHERE dataset = 'retention' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        assert ledger.verify(conn).ok
    assert {name for name, outbox_id in ids.items() if outbox_id not in kept} == {"A-old", "B-refused", "B-superseded"}
    assert attempts == [ids["C-pending"]], "the deleted row's attempt goes with it, a pending row's stays"
    assert deliveries == ["new"]
    assert details == ("3", "1")


def test_keep_forever(hub_dsn: str) -> None:
    with connect(hub_dsn) as conn:
        _quarantine(conn, "resolved", 4000, "ANCIENT")
        conn.execute(
            "INSERT INTO hub.supplier_price_change (transfer_id, supplier, supplier_sku, old_price, old_currency, "
            "new_price, new_currency, alert, created_at) "
            "VALUES (%s, 'acme', 'ANCIENT', 10, 'PLN', 11, 'PLN', false, now() - interval '4000 days')",
            (uuid.uuid4(),),
        )
        _outbox(conn, "OLD", "price", 1, "sent", 4000)
        _outbox(conn, "OLD", "price", 2, "sent", 4000)
        conn.execute(
            "INSERT INTO hub.webhook_delivery (channel, delivery_id, topic, received_at) "
            "VALUES ('shop', 'ancient', 'order.created', now() - interval '4000 days')"
        )
    result = apply_retention(
        hub_dsn,
        RetentionPolicy(quarantine_days=None, price_change_days=None, outbox_days=None, webhook_days=None),
        RUN,
    )
    assert (result.quarantine_deleted, result.price_change_deleted) == (0, 0)
    assert (result.outbox_deleted, result.webhook_deleted) == (0, 0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, RetentionPolicy(365, 24, 365, 400, 30)),
        ({"COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS": "keep"}, RetentionPolicy(None, 24, 365)),
        ({"COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS": "0"}, RetentionPolicy(365, 24, None)),
        (
            {"COMMERCE_SYNC_OUTBOX_RETENTION_DAYS": "keep", "COMMERCE_SYNC_WEBHOOK_RETENTION_DAYS": "7"},
            RetentionPolicy(365, 24, 365, None, 7),
        ),
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
    monkeypatch.delenv("COMMERCE_SYNC_OUTBOX_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("COMMERCE_SYNC_WEBHOOK_RETENTION_DAYS", raising=False)
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
