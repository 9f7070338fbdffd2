"""The auditor's view's database access: read-only queries that return plain data.

Nothing here renders: the functions return dicts (one per row, as read) and small dataclasses,
and :mod:`commerce_sync.audit.view` hands them to its Jinja2 templates. Every connection is
read-only (the server refuses writes) and every query is a SELECT built with ``psycopg.sql``
from fixed identifiers, with values bound.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from commerce_sync.errors import ConfigError

PAGE_SIZE = 50
APPLICATION_NAME = "commerce_sync_audit_view"

TRANSFER_COLUMNS = (
    "seq",
    "transfer_id",
    "dag_id",
    "run_id",
    "task_id",
    "try_number",
    "map_index",
    "source",
    "target",
    "dataset",
    "status",
    "rows_read",
    "rows_written",
    "rows_rejected",
    "rows_changed",
    "payload_sha256",
    "message",
    "started_at",
    "finished_at",
    "prev_hash",
    "hash",
)
QUARANTINE_COLUMNS = (
    "id",
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
    "status",
    "created_at",
    "resolved_at",
    "resolved_transfer_id",
)
FILTER_CHOICE_COLUMNS = ("dag_id", "source", "target")


def hub_dsn() -> str:
    """The hub's DSN: the ``hub_db`` Airflow connection, else ``HUB_DATABASE_URL``."""
    try:
        from commerce_sync.connections import get_connection

        return get_connection("hub_db").postgres_dsn()
    except (ConfigError, ImportError) as exc:
        fallback = os.environ.get("HUB_DATABASE_URL")
        if fallback:
            return fallback
        raise ConfigError(
            "the audit view needs the hub database: define the Airflow connection 'hub_db' "
            "(AIRFLOW_CONN_HUB_DB) or set HUB_DATABASE_URL"
        ) from exc


