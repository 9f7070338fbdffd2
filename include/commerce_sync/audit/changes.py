"""Row-level changes (``audit.change``): before/after values per SKU and field.

Writers insert their change rows set-based, in the same transaction as the data change, then call
:func:`summarise` before :func:`commerce_sync.audit.ledger.append` so the ledger row carries the
count and a digest of exactly those rows. The digest is computed in SQL over a canonical JSON
array per row, ordered bytewise (``COLLATE "C"``), so it does not depend on insertion order,
``change_id`` or the server's locale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:  # ledger.verify recomputes digests with this module's fragments: no runtime cycle
    from commerce_sync.audit import ledger

# The columns a change row (aliased ``c``) is identified by in the digest (not change_id / recorded_at).
ROW_TEXT = sql.SQL(
    "jsonb_build_array(c.dataset, c.sku, c.channel, c.supplier, c.field, c.old_value, c.new_value, "
    "c.rule_id, c.rule_version, c.source_ref)::text"
)

# Count and digest over a relation ``r`` holding one ``row_text`` (ROW_TEXT) per change row. A writer
# may aggregate the rows its INSERT ... RETURNING gives back instead of reading them again: the values
# returned are the values stored, so the digest is the same (run it under sort_memory). Both are
# psycopg.sql fragments, composed into statements with ``sql.SQL(...).format(...)``.
DIGEST = sql.SQL(
    "count(*), encode(sha256(convert_to(coalesce(string_agg(r.row_text, E'\\n' ORDER BY r.row_text "
    "COLLATE \"C\"), ''), 'UTF8')), 'hex')"
)

_SUMMARY = sql.SQL(
    "SELECT {digest} FROM (SELECT {row_text} AS row_text FROM audit.change AS c WHERE c.transfer_id = %s) AS r"
).format(digest=DIGEST, row_text=ROW_TEXT)


# The digest sorts every row's text (about 400 bytes for a priced offer): at PostgreSQL's default
# work_mem (4 MB) a run of ~8,000 changes already spills that sort to a temporary file. The memory is
# raised for this one statement only (SET LOCAL semantics), never lowered below what the server allows.
_SORT_MEMORY = "64MB"
_RAISE_WORK_MEM = """
SELECT current_setting('work_mem'),
       set_config('work_mem', CASE WHEN pg_size_bytes(current_setting('work_mem')) < pg_size_bytes(%(mem)s)
                                   THEN %(mem)s ELSE current_setting('work_mem') END, true)
"""


@contextmanager
def sort_memory(conn: psycopg.Connection) -> Iterator[None]:
    """Run the statements inside with work_mem raised for a digest's sort, then restore the caller's."""
    setting = conn.execute(_RAISE_WORK_MEM, {"mem": _SORT_MEMORY}).fetchone()
    assert setting is not None
    yield
    # Back to the caller's setting. (A failure inside aborts the transaction, which undoes it too:
    # no statement could run here then.)
    conn.execute("SELECT set_config('work_mem', %s, true)", (setting[0],))


def change_digest(conn: psycopg.Connection, transfer_id: str) -> tuple[int, str]:
    """Count and sha256 of the change rows of ``transfer_id`` (as visible in this transaction)."""
    with sort_memory(conn):
        row = conn.execute(_SUMMARY, (transfer_id,)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def summarise(conn: psycopg.Connection, transfer: ledger.Transfer) -> int:
    """Set ``transfer.changes_count`` / ``changes_sha256`` from its change rows; return the count."""
    count, digest = change_digest(conn, str(transfer.transfer_id))
    transfer.changes_count = count
    transfer.changes_sha256 = digest
    return count
