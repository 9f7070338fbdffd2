"""Retention for the hub's transient data: staging leftovers and resolved quarantine rows.

What is removed, and what never is:
- staging rows older than ``staging_hours`` (a finished transfer deletes its own rows; older ones
  are leftovers of a task that crashed before cleaning up);
- quarantine rows that were *resolved* more than ``quarantine_days`` ago (open rows are problems
  nobody fixed yet and are kept whatever their age; ``quarantine_days=None`` keeps everything);
- the audit ledger (``audit.transfer``, ``audit.change``) is never deleted by the pipelines: the
  database refuses it, and this module does not try.
Every run is itself a transfer in the ledger, with the counts it removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from psycopg import sql

from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.errors import ConfigError

QUARANTINE_DAYS_ENV = "COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS"
STAGING_HOURS_ENV = "COMMERCE_SYNC_STAGING_RETENTION_HOURS"
DEFAULT_QUARANTINE_DAYS = 365
DEFAULT_STAGING_HOURS = 24
STAGING_TABLES = ("staging.erp_product", "staging.supplier_offer")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long transient rows are kept."""

    quarantine_days: int | None = DEFAULT_QUARANTINE_DAYS
    staging_hours: int = DEFAULT_STAGING_HOURS

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        """``COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS`` (``0`` or ``keep`` = forever) and
        ``COMMERCE_SYNC_STAGING_RETENTION_HOURS``."""
        raw_days = os.environ.get(QUARANTINE_DAYS_ENV, str(DEFAULT_QUARANTINE_DAYS)).strip().lower()
        raw_hours = os.environ.get(STAGING_HOURS_ENV, str(DEFAULT_STAGING_HOURS)).strip()
        try:
            days = None if raw_days in ("0", "keep", "forever") else int(raw_days)
            hours = int(raw_hours)
        except ValueError as exc:
            raise ConfigError(f"{QUARANTINE_DAYS_ENV}/{STAGING_HOURS_ENV} must be whole numbers: {exc}") from exc
        if (days is not None and days < 0) or hours < 1:
            raise ConfigError(f"{QUARANTINE_DAYS_ENV} must be >= 0 and {STAGING_HOURS_ENV} >= 1")
        return cls(quarantine_days=days, staging_hours=hours)


@dataclass(frozen=True)
class RetentionResult:
    """Rows removed by one run."""

    quarantine_deleted: int
    staging_deleted: int
    transfer_id: str


def apply_retention(dsn: str, policy: RetentionPolicy, run: ledger.RunContext) -> RetentionResult:
    """Delete what ``policy`` allows, in one transaction with its ledger row."""
    transfer = ledger.Transfer(source="hub", target="hub", dataset="retention", run=run)
    with ledger.recording(dsn, transfer), connect(dsn) as conn:
        quarantine_deleted = 0
        if policy.quarantine_days is not None:
            quarantine_deleted = conn.execute(
                "DELETE FROM hub.quarantine WHERE status = 'resolved' AND resolved_at < now() - %s",
                (timedelta(days=policy.quarantine_days),),
            ).rowcount
        staging_deleted = 0
        for table in STAGING_TABLES:
            schema, name = table.split(".")
            staging_deleted += conn.execute(
                sql.SQL("DELETE FROM {}.{} WHERE staged_at < now() - %s").format(
                    sql.Identifier(schema), sql.Identifier(name)
                ),
                (timedelta(hours=policy.staging_hours),),
            ).rowcount
        transfer.rows_changed = quarantine_deleted + staging_deleted
        transfer.details = {
            "quarantine_days": policy.quarantine_days,
            "staging_hours": policy.staging_hours,
            "quarantine_deleted": quarantine_deleted,
            "staging_deleted": staging_deleted,
        }
        ledger.append(conn, transfer, "success")
    return RetentionResult(quarantine_deleted, staging_deleted, str(transfer.transfer_id))
