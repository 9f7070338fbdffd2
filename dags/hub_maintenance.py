"""
### Hub maintenance: schema migrations and the daily ledger check

`migrate_hub` applies pending SQL migrations (idempotent; refuses a migration file edited after it
was applied). `verify_ledger` walks the whole hash chain of `audit.transfer` (links, hashes and each
row's MAC keyed with the ledger key), recomputes every transfer's change count and digest from
`audit.change`, checks the signed exported heads, and fails naming the first problem (seq, transfer,
expected/found) if any row was altered, removed, forged or appended without the key; it reports how
many rows are not yet anchored by an exported head and keeps `audit.change`'s monthly partitions
two months ahead. `export_ledger_head` then writes the verified chain head, signed with
HMAC-SHA256, to `COMMERCE_SYNC_LEDGER_HEADS_DIR` (default `<data dir>/ledger-heads`), so that even a
superuser who rewrites the chain and recomputes every hash is caught by
`commerce-sync ledger verify --heads-dir DIR`. The signing key comes from the environment variable
`COMMERCE_SYNC_LEDGER_KEY` or the Airflow Variable `commerce_sync_ledger_key`. `apply_retention`
deletes staging leftovers older than `COMMERCE_SYNC_STAGING_RETENTION_HOURS` (default 24) and quarantine
rows resolved more than `COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS` ago (default 365; `keep` = never),
settled outbox rows older than `COMMERCE_SYNC_OUTBOX_RETENTION_DAYS` (default 400) that a newer sent
value of the same channel, SKU and field overtook (the newest sent value is kept whatever its age:
read-back compares against it), and webhook delivery ids older than
`COMMERCE_SYNC_WEBHOOK_RETENTION_DAYS` (default 30); open quarantine rows, pending outbox rows and the
ledger are never deleted. `check_hub_catalog` runs the hub catalog suite
(GX on PostgreSQL, evidence in the ledger) over the whole catalog every day: pricing runs it itself only
for changes above the fast-path size (`COMMERCE_SYNC_FAST_PATH_MAX_SKUS`, default 1000 SKUs).

**Runbook**
- *verify_ledger failed*: treat as a security incident. Do not "fix" the ledger; preserve the database,
  compare with exported chain heads, and escalate. The message names the first broken sequence number.
  "no ledger key" instead: set `COMMERCE_SYNC_LEDGER_KEY` (or the Variable) as below, then clear the task.
- *migrate_hub failed, "changed after it was applied"*: someone edited an applied migration; restore the
  file from version control and add a new migration instead.
- *export_ledger_head skipped, "no ledger signing key"*: the chain is not protected against a superuser
  rewrite until heads are exported. Set `COMMERCE_SYNC_LEDGER_KEY` in the workers'
  environment or the Variable `commerce_sync_ledger_key` (secrets backend), then clear the task.
  Keep the heads directory on storage the database administrators cannot write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import (
    DEFAULT_ARGS,
    START_DATE,
    check_hub_catalog_task,
    hub_dsn,
    operator_errors,
    run_context,
)

AUDIT_TRANSFER = assets.hub_table("transfer", schema="audit")
AUDIT_CHANGE = assets.hub_table("change", schema="audit")


def _heads_dir() -> Path:
    """Where signed ledger heads are kept: ``COMMERCE_SYNC_LEDGER_HEADS_DIR``, else ``<data dir>/ledger-heads``."""
    from commerce_sync.audit.heads import HEADS_DIR_ENV
    from commerce_sync.settings import data_dir

    return Path(os.environ.get(HEADS_DIR_ENV) or data_dir() / "ledger-heads")


@dag(
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "audit", "maintenance"],
    doc_md=__doc__,
)
def hub_maintenance() -> None:
    @task
    def migrate_hub() -> list[str]:
        from commerce_sync.hub.migrate import migrate

        with operator_errors("hub migrations"):
            return migrate(hub_dsn())

    @task(inlets=[AUDIT_TRANSFER], outlets=[AUDIT_CHANGE])
    def verify_ledger() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from commerce_sync.audit.heads import ledger_key, verify_against_heads
        from commerce_sync.db import connect

        with operator_errors("ledger verification"):
            key = ledger_key()
        with connect(hub_dsn()) as conn:
            result = verify_against_heads(conn, _heads_dir(), key)
        if not result.ok:
            chain = result.chain
            problems = "; ".join(f"{p.file}: {p.problem}" for p in result.problems)
            raise AirflowFailException(
                f"audit ledger broken: {problems} ({chain.rows_checked if chain else 0} rows checked). "
                "Do not modify the ledger; escalate (see runbook)."
            )
        with connect(hub_dsn(), autocommit=True) as conn:
            conn.execute("SELECT audit.ensure_change_partitions(2)")
        return result.as_dict()

    @task(inlets=[AUDIT_TRANSFER])
    def export_ledger_head() -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from commerce_sync.audit.heads import LedgerKeyMissing, export_head, ledger_key
        from commerce_sync.db import connect

        target = _heads_dir()
        try:
            key = ledger_key()
        except LedgerKeyMissing as exc:
            # Skipped, not failed: a development setup without a key still runs; the skip is visible.
            raise AirflowSkipException(f"ledger head NOT exported: {exc}") from exc
        with connect(hub_dsn()) as conn:
            if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM audit.transfer)").fetchone() == (True,):
                raise AirflowSkipException("the audit ledger is empty; no head to export yet")
            with operator_errors("ledger head export"):
                return str(export_head(conn, target, key))

    @task(outlets=[assets.HUB_QUARANTINE, assets.HUB_SUPPLIER_PRICE_CHANGE, AUDIT_TRANSFER])
    def apply_retention() -> dict[str, Any]:
        from dataclasses import asdict

        from commerce_sync.hub.retention import RetentionPolicy
        from commerce_sync.hub.retention import apply_retention as apply
        from commerce_sync.lineage import report_transfer

        with operator_errors("hub retention"):
            result = apply(hub_dsn(), RetentionPolicy.from_env(), run_context())
        report_transfer(result.transfer_id)
        return asdict(result)

    @task(inlets=[assets.HUB_PRODUCT, assets.HUB_SKU_SUPPLY])
    def check_hub_catalog() -> dict[str, Any]:
        """The whole-catalog suite, daily: pricing runs it only for changes above the fast-path size."""
        return check_hub_catalog_task()

    migrated = migrate_hub()
    migrated >> check_hub_catalog()
    verified = migrated >> verify_ledger()
    verified >> export_ledger_head()
    verified >> apply_retention()


hub_maintenance()
