"""One run per source at a time, and the staging rows of killed runs removed by the next one.

:func:`source_lock` holds a PostgreSQL session advisory lock keyed by the source (``erp``,
``supplier:acme``) on a connection of its own for the whole run. A second run of the same source
(a CLI sync next to the DAG, two ``dags test`` runs: ``max_active_runs`` does not cover those)
logs who holds the lock and waits for it instead of colliding in the merge. The lock goes with the
connection: a run killed with ``kill -9`` releases it the moment its backend sees the socket close.

That connection's ``application_name`` carries the run's transfer id, so ``pg_stat_activity``
tells which transfers are alive. Once it holds the lock, a run deletes the staging rows of every
transfer that is not (a run killed before its own clean-up ran); rows of a live run, which holds
its connection open, are never touched.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

RUN_PREFIX = "commerce_sync run "
STAGING_TABLES = ("staging.erp_product", "staging.supplier_offer")

_HOLDER = """
SELECT l.pid FROM pg_locks AS l
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = %(classid)s::bigint::oid AND l.objid = %(objid)s::bigint::oid
 LIMIT 1
"""
# Transfers whose run still holds its lock connection (in this cluster; ids are unique anyway).
_LIVE = "SELECT substr(application_name, %(from)s) FROM pg_stat_activity WHERE application_name LIKE %(like)s"


def lock_key(source: str) -> int:
    """The advisory lock key of ``source``: 64 bits of its SHA-256, as PostgreSQL's signed bigint."""
    digest = hashlib.sha256(f"commerce_sync source {source}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def live_transfers(conn: psycopg.Connection) -> set[str]:
    """Transfer ids of the runs whose lock connection is open (waiting or holding)."""
    rows = conn.execute(_LIVE, {"from": len(RUN_PREFIX) + 1, "like": RUN_PREFIX + "%"}).fetchall()
    return {str(row[0]) for row in rows}


def remove_dead_staging(conn: psycopg.Connection, tables: tuple[str, ...] = STAGING_TABLES) -> dict[str, int]:
    """Delete staging rows of transfers no live run owns; rows removed per table (only non-zero)."""
    live = sorted(live_transfers(conn))
    removed: dict[str, int] = {}
    for table in tables:
        schema, name = table.split(".")
        deleted = conn.execute(
            sql.SQL("DELETE FROM {}.{} WHERE transfer_id::text <> ALL (%s::text[])").format(
                sql.Identifier(schema), sql.Identifier(name)
            ),
            (live,),
        ).rowcount
        if deleted:
            removed[table] = deleted
    return removed


@contextmanager
def source_lock(
    dsn: str, source: str, transfer_id: uuid.UUID | str, *, staging: tuple[str, ...] = STAGING_TABLES
) -> Iterator[None]:
    """Hold ``source``'s advisory lock for the ``with`` block; first remove dead runs' ``staging`` rows.

    Args:
        dsn: Hub database.
        source: The source the run reads (``erp``, ``supplier:acme``): the lock's key.
        transfer_id: The run's transfer; its staging rows are the only ones a live run may own.
        staging: Staging tables to clear of killed runs' rows once the lock is held.
    """
    key = lock_key(source)
    tid = str(uuid.UUID(str(transfer_id)))
    with psycopg.connect(dsn, autocommit=True, application_name=f"{RUN_PREFIX}{tid}") as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (got and got[0]):
            holder = conn.execute(_HOLDER, {"classid": (key >> 32) & 0xFFFFFFFF, "objid": key & 0xFFFFFFFF}).fetchone()
            log.warning(
                "%s: another run holds the source lock (pid %s); waiting",
                source,
                holder[0] if holder else "unknown",
            )
            started = time.monotonic()
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            log.info("%s: got the source lock after %.1f s", source, time.monotonic() - started)
        removed = remove_dead_staging(conn, staging)
        if removed:
            log.warning(
                "%s: removed staging rows left by killed runs: %s",
                source,
                ", ".join(f"{table} {count:,}" for table, count in removed.items()),
            )
        # Closing the connection releases the lock, whatever happens in the block.
        yield
