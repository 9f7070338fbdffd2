"""The quality gate of a staged batch: row checks in one SQL pass, then the batch breakers.

:func:`run_row_checks` compiles a :class:`~commerce_sync.quality.suites.Suite` into one
``INSERT INTO hub.quarantine ... SELECT`` over the staged batch: every (row, expectation) that
fails becomes a quarantine row with dataset, source, transfer id, record key, record number,
source line, the expectation, the observed value and the reason. Only failing rows leave the
database; a million clean rows cost one scan (see ``bench/quality.py``).

:func:`source_breakers` measures the batch as a whole against ``quality.yaml``: the row count
against the last good batch of the same source (from the ledger) and the share of rejected rows.
The caller records the decision in the ledger and enforces it before anything is merged.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from commerce_sync.audit.ledger import Transfer
from commerce_sync.config import BatchBreakers
from commerce_sync.db import connect
from commerce_sync.quality.breakers import Decision, Measure, Override, decide
from commerce_sync.quality.suites import ExpectationResult, Suite, ValidationOutcome


def compile_row_checks(suite: Suite) -> str:
    """The single SQL statement that quarantines every failing (row, expectation) of a batch.

    Parameters of the statement: ``dataset``, ``source``, ``transfer_id`` and whatever the
    suite's ``typed_select`` and expectations use.
    """
    failing_ids = ", ".join(f"CASE WHEN ({e.failing}) THEN {i} END" for i, e in enumerate(suite.expectations))
    values = ",\n".join(
        f"({i}, '{e.expectation}', '{e.column}', r.{e.column}::text, ({e.reason}))"
        for i, e in enumerate(suite.expectations)
    )
    raw = ", ".join(f"'{c}', r.{c}" for c in suite.raw_columns)
    return f"""
INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, record_no, source_line, expectation,
                            column_name, observed_value, reason, raw)
SELECT %(dataset)s, %(source)s, %(transfer_id)s, r.{suite.key}, r.record_no, r.source_line, e.expectation,
       e.column_name, e.observed_value, e.reason, jsonb_build_object({raw})
  FROM (SELECT r.*, array_remove(ARRAY[{failing_ids}]::integer[], NULL) AS failed_ids
          FROM ({suite.typed_select}) AS r
        OFFSET 0) AS r
 CROSS JOIN LATERAL (VALUES {values}) AS e (id, expectation, column_name, observed_value, reason)
 WHERE cardinality(r.failed_ids) > 0 AND e.id = ANY (r.failed_ids)
"""


_COUNTS = """
SELECT expectation, column_name, count(*) AS failures, count(DISTINCT record_no) AS records
  FROM hub.quarantine
 WHERE transfer_id = %(transfer_id)s AND dataset = %(dataset)s
 GROUP BY expectation, column_name
"""
_QUARANTINED_RECORDS = """
SELECT count(DISTINCT record_no) FROM hub.quarantine WHERE transfer_id = %(transfer_id)s AND dataset = %(dataset)s
"""


def run_row_checks(
    conn: psycopg.Connection,
    suite: Suite,
    *,
    source: str,
    transfer_id: uuid.UUID | str,
    rows_evaluated: int,
    dataset: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> ValidationOutcome:
    """Check every staged row of ``transfer_id`` against ``suite``; quarantine the failures.

    Runs in the caller's transaction (commit it to keep the quarantine rows even when the batch is
    then refused as a whole).

    Args:
        conn: Hub connection.
        suite: The dataset's suite.
        source: Where the batch came from (``supplier:acme``, ``erp``).
        transfer_id: The transfer that staged the batch.
        rows_evaluated: How many rows were staged (for the summary).
        dataset: Quarantine dataset name, if it differs from the suite name.
        params: Extra query parameters the suite needs (e.g. ``decimal_separator``).
    """
    dataset = dataset or suite.name
    query_params = {"dataset": dataset, "source": source, "transfer_id": transfer_id, **(params or {})}
    # Enough memory for the duplicate-key hash to stay off disk at a few million rows (this statement only).
    conn.execute("SET LOCAL work_mem = '256MB'")
    conn.execute(sql.SQL(compile_row_checks(suite)), query_params)
    counts = {(row[0], row[1]): row[2] for row in conn.execute(_COUNTS, query_params)}
    quarantined = conn.execute(_QUARANTINED_RECORDS, query_params).fetchone()
    results = tuple(
        ExpectationResult(e.expectation, e.column, int(counts.get((e.expectation, e.column), 0)), e.kwargs)
        for e in suite.expectations
    ) + tuple(ExpectationResult(name, column, int(counts.get((name, column), 0))) for name, column in suite.streamed)
    return ValidationOutcome(
        suite=suite.name,
        rows_evaluated=rows_evaluated,
        rows_quarantined=int(quarantined[0]) if quarantined else 0,
        results=results,
    )


# ---------------------------------------------------------------- batch breakers
_LAST_GOOD_BATCH = """
SELECT transfer_id, rows_read, finished_at
  FROM audit.transfer
 WHERE source = %(source)s AND dataset = %(dataset)s AND status = 'success' AND rows_read > 0
   AND details @> %(same_kind)s::jsonb
 ORDER BY seq DESC
 LIMIT 1