@contextmanager
def read_only(dsn: str) -> Iterator[psycopg.Connection]:
    """A connection whose transactions are read-only (the server refuses any write)."""
    conn = psycopg.connect(
        dsn,
        application_name=APPLICATION_NAME,
        options="-c default_transaction_read_only=on",
    )
    conn.read_only = True
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@dataclass(frozen=True)
class TransferFilter:
    """Filters of the transfers list; empty fields do not filter."""

    dag_id: str = ""
    source: str = ""
    target: str = ""
    status: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def where(self) -> tuple[sql.Composable, dict[str, Any]]:
        """A WHERE clause (possibly empty) and its bound parameters."""
        clauses: list[sql.Composable] = []
        params: dict[str, Any] = {}
        for name in ("dag_id", "source", "target", "status"):
            value = getattr(self, name)
            if value:
                clauses.append(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)))
                params[name] = value
        if self.date_from is not None:
            clauses.append(sql.SQL("finished_at >= %(date_from)s"))
            params["date_from"] = datetime.combine(self.date_from, datetime.min.time(), UTC)
        if self.date_to is not None:
            clauses.append(sql.SQL("finished_at < %(date_to)s"))
            params["date_to"] = datetime.combine(self.date_to + timedelta(days=1), datetime.min.time(), UTC)
        if not clauses:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params

    def query_params(self) -> dict[str, str]:
        """The filters as URL query parameters (only those set)."""
        values = {
            "dag_id": self.dag_id,
            "source": self.source,
            "target": self.target,
            "status": self.status,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class TransferPage:
    """One page of a list (the transfers, the orders), with what the filter form offers."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int
    choices: dict[str, list[str]] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """Number of pages (at least 1, even when nothing matches)."""
        return max(1, math.ceil(self.total / self.page_size))


@dataclass(frozen=True)
class TransferDetail:
    """One ledger row (``details`` included) and the rows its transfer put in quarantine."""

    row: dict[str, Any]
    quarantine: list[dict[str, Any]]


def _select_transfers(flt: TransferFilter) -> tuple[sql.Composed, dict[str, Any]]:
    where, params = flt.where()
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in TRANSFER_COLUMNS)
    query = sql.SQL("SELECT {}, details FROM audit.transfer{} ORDER BY seq DESC").format(columns, where)
    return query, params


def _paged(
    conn: psycopg.Connection,
    count: sql.Composed,
    select: tuple[sql.Composed, dict[str, Any]],
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``page`` of the ``select`` query and the total ``count`` (same parameters)."""
    query, params = select
    total_row = conn.execute(count, params).fetchone()
    total = int(total_row[0]) if total_row else 0
    paged = query + sql.SQL(" LIMIT %(limit)s OFFSET %(offset)s")
    params = dict(params, limit=page_size, offset=(max(page, 1) - 1) * page_size)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(paged, params).fetchall()
    return rows, total


def _streamed(
    conn: psycopg.Connection, name: str, select: tuple[sql.Composed, dict[str, Any]], itersize: int
) -> Iterator[dict[str, Any]]:
    """Every row of the ``select`` query through the server-side cursor ``name``."""
    query, params = select
    with conn.cursor(name=name, row_factory=dict_row) as cur:
        cur.itersize = itersize
        cur.execute(query, params)
        yield from cur


def list_transfers(
    conn: psycopg.Connection, flt: TransferFilter, page: int = 1, page_size: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int]:
    """One page of transfers (newest first) and the total number matching the filters."""
    count = sql.SQL("SELECT count(*) FROM audit.transfer{}").format(flt.where()[0])
    return _paged(conn, count, _select_transfers(flt), page, page_size)


def iter_transfers(conn: psycopg.Connection, flt: TransferFilter) -> Iterator[dict[str, Any]]:
    """Every transfer matching the filters, newest first, through a server-side cursor."""
    return _streamed(conn, "audit_view_export", _select_transfers(flt), 2000)


def filter_choices(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Distinct values offered in the filter drop-downs."""
    choices: dict[str, list[str]] = {}
    for name in FILTER_CHOICE_COLUMNS:
        query = sql.SQL("SELECT DISTINCT {col} FROM audit.transfer WHERE {col} IS NOT NULL ORDER BY 1").format(
            col=sql.Identifier(name)
        )
        choices[name] = [row[0] for row in conn.execute(query).fetchall()]
    return choices


def transfer_page(conn: psycopg.Connection, flt: TransferFilter, page: int = 1) -> TransferPage:
    """The transfers list page: matching rows of ``page``, their total and the filter choices."""
    rows, total = list_transfers(conn, flt, page)
    return TransferPage(rows=rows, total=total, page=page, page_size=PAGE_SIZE, choices=filter_choices(conn))


def get_transfer(conn: psycopg.Connection, transfer_id: uuid.UUID) -> dict[str, Any] | None:
    """One ledger row, or None."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in TRANSFER_COLUMNS)
    query = sql.SQL("SELECT {}, details FROM audit.transfer WHERE transfer_id = %s").format(columns)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (transfer_id,)).fetchone()


def quarantine_rows(conn: psycopg.Connection, transfer_id: uuid.UUID) -> list[dict[str, Any]]:
    """The rows a transfer put in quarantine, in file order."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in QUARANTINE_COLUMNS)
    query = sql.SQL("SELECT {} FROM hub.quarantine WHERE transfer_id = %s ORDER BY record_no NULLS LAST, id").format(
        columns
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (transfer_id,)).fetchall()


def transfer_detail(conn: psycopg.Connection, transfer_id: uuid.UUID) -> TransferDetail | None:
    """A transfer and its quarantined rows, or None when the ledger has no such transfer."""
    row = get_transfer(conn, transfer_id)
    if row is None:
        return None
    return TransferDetail(row=row, quarantine=quarantine_rows(conn, transfer_id))


def chain_facts(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    """Walk the hash chain (:func:`commerce_sync.audit.ledger.verify`): whether it holds, and the
    facts the verification page lists, in display order."""
    from commerce_sync.audit.ledger import verify

    result = verify(conn)
    return result.ok, {
        "rows checked": result.rows_checked,
        "head seq": result.head_seq,
        "head hash": result.head_hash,
        "first broken seq": result.first_broken_seq,
        "problem": result.problem,
        "verified at": datetime.now(UTC),
    }


# --------------------------------------------------------------------------------------------
# Marketplace orders (issue 18)
# --------------------------------------------------------------------------------------------

ORDER_STATUSES = ("unpaid", "ready", "cancelled")
ERP_STATES = ("pending", "handed", "cancel_pending", "cancelled", "not_needed")
ORDER_COLUMNS = (
    "channel",
    "order_id",
    "status",
    "marketplace_status",
    "ordered_at",
    "first_seen_at",
    "updated_at",
    "units",
    "held_units",
    "taken_over_units",
    "released_units",
    "oversold_units",
    "open_oversold_units",
    "erp_state",
    "erp_key",
    "erp_handed_at",
    "erp_error",
    "lines",
    "transfers",
)

# One row per order: its lines with their reservations (aggregated per order) and every ledger
# transfer that changed it: the imports and hand-offs that wrote its audit.change rows (found through
# the SKU index of audit.change: the rows carry the line's SKU, or offer:/line: when it has none), the
# last import and the last hand-off.
_ORDER_SELECT = """
SELECT o.channel, o.order_id, o.status, o.marketplace_status, o.ordered_at, o.first_seen_at, o.updated_at,
       ln.units, ln.held_units, ln.taken_over_units, ln.released_units, ln.oversold_units, ln.open_oversold_units,
       o.erp_state, o.erp_key, o.erp_handed_at, o.erp_error, ln.lines, tr.transfers
FROM hub.sales_order AS o
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'line_id', l.line_id, 'sku', l.sku, 'offer_id', l.offer_id, 'units', l.quantity,
               'reservation', r.state, 'oversold', r.oversold, 'oversold_resolved_at', r.oversold_resolved_at,
               'erp_booked_at', r.erp_booked_at) ORDER BY l.line_id), '[]'::jsonb) AS lines,
           coalesce(sum(l.quantity), 0)::integer AS units,
           coalesce(sum(r.quantity) FILTER (WHERE r.state = 'held'), 0)::integer AS held_units,
           coalesce(sum(r.quantity) FILTER (WHERE r.state = 'taken_over'), 0)::integer AS taken_over_units,
           coalesce(sum(r.quantity) FILTER (WHERE r.state = 'released'), 0)::integer AS released_units,
           coalesce(sum(r.oversold) FILTER (WHERE r.state <> 'released'), 0)::integer AS oversold_units,
           coalesce(sum(r.oversold) FILTER (WHERE r.state <> 'released' AND r.oversold_resolved_at IS NULL), 0)
               ::integer AS open_oversold_units,
           array_agg(DISTINCT coalesce(l.sku, 'offer:' || l.offer_id, 'line:' || l.line_id)) AS change_skus,
           array_agg(DISTINCT r.transfer_id) FILTER (WHERE r.transfer_id IS NOT NULL) AS reservation_transfers
    FROM hub.order_line AS l
    LEFT JOIN hub.stock_reservation AS r
        ON r.channel = l.channel AND r.order_id = l.order_id AND r.line_id = l.line_id
    WHERE l.channel = o.channel AND l.order_id = o.order_id
) AS ln
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_agg(jsonb_build_object('transfer_id', t.transfer_id, 'seq', t.seq, 'source', t.source,
                                                 'target', t.target, 'status', t.status,
                                                 'finished_at', t.finished_at) ORDER BY t.seq), '[]'::jsonb)
               AS transfers
    FROM audit.transfer AS t
    WHERE t.transfer_id IN (
        SELECT c.transfer_id FROM audit.change AS c
        WHERE c.sku = ANY(ln.change_skus) AND c.dataset = 'order' AND c.channel = o.channel
          AND c.source_ref ->> 'order_id' = o.order_id
        UNION ALL SELECT unnest(ln.reservation_transfers)
        UNION ALL SELECT o.transfer_id
        UNION ALL SELECT o.erp_transfer_id)
) AS tr
"""

_ORDER_OVERSOLD = """EXISTS (
    SELECT 1 FROM hub.stock_reservation AS r
    WHERE r.channel = o.channel AND r.order_id = o.order_id AND r.oversold > 0 AND r.state <> 'released')"""


@dataclass(frozen=True)
class OrderFilter:
    """Filters of the orders list; empty fields do not filter. ``oversold``: only orders with a line
    that sold units the hub did not have (released lines aside; resolved ones included)."""

    channel: str = ""
    status: str = ""
    erp_state: str = ""
    oversold: bool = False

    def where(self) -> tuple[sql.Composable, dict[str, Any]]:
        """A WHERE clause over ``hub.sales_order AS o`` (possibly empty) and its bound parameters."""
        clauses: list[sql.Composable] = []
        params: dict[str, Any] = {}
        for name in ("channel", "status", "erp_state"):
            value = getattr(self, name)
            if value:
                clauses.append(sql.SQL("{} = {}").format(sql.Identifier("o", name), sql.Placeholder(name)))
                params[name] = value
        if self.oversold:
            clauses.append(sql.SQL(_ORDER_OVERSOLD))
        if not clauses:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params

    def query_params(self) -> dict[str, str]:
        """The filters as URL query parameters (only those set)."""
        values = {
            "channel": self.channel,
            "status": self.status,
            "erp_state": self.erp_state,
            "oversold": "1" if self.oversold else "",
        }
        return {k: v for k, v in values.items() if v}


def _select_orders(flt: OrderFilter) -> tuple[sql.Composed, dict[str, Any]]:
    where, params = flt.where()
    query = sql.SQL("{}{} ORDER BY o.first_seen_at DESC, o.channel, o.order_id").format(sql.SQL(_ORDER_SELECT), where)
    return query, params


def list_orders(
    conn: psycopg.Connection, flt: OrderFilter, page: int = 1, page_size: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int]:
    """One page of orders (first seen newest first) and the total number matching the filters."""
    count = sql.SQL("SELECT count(*) FROM hub.sales_order AS o{}").format(flt.where()[0])
    return _paged(conn, count, _select_orders(flt), page, page_size)


def iter_orders(conn: psycopg.Connection, flt: OrderFilter) -> Iterator[dict[str, Any]]:
    """Every order matching the filters, first seen newest first, through a server-side cursor."""
    return _streamed(conn, "audit_view_orders_export", _select_orders(flt), 500)


def order_page(conn: psycopg.Connection, flt: OrderFilter, page: int = 1) -> TransferPage:
    """The orders list page: matching rows of ``page``, their total and the filter choices."""
    rows, total = list_orders(conn, flt, page)
    channels = [row[0] for row in conn.execute("SELECT DISTINCT channel FROM hub.sales_order ORDER BY 1").fetchall()]
    choices = {"channel": channels, "status": list(ORDER_STATUSES), "erp_state": list(ERP_STATES)}
    return TransferPage(rows=rows, total=total, page=page, page_size=PAGE_SIZE, choices=choices)
