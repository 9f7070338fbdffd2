"""
### Hub maintenance: schema migrations and the daily ledger check

`migrate_hub` applies pending SQL migrations (idempotent; refuses a migration file edited after it
was applied). `verify_ledger` walks the whole hash chain of `audit.transfer` and fails, naming the
first broken row, if any row was altered or removed.

**Runbook**
- *verify_ledger failed*: treat as a security incident. Do not "fix" the ledger; preserve the database,
  compare with exported chain heads, and escalate. The message names the first broken sequence number.
- *migrate_hub failed, "changed after it was applied"*: someone edited an applied migration; restore the
  file from version control and add a new migration instead.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task

from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors


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

    @task
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
        return {"rows_checked": result.rows_checked, "head_seq": result.head_seq, "head_hash": result.head_hash}

    migrate_hub() >> verify_ledger()


hub_maintenance()
