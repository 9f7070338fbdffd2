"""Row-level changes (``audit.change``): before/after values per SKU and field.

Writers insert their change rows set-based, in the same transaction as the data change, then call
:func:`summarise` before :func:`commerce_sync.audit.ledger.append` so the ledger row carries the
count and a digest of exactly those rows. The digest is computed in SQL over a canonical JSON
array per row, ordered bytewise (``COLLATE "C"``), so it does not depend on insertion order,
``change_id`` or the server's locale.
"""

from __future__ import annotations

import psycopg

from commerce_sync.audit import ledger

# The columns a change row is identified by in the digest (not change_id / recorded_at).
_ROW_TEXT = (
    "jsonb_build_array(c.dataset, c.sku, c.channel, c.supplier, c.field, c.old_value, c.new_value, "
    "c.rule_id, c.rule_version, c.source_ref)::text"
)

_SUMMARY = f"""
SELECT count(*),
       encode(sha256(convert_to(coalesce(string_agg(r.row_text, E'\\n' ORDER BY r.row_text COLLATE "C"), ''),
                                'UTF8')), 'hex')
FROM (SELECT {_ROW_TEXT} AS row_text FROM audit.change AS c WHERE c.transfer_id = %s) AS r
"""


def change_digest(conn: psycopg.Connection, transfer_id: str) -> tuple[int, str]:
    """Count and sha256 of the change rows of ``transfer_id`` (as visible in this transaction)."""
    row = conn.execute(_SUMMARY, (transfer_id,)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def summarise(conn: psycopg.Connection, transfer: ledger.Transfer) -> int:
    """Set ``transfer.changes_count`` / ``changes_sha256`` from its change rows; return the count."""
    count, digest = change_digest(conn, str(transfer.transfer_id))
    transfer.changes_count = count
    transfer.changes_sha256 = digest
    return count
