"""Quarantine: rows that failed validation, kept with the failed expectation and the raw values.

Nothing is silently dropped: every failing (row, expectation) pair becomes one ``hub.quarantine``
row (written set-based by :func:`commerce_sync.quality.gate.run_row_checks`). When a later delivery
brings the same record key in a valid form, the open rows for that key are marked ``resolved`` by
that transfer; they are never deleted before retention (status, resolved_at and the resolving
transfer are the history).
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

# The business key of each staged dataset: staging.<dataset>.<key> is what record_key holds.
RECORD_KEYS: dict[str, str] = {"supplier_offer": "supplier_sku", "erp_product": "sku"}


def _key_field(dataset: str) -> str:
    try:
        return RECORD_KEYS[dataset]
    except KeyError:
        raise ValueError(f"no record key known for dataset {dataset!r}; add it to RECORD_KEYS") from None


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
