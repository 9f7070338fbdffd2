"""Retention for the hub's transient data: staging leftovers, resolved quarantine rows, old price-change
reports, settled outbox rows and webhook delivery ids.

What is removed, and what never is:
- staging rows older than ``staging_hours`` (a finished transfer deletes its own rows; older ones
  are leftovers of a task that crashed before cleaning up);
- quarantine rows that were *resolved* more than ``quarantine_days`` ago (open rows are problems
  nobody fixed yet and are kept whatever their age; ``quarantine_days=None`` keeps everything);
- supplier price-change report rows (``hub.supplier_price_change``) older than ``price_change_days``
  (``None`` keeps everything); every change they list is also in ``audit.change``, which stays;
- outbox rows (``hub.outbox``) settled more than ``outbox_days`` ago (``None`` keeps everything), and only
  those nothing reads any more: a ``superseded`` row (never sent), or a ``sent`` or ``failed`` row after
  which a newer row of the same channel, SKU and field was sent. The newest sent value per channel, SKU
  and field stays whatever its age (read-back compares the channel with it, and ``published_version``
  is derived from it), and so do pending rows and failed rows nothing overtook. Each value, its offer
  version and idempotency key stay in ``audit.change``, and the publish's request ids in its ledger
  row; what goes is the row's own copy of the channel's answer. Their ``hub.outbox_attempt`` rows go
  with them;
- webhook delivery ids (``hub.webhook_delivery``) received more than ``webhook_days`` ago: they only
  recognise a delivery sent twice, which a shop retries within hours, not weeks;
- the audit ledger (``audit.transfer``, ``audit.change``) is never deleted by the pipelines: the
  database refuses it, and this module does not try.
Every run is itself a transfer in the ledger, with the counts it removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import sql

from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

QUARANTINE_DAYS_ENV = "COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS"
STAGING_HOURS_ENV = "COMMERCE_SYNC_STAGING_RETENTION_HOURS"
PRICE_CHANGE_DAYS_ENV = "COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS"
OUTBOX_DAYS_ENV = "COMMERCE_SYNC_OUTBOX_RETENTION_DAYS"
WEBHOOK_DAYS_ENV = "COMMERCE_SYNC_WEBHOOK_RETENTION_DAYS"
DEFAULT_QUARANTINE_DAYS = 365
DEFAULT_PRICE_CHANGE_DAYS = 365
DEFAULT_OUTBOX_DAYS = 400  # more than a year: a yearly audit still finds the channel's answers
DEFAULT_WEBHOOK_DAYS = 30
DEFAULT_STAGING_HOURS = 24
STAGING_TABLES = ("staging.erp_product", "staging.supplier_offer")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long transient rows are kept."""

    quarantine_days: int | None = DEFAULT_QUARANTINE_DAYS
    staging_hours: int = DEFAULT_STAGING_HOURS
    price_change_days: int | None = DEFAULT_PRICE_CHANGE_DAYS
    outbox_days: int | None = DEFAULT_OUTBOX_DAYS
    webhook_days: int | None = DEFAULT_WEBHOOK_DAYS

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        """``COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS``, ``COMMERCE_SYNC_PRICE_CHANGE_RETENTION_DAYS``,
        ``COMMERCE_SYNC_OUTBOX_RETENTION_DAYS`` and ``COMMERCE_SYNC_WEBHOOK_RETENTION_DAYS`` (``0`` or
        ``keep`` = forever), ``COMMERCE_SYNC_STAGING_RETENTION_HOURS``."""
        raw_hours = os.environ.get(STAGING_HOURS_ENV, str(DEFAULT_STAGING_HOURS)).strip()
        try:
            hours = int(raw_hours)
        except ValueError as exc:
            raise ConfigError(f"{STAGING_HOURS_ENV} must be a whole number of hours: {exc}") from exc
        if hours < 1:
            raise ConfigError(f"{STAGING_HOURS_ENV} must be >= 1")
        return cls(
            quarantine_days=_days(QUARANTINE_DAYS_ENV, DEFAULT_QUARANTINE_DAYS),
            staging_hours=hours,
            price_change_days=_days(PRICE_CHANGE_DAYS_ENV, DEFAULT_PRICE_CHANGE_DAYS),
            outbox_days=_days(OUTBOX_DAYS_ENV, DEFAULT_OUTBOX_DAYS),
            webhook_days=_days(WEBHOOK_DAYS_ENV, DEFAULT_WEBHOOK_DAYS),
        )