"""


def last_good_batch(
    conn: psycopg.Connection, source: str, dataset: str, same_kind: Mapping[str, Any] | None = None
) -> tuple[str, int] | None:
    """(transfer id, rows read) of the last successful, non-empty batch of ``source``, or None.

    ``same_kind`` restricts it to ledger rows whose details contain these keys (e.g. only full
    ERP resyncs are comparable with a full resync).
    """
    from psycopg.types.json import Jsonb

    row = conn.execute(
        _LAST_GOOD_BATCH, {"source": source, "dataset": dataset, "same_kind": Jsonb(dict(same_kind or {}))}
    ).fetchone()
    return (str(row[0]), int(row[1])) if row else None


def source_breakers(
    conn: psycopg.Connection,
    limits: BatchBreakers,
    *,
    dataset: str,
    source: str,
    rows_read: int,
    rows_rejected: int,
    override: Override | None,
    compare_row_count: bool = True,
    same_kind: Mapping[str, Any] | None = None,
) -> Decision:
    """Measure a staged, validated batch against the dataset's source-side breakers.

    Breakers (each can be switched off in ``quality.yaml`` with ``null``):

    * ``max_row_drop_percent``: rows in this batch vs the last good batch of the same source;
      only for batches that hold the whole dataset (``compare_row_count``).
    * ``max_rejected_percent``: rows quarantined out of the rows read (batches of at least
      ``rejected_min_rows``: two bad rows of four say little about a feed).
    """
    measures: list[Measure] = []
    if compare_row_count and limits.max_row_drop_percent is not None:
        last = last_good_batch(conn, source, dataset, same_kind)
        if last is not None:
            last_id, last_rows = last
            drop = max(0.0, (last_rows - rows_read) * 100.0 / last_rows)
            measures.append(
                Measure(
                    name="row_count_drop",
                    observed=round(drop, 2),
                    limit=float(limits.max_row_drop_percent),
                    unit="%",
                    detail=f"{rows_read:,} rows now vs {last_rows:,} in the last good batch (transfer {last_id})",
                )
            )
    if limits.max_rejected_percent is not None and rows_read > 0 and rows_read >= limits.rejected_min_rows:
        share = rows_rejected * 100.0 / rows_read
        measures.append(
            Measure(
                name="rejected_share",
                observed=round(share, 2),
                limit=float(limits.max_rejected_percent),
                unit="%",
                detail=f"{rows_rejected:,} of {rows_read:,} rows failed validation and are in hub.quarantine",
            )
        )
    return decide(dataset, source, measures, override)


# ---------------------------------------------------------------- the whole gate
def check_batch(
    dsn: str,
    suite: Suite,
    transfer: Transfer,
    *,
    limits: BatchBreakers,
    override: Override | None,
    docs_dir: Path | None,
    compare_row_count: bool = True,
    same_kind: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    params: Mapping[str, Any] | None = None,
    docs_when_clean: bool = True,
) -> tuple[ValidationOutcome, Decision]:
    """Validate the staged batch of ``transfer``, quarantine failing rows, decide the breakers.

    Fills ``transfer.rows_rejected``/``rows_written`` and ``details.validation``,
    ``details.breakers`` and ``details.data_docs``. Quarantine rows are committed at once (they
    stay on record whatever happens next). The caller must call ``decision.enforce()`` before it
    merges anything.

    Args:
        dsn: Hub database.
        suite: The dataset's suite.
        transfer: The transfer being recorded; ``rows_read`` must be set (rows staged).
        limits: The dataset's breakers for this source (``quality.yaml``).
        override: The operator's override for this run (DAG Param), if any.
        docs_dir: Root of the Data Docs; None renders none (benchmarks).
        compare_row_count: Whether this batch holds the whole dataset of its source (full feed,
            full ERP resync), so its row count is comparable with the last good batch.
        same_kind: Ledger ``details`` a comparable last good batch must contain.
        dataset: Quarantine/ledger dataset name if it differs from the suite name.
        params: Query parameters the suite needs.
        docs_when_clean: Render Data Docs also when no row failed and no breaker tripped. False is the
            fast path of a small change: Great Expectations is not even imported; the row-level
            results are in the ledger either way.
    """
    dataset = dataset or suite.name
    with connect(dsn) as db:
        outcome = run_row_checks(
            db,
            suite,
            source=transfer.source,
            transfer_id=transfer.transfer_id,
            rows_evaluated=transfer.rows_read,
            dataset=dataset,
            params=params,
        )
    transfer.rows_rejected = outcome.rows_quarantined
    transfer.rows_written = transfer.rows_read - outcome.rows_quarantined
    transfer.details["validation"] = outcome.summary()
    with connect(dsn) as db:
        decision = source_breakers(
            db,
            limits,
            dataset=transfer.dataset,
            source=transfer.source,
            rows_read=transfer.rows_read,
            rows_rejected=outcome.rows_quarantined,
            override=override,
            compare_row_count=compare_row_count,
            same_kind=same_kind,
        )
    decision.record(transfer)
    clean = outcome.rows_quarantined == 0 and not decision.tripped
    if docs_dir is not None and not docs_when_clean and clean:
        transfer.details["data_docs"] = None
        transfer.details["data_docs_skipped"] = "fast path: a small batch with no failures"
    elif docs_dir is not None:
        from commerce_sync.quality.evidence import render

        evidence = render(
            dsn,
            suite,
            outcome,
            dataset=dataset,
            source=transfer.source,
            transfer_id=transfer.transfer_id,
            docs_dir=docs_dir,
            decision=decision,
        )
        transfer.details["data_docs"] = evidence.index_relative
    return outcome, decision
