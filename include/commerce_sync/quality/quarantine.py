"""Quarantine: rows that failed validation, kept with the failed expectation and the raw values.

Nothing is silently dropped: every failing (row, expectation) pair becomes one ``hub.quarantine``
row. When a later delivery brings the same record key in a valid form, the open rows for that key
are marked ``resolved`` by that transfer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from commerce_sync.quality.suites import RowFailure

# The business key of each staged dataset: staging.<dataset>.<key> is what record_key holds.
RECORD_KEYS: dict[str, str] = {"supplier_offer": "supplier_sku", "erp_product": "sku"}

_COLUMNS = (
    "dataset",
    "source",
    "transfer_id",
    "record_key",
    "record_no",
    "source_line",
    "expectation",
    "column_name",
    "observed_value",
    "reason",
    "raw",
)


def _key_field(dataset: str) -> str:
    try:
        return RECORD_KEYS[dataset]
    except KeyError:
        raise ValueError(f"no record key known for dataset {dataset!r}; add it to RECORD_KEYS") from None


def quarantine(
    conn: psycopg.Connection,
    dataset: str,
    source: str,
    transfer_id: uuid.UUID,
    failures: Sequence[RowFailure],
    raw_rows: Mapping[int, Mapping[str, Any]],
) -> int:
    """Insert one quarantine row per failure with COPY, in the caller's transaction.

    Args:
        conn: Connection whose transaction receives the rows.
        dataset: Dataset name (``supplier_offer``).
        source: The source the rows came from (``supplier:acme``).
        transfer_id: The transfer that delivered them.
        failures: Row failures from a suite.
        raw_rows: The raw staged values by ``record_no`` (must include ``source_line`` and the key).

    Returns:
        The number of rows written.
    """
    key_field = _key_field(dataset)
    copy_sql = sql.SQL("COPY hub.quarantine ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS)
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for failure in failures:
            raw = raw_rows.get(failure.record_no, {})
            key = raw.get(key_field)
            copy.write_row(
                (
                    dataset,
                    source,
                    transfer_id,
                    None if key is None else str(key),
                    failure.record_no,
                    raw.get("source_line"),
                    failure.expectation,
                    failure.column,
                    failure.observed_value,
                    failure.reason,
                    json.dumps(dict(raw), default=str, ensure_ascii=False),
                )
            )
    return len(failures)


def resolve_fixed(conn: psycopg.Connection, dataset: str, source: str, transfer_id: uuid.UUID) -> int:
    """Resolve open quarantine rows whose record key arrived valid in ``transfer_id``.

    "Arrived valid" means: staged by this transfer (``staging.<dataset>``) and not quarantined by
    it. Call inside the merge transaction, before the staging rows are deleted.

    Returns:
        The number of quarantine rows resolved.
    """
    key_field = _key_field(dataset)
    statement = sql.SQL(
        """
        UPDATE hub.quarantine AS q
           SET status = 'resolved', resolved_at = now(), resolved_transfer_id = %(transfer_id)s
         WHERE q.dataset = %(dataset)s
           AND q.source = %(source)s
           AND q.status = 'open'
           AND q.transfer_id <> %(transfer_id)s
           AND q.record_key IN (
                SELECT s.{key} FROM {staging} AS s
                 WHERE s.transfer_id = %(transfer_id)s AND s.{key} IS NOT NULL)
           AND NOT EXISTS (
                SELECT 1 FROM hub.quarantine AS n
                 WHERE n.transfer_id = %(transfer_id)s
                   AND n.dataset = q.dataset
                   AND n.source = q.source
                   AND n.record_key = q.record_key)
        """
    ).format(key=sql.Identifier(key_field), staging=sql.Identifier("staging", dataset))
    cur = conn.execute(statement, {"transfer_id": transfer_id, "dataset": dataset, "source": source})
    return cur.rowcount