def _days(name: str, default: int) -> int | None:
    raw = os.environ.get(name, str(default)).strip().lower()
    if raw in ("0", "keep", "forever"):
        return None
    try:
        days = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number of days, or keep: {exc}") from exc
    if days < 0:
        raise ConfigError(f"{name} must be >= 0 (0 or keep = forever)")
    return days


@dataclass(frozen=True)
class RetentionResult:
    """Rows removed by one run."""

    quarantine_deleted: int
    staging_deleted: int
    transfer_id: str
    price_change_deleted: int = 0
    outbox_deleted: int = 0
    webhook_deleted: int = 0


# Settled outbox rows nothing reads any more (see the module docs): superseded, or overtaken by a newer
# sent row of the same channel, SKU and field (found through outbox_sku_idx).
_OUTBOX = """
WITH gone AS (
    DELETE FROM hub.outbox AS o
    WHERE o.status IN ('sent', 'failed', 'superseded')
      AND coalesce(o.sent_at, o.created_at) < now() - %(age)s
      AND (o.status = 'superseded' OR EXISTS (
            SELECT 1 FROM hub.outbox AS s
            WHERE s.channel = o.channel AND s.sku = o.sku AND s.field = o.field AND s.status = 'sent'
              AND (s.offer_version > o.offer_version OR (s.offer_version = o.offer_version AND s.id > o.id))))
    RETURNING o.id
), attempts AS (
    DELETE FROM hub.outbox_attempt AS a USING gone WHERE a.outbox_id = gone.id
)
SELECT count(*) FROM gone
"""


def _delete_older(conn: Any, statement: str, days: int | None) -> int:
    """Run a ``DELETE ... < now() - %s`` with ``days`` as the interval; None keeps everything (0 deleted)."""
    if days is None:
        return 0
    return int(conn.execute(statement, (timedelta(days=days),)).rowcount)


def apply_retention(dsn: str, policy: RetentionPolicy, run: ledger.RunContext) -> RetentionResult:
    """Delete what ``policy`` allows, in one transaction with its ledger row."""
    transfer = ledger.Transfer(source="hub", target="hub", dataset="retention", run=run)
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        quarantine_deleted = _delete_older(
            conn,
            "DELETE FROM hub.quarantine WHERE status = 'resolved' AND resolved_at < now() - %s",
            policy.quarantine_days,
        )
        staging_deleted = 0
        for table in STAGING_TABLES:
            schema, name = table.split(".")
            staging_deleted += conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE staged_at < now() - %s").format(
                    sql.Identifier(schema), sql.Identifier(name)
                ),
                (timedelta(hours=policy.staging_hours),),
            ).rowcount
        price_change_deleted = _delete_older(
            conn, "DELETE FROM hub.supplier_price_change WHERE created_at < now() - %s", policy.price_change_days
        )
        outbox_deleted = 0
        if policy.outbox_days is not None:
            row = conn.execute(_OUTBOX, {"age": timedelta(days=policy.outbox_days)}).fetchone()
            outbox_deleted = int(row[0]) if row else 0
        webhook_deleted = _delete_older(
            conn, "DELETE FROM hub.webhook_delivery WHERE received_at < now() - %s", policy.webhook_days
        )
        transfer.rows_changed = (
            quarantine_deleted + staging_deleted + price_change_deleted + outbox_deleted + webhook_deleted
        )
        transfer.details = {
            "quarantine_days": policy.quarantine_days,
            "staging_hours": policy.staging_hours,
            "price_change_days": policy.price_change_days,
            "outbox_days": policy.outbox_days,
            "webhook_days": policy.webhook_days,
            "quarantine_deleted": quarantine_deleted,
            "staging_deleted": staging_deleted,
            "price_change_deleted": price_change_deleted,
            "outbox_deleted": outbox_deleted,
            "webhook_deleted": webhook_deleted,
        }
        ledger.append(conn, transfer, "success")
    return RetentionResult(
        quarantine_deleted,
        staging_deleted,
        str(transfer.transfer_id),
        price_change_deleted,
        outbox_deleted,
        webhook_deleted,
    )
