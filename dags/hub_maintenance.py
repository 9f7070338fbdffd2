"""
### Hub maintenance: schema migrations and the daily ledger check

`migrate_hub` applies pending SQL migrations (idempotent; refuses a migration file edited after it
was applied). `verify_ledger` walks the whole hash chain of `audit.transfer` and fails, naming the
first broken row, if any row was altered or removed; it also keeps `audit.change`'s monthly
partitions two months ahead. `export_ledger_head` then writes the verified chain head, signed with
HMAC-SHA256, to `COMMERCE_SYNC_LEDGER_HEADS_DIR` (default `<data dir>/ledger-heads`), so that even a
superuser who rewrites the chain and recomputes every hash is caught by
`commerce-sync ledger verify --heads-dir DIR`. The signing key comes from the environment variable
`COMMERCE_SYNC_LEDGER_KEY` or the Airflow Variable `commerce_sync_ledger_key`. `apply_retention`
deletes staging leftovers older than `COMMERCE_SYNC_STAGING_RETENTION_HOURS` (default 24) and quarantine
rows resolved more than `COMMERCE_SYNC_QUARANTINE_RETENTION_DAYS` ago (default 365; `keep` = never);
open quarantine rows and the ledger are never deleted.

**Runbook**
- *verify_ledger failed*: treat as a security incident. Do not "fix" the ledger; preserve the database,
  compare with exported chain heads, and escalate. The message names the first broken sequence number.
- *migrate_hub failed, "changed after it was applied"*: someone edited an applied migration; restore the
  file from version control and add a new migration instead.
- *export_ledger_head skipped, "no ledger signing key"*: the chain is not protected against a superuser
  rewrite until heads are exported. Set `COMMERCE_SYNC_LEDGER_KEY` in the workers'
  environment or the Variable `commerce_sync_ledger_key` (secrets backend), then clear the task.
  Keep the heads directory on storage the database administrators cannot write.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context

AUDIT_TRANSFER = assets.hub_table("transfer", schema="audit")
AUDIT_CHANGE = assets.hub_table("change", schema="audit")


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

        from commerce_sync.audit.ledger import verify
        from commerce_sync.db import connect

        with connect(hub_dsn()) as conn:
            result = verify(conn)
        if not result.ok:
            raise AirflowFailException(
                f"audit ledger broken at seq {result.first_broken_seq}: {result.problem} "
                f"({result.rows_checked} rows checked). Do not modify the ledger; escalate (see runbook)."
            )
        with connect(hub_dsn(), autocommit=True) as conn:
            conn.execute("SELECT audit.ensure_change_partitions(2)")
        return {"rows_checked": result.rows_checked, "head_seq": result.head_seq, "head_hash": result.head_hash}

    @task(inlets=[AUDIT_TRANSFER])
    def export_ledger_head() -> str:
        import os
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from commerce_sync.audit.heads import HEADS_DIR_ENV, LedgerKeyMissing, export_head, ledger_key
        from commerce_sync.db import connect
        from commerce_sync.settings import data_dir

        target = Path(os.environ.get(HEADS_DIR_ENV) or data_dir() / "ledger-heads")
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

    verified = migrate_hub() >> verify_ledger()
    verified >> export_ledger_head()
    verified >> apply_retention()


hub_maintenance()
