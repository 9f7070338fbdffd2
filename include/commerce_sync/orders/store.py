"""Store one batch of marketplace orders: orders, lines, reservations, oversold lines and the cursor.

:func:`store_batch` runs in the caller's transaction and writes, set-based:

1. the orders that are new or changed (status, marketplace status or revision). A snapshot older than
   the stored one (``updated_at`` before the stored time) and a cancelled order coming back are ignored
   (counted as ``stale``): a replayed event or an overlapping page changes nothing;
2. their lines, with the SKU resolved from the line's seller SKU or, failing that, the channel's listing
   (offer id → SKU); a line whose SKU cannot be resolved is stored, quarantined and reserves nothing;
3. reservations: a new line of an order that is not cancelled holds its units (``held``); a cancelled
   order releases them. Reservations of all channels are serialised (one advisory lock), so two
   channels that sold the last unit in the same minute see each other: the later line records the
   units that were not there as ``oversold``. Order: when the marketplace says the order was placed;
4. ``audit.change`` rows per line (dataset ``order``: the order status and the reservation, before
   and after), counted and digested into the ledger row the caller appends;
5. the channel's cursor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from commerce_sync.audit import changes, ledger
from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch

DATASET = "order"
RESERVATION_LOCK = "commerce_sync:stock_reservation"
_MAX_ID = 200
_MAX_QUANTITY = 1_000_000

_TEMP_TABLES = """
CREATE TEMP TABLE in_order (
    order_id text PRIMARY KEY, status text NOT NULL, marketplace_status text NOT NULL, revision text,
    updated_at timestamptz, ordered_at timestamptz
) ON COMMIT DROP;
CREATE TEMP TABLE in_line (
    order_id text NOT NULL, line_id text NOT NULL, sku text, offer_id text, quantity integer NOT NULL,
    unit_price numeric(14, 2), currency text, PRIMARY KEY (order_id, line_id)
) ON COMMIT DROP;
CREATE TEMP TABLE line_event (
    order_id text NOT NULL, line_id text NOT NULL, sku text NOT NULL, field text NOT NULL,
    old_value text, new_value text, source_ref jsonb NOT NULL
) ON COMMIT DROP
"""

# Orders that are new or changed, with what the hub had before.
_CHANGED = """
CREATE TEMP TABLE chg ON COMMIT DROP AS
SELECT i.order_id, i.status, i.marketplace_status, i.revision, i.updated_at, i.ordered_at,
       s.status AS old_status, s.order_id IS NULL AS is_new
FROM in_order AS i
LEFT JOIN hub.sales_order AS s ON s.channel = %(channel)s AND s.order_id = i.order_id
WHERE s.order_id IS NULL
   OR ((i.status, i.marketplace_status, i.revision) IS DISTINCT FROM (s.status, s.marketplace_status, s.revision)
       AND (i.updated_at IS NULL OR s.marketplace_updated_at IS NULL OR i.updated_at >= s.marketplace_updated_at)
       AND NOT (s.status = 'cancelled' AND i.status <> 'cancelled'))
"""

_STALE = """
SELECT count(*) FROM in_order AS i
JOIN hub.sales_order AS s ON s.channel = %(channel)s AND s.order_id = i.order_id
WHERE (i.status, i.marketplace_status, i.revision) IS DISTINCT FROM (s.status, s.marketplace_status, s.revision)
  AND NOT EXISTS (SELECT 1 FROM chg WHERE chg.order_id = i.order_id)
"""

_UPSERT_ORDERS = """
INSERT INTO hub.sales_order AS s (channel, order_id, status, marketplace_status, revision, marketplace_updated_at,
                                  ordered_at, transfer_id, erp_state)
SELECT %(channel)s, c.order_id, c.status, c.marketplace_status, c.revision, c.updated_at, c.ordered_at,
       %(transfer_id)s, CASE WHEN c.status = 'cancelled' THEN 'not_needed' ELSE 'pending' END
FROM chg AS c
ON CONFLICT (channel, order_id) DO UPDATE
SET status = EXCLUDED.status, marketplace_status = EXCLUDED.marketplace_status, revision = EXCLUDED.revision,
    marketplace_updated_at = coalesce(EXCLUDED.marketplace_updated_at, s.marketplace_updated_at),
    updated_at = now(), transfer_id = EXCLUDED.transfer_id,
    erp_state = CASE WHEN EXCLUDED.status <> 'cancelled' THEN s.erp_state
                     WHEN s.erp_state = 'pending' THEN 'not_needed'
                     WHEN s.erp_state = 'handed' THEN 'cancel_pending'
                     ELSE s.erp_state END
"""

# Lines of the changed orders, with the SKU resolved (seller SKU known to the hub, else the listing).
_LINES = """
CREATE TEMP TABLE chg_line ON COMMIT DROP AS
SELECT l.order_id, l.line_id, coalesce(p.sku, lst.sku) AS sku, l.sku AS reported_sku, l.offer_id, l.quantity,
       l.unit_price, l.currency, c.status, c.old_status, c.marketplace_status, c.revision, c.ordered_at
FROM in_line AS l
JOIN chg AS c ON c.order_id = l.order_id
LEFT JOIN hub.product AS p ON p.sku = l.sku
LEFT JOIN hub.channel_listing AS lst ON lst.channel = %(channel)s AND lst.offer_id = l.offer_id AND p.sku IS NULL
"""

_UPSERT_LINES = """
INSERT INTO hub.order_line AS ol (channel, order_id, line_id, sku, offer_id, quantity, unit_price, currency)
SELECT %(channel)s, order_id, line_id, sku, offer_id, quantity, unit_price, currency FROM chg_line
ON CONFLICT (channel, order_id, line_id) DO UPDATE
SET sku = coalesce(ol.sku, EXCLUDED.sku), offer_id = coalesce(EXCLUDED.offer_id, ol.offer_id),
    quantity = EXCLUDED.quantity, unit_price = coalesce(EXCLUDED.unit_price, ol.unit_price),
    currency = coalesce(EXCLUDED.currency, ol.currency)
RETURNING ol.order_id, ol.line_id, ol.sku, ol.offer_id, (xmax = 0) AS inserted
"""

_STATUS_EVENTS = """
INSERT INTO line_event (order_id, line_id, sku, field, old_value, new_value, source_ref)
SELECT order_id, line_id, coalesce(sku, reported_sku, 'offer:' || offer_id, 'line:' || line_id), 'order_status',
       old_status, status,
       jsonb_build_object('order_id', order_id, 'line_id', line_id, 'marketplace_status', marketplace_status,
                          'revision', revision, 'quantity', quantity)
FROM chg_line
"""

_RELEASE = """
WITH released AS (
    UPDATE hub.stock_reservation AS r
    SET state = 'released', released_at = now(), updated_at = now(), transfer_id = %(transfer_id)s
    FROM chg AS c, hub.stock_reservation AS before
    WHERE c.status = 'cancelled' AND r.channel = %(channel)s AND r.order_id = c.order_id AND r.state <> 'released'
      AND before.channel = r.channel AND before.order_id = r.order_id AND before.line_id = r.line_id
    RETURNING r.order_id, r.line_id, r.sku, r.quantity, before.state AS old_state
)
INSERT INTO line_event (order_id, line_id, sku, field, old_value, new_value, source_ref)
SELECT order_id, line_id, sku, 'reservation', old_state || ' ' || quantity, 'released ' || quantity,
       jsonb_build_object('order_id', order_id, 'line_id', line_id)
FROM released
"""

# A held line whose quantity the buyer changed (BUYER_MODIFIED) holds the new quantity.
_REQUANTIFY = """
WITH changed AS (
    UPDATE hub.stock_reservation AS r
    SET quantity = cl.quantity, oversold = least(r.oversold, cl.quantity), updated_at = now(),
        transfer_id = %(transfer_id)s
    FROM chg_line AS cl, hub.stock_reservation AS before
    WHERE cl.status <> 'cancelled' AND r.channel = %(channel)s AND r.order_id = cl.order_id
      AND r.line_id = cl.line_id AND r.state = 'held' AND r.quantity <> cl.quantity
      AND before.channel = r.channel AND before.order_id = r.order_id AND before.line_id = r.line_id
    RETURNING r.order_id, r.line_id, r.sku, r.quantity, before.quantity AS old_quantity
)
INSERT INTO line_event (order_id, line_id, sku, field, old_value, new_value, source_ref)
SELECT order_id, line_id, sku, 'reservation', 'held ' || old_quantity, 'held ' || quantity,
       jsonb_build_object('order_id', order_id, 'line_id', line_id)
FROM changed
"""

# New lines of live orders hold their units. What was there before them: own stock - ERP reserved +
# the chosen supplier's stock - what the hub already holds (hub.reservation_outstanding); lines beyond
# it, in the order they were placed, are oversold.
_RESERVE = """
WITH new_lines AS (
    SELECT cl.* FROM chg_line AS cl
    WHERE cl.status <> 'cancelled' AND cl.sku IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM hub.stock_reservation AS r
                      WHERE r.channel = %(channel)s AND r.order_id = cl.order_id AND r.line_id = cl.line_id)
), available AS (
    SELECT n.sku,
           coalesce((SELECT sum(st.quantity - st.reserved) FROM hub.stock AS st WHERE st.sku = n.sku), 0)
           + coalesce((SELECT ss.chosen_quantity FROM hub.sku_supply AS ss WHERE ss.sku = n.sku), 0)
           - coalesce((SELECT ro.quantity FROM hub.reservation_outstanding AS ro WHERE ro.sku = n.sku), 0)
             AS available
    FROM (SELECT DISTINCT sku FROM new_lines) AS n
), ranked AS (
    SELECT nl.order_id, nl.line_id, nl.sku, nl.quantity, a.available,
           sum(nl.quantity) OVER (PARTITION BY nl.sku ORDER BY nl.ordered_at NULLS LAST, nl.order_id, nl.line_id)
             AS running
    FROM new_lines AS nl JOIN available AS a ON a.sku = nl.sku
), reserved AS (
    INSERT INTO hub.stock_reservation (channel, order_id, line_id, sku, quantity, state, oversold,
                                       available_at_reservation, transfer_id)
    SELECT %(channel)s, order_id, line_id, sku, quantity, 'held',
           least(quantity, greatest(0, running - greatest(available, 0)))::integer,
           (available - (running - quantity))::integer, %(transfer_id)s
    FROM ranked
    RETURNING order_id, line_id, sku, quantity, oversold, available_at_reservation
)
INSERT INTO line_event (order_id, line_id, sku, field, old_value, new_value, source_ref)
SELECT order_id, line_id, sku, 'reservation', NULL, 'held ' || quantity,
       jsonb_build_object('order_id', order_id, 'line_id', line_id, 'available', available_at_reservation,
                          'oversold', oversold)
FROM reserved
"""

_RECORD_CHANGES = """
INSERT INTO audit.change (transfer_id, dataset, sku, channel, field, old_value, new_value, source_ref)
SELECT %(transfer_id)s, 'order', sku, %(channel)s, field, old_value, new_value, source_ref
FROM line_event ORDER BY order_id, line_id, field
"""

_COUNTS = """
SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE NOT is_new),
       count(*) FILTER (WHERE status = 'cancelled' AND old_status IS DISTINCT FROM 'cancelled'),
       (SELECT count(*) FROM line_event WHERE field = 'reservation' AND old_value IS NULL),
       (SELECT count(*) FROM line_event WHERE field = 'reservation' AND new_value LIKE 'released %%')
FROM chg
"""

_OVERSOLD = """
SELECT r.order_id, r.line_id, r.sku, r.quantity, r.oversold, r.available_at_reservation
FROM hub.stock_reservation AS r
WHERE r.channel = %(channel)s AND r.transfer_id = %(transfer_id)s AND r.oversold > 0 AND r.state = 'held'
ORDER BY r.sku, r.order_id, r.line_id
"""

_QUARANTINE = """
INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, expectation, column_name, observed_value,
                            reason, raw)
SELECT %(dataset)s, %(source)s, %(transfer_id)s, x.order_id || ':' || x.line_id, %(expectation)s, %(column)s,
       x.reported, x.reason, x.raw
FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(order_id text, line_id text, reported text, reason text, raw jsonb)
"""

_SAVE_CURSOR = """
INSERT INTO hub.order_cursor (channel, cursor, transfer_id) VALUES (%(channel)s, %(cursor)s, %(transfer_id)s)
ON CONFLICT (channel) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now(), transfer_id = EXCLUDED.transfer_id
"""


@dataclass(frozen=True)
class OversoldLine:
    """A line whose units were not all there when it was reserved."""

    channel: str
    order_id: str
    line_id: str
    sku: str
    quantity: int
    oversold: int
    available: int | None

    def describe(self) -> str:
        return (
            f"{self.channel} order {self.order_id} line {self.line_id}: SKU {self.sku} sold {self.quantity}, "
            f"{self.oversold} more than the hub had ({self.available if self.available is not None else '?'} left)"
        )


@dataclass
class BatchResult:
    """What one stored batch changed."""

    orders_read: int = 0
    new_orders: int = 0
    changed_orders: int = 0
    cancelled_orders: int = 0
    stale: int = 0
    lines_reserved: int = 0
    lines_released: int = 0
    rejected: int = 0
    unresolved_lines: int = 0
    oversold: list[OversoldLine] = field(default_factory=list)
    touched_skus: set[str] = field(default_factory=set)
    """SKUs whose units this channel's orders took or gave back: the marketplace changed its own quantity."""

    @property
    def changed(self) -> int:
        return self.new_orders + self.changed_orders

    def add(self, other: BatchResult) -> None:
        for name in (
            "orders_read",
            "new_orders",
            "changed_orders",
            "cancelled_orders",
            "stale",
            "lines_reserved",
            "lines_released",
            "rejected",
            "unresolved_lines",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.oversold.extend(other.oversold)
        self.touched_skus |= other.touched_skus


def order_problem(order: MarketplaceOrder) -> str | None:
    """Why the hub cannot store ``order`` as reported (None: it can)."""
    if not isinstance(order.order_id, str) or not order.order_id.strip() or len(order.order_id) > _MAX_ID:
        return f"order id {order.order_id!r} is empty or longer than {_MAX_ID} characters"
    seen: set[str] = set()
    for line in order.lines:
        if not isinstance(line.line_id, str) or not line.line_id.strip() or len(line.line_id) > _MAX_ID:
            return f"line id {line.line_id!r} is empty or longer than {_MAX_ID} characters"
        if line.line_id in seen:
            return f"line {line.line_id} appears twice"
        seen.add(line.line_id)
        if (
            isinstance(line.quantity, bool)
            or not isinstance(line.quantity, int)
            or not 0 < line.quantity <= _MAX_QUANTITY
        ):
            return f"line {line.line_id}: quantity {line.quantity!r} is not a whole number from 1 to {_MAX_QUANTITY}"
        if line.sku is None and line.offer_id is None:
            return f"line {line.line_id} names neither a SKU nor an offer id"
    if not order.lines and order.status != "cancelled":
        return "the order has no line items"
    return None


def _latest(orders: Sequence[MarketplaceOrder]) -> list[MarketplaceOrder]:
    """One snapshot per order id: the newest (a batch may carry an order twice)."""
    latest: dict[str, MarketplaceOrder] = {}
    for order in orders:
        known = latest.get(order.order_id)
        if (
            known is None
            or (order.updated_at or known.updated_at) is None
            or (known.updated_at is not None and order.updated_at is not None and order.updated_at >= known.updated_at)
        ):
            latest[order.order_id] = order
    return list(latest.values())


def _quarantine_orders(
    conn: psycopg.Connection, channel: str, transfer_id: str, rejected: list[tuple[MarketplaceOrder, str]]
) -> None:
    rows = [
        {
            "order_id": str(order.order_id)[:_MAX_ID],
            "line_id": "*",
            "reported": order.marketplace_status,
            "reason": f"{channel} order {order.order_id}: {problem}",
            "raw": {
                "status": order.status,
                "lines": [
                    {
                        "line_id": str(line.line_id),
                        "sku": line.sku,
                        "offer_id": line.offer_id,
                        "quantity": str(line.quantity),
                    }
                    for line in order.lines
                ],
            },
        }
        for order, problem in rejected
    ]
    conn.execute(
        _QUARANTINE,
        {
            "dataset": "order",
            "expectation": "order_well_formed",
            "column": None,
            "source": f"channel:{channel}",
            "transfer_id": transfer_id,
            "rows": json.dumps(rows, default=str),
        },
    )


def store_batch(conn: psycopg.Connection, channel: str, batch: OrderBatch, transfer: ledger.Transfer) -> BatchResult:
    """Store ``batch`` for ``channel`` in the caller's transaction (see the module docs).

    Sets the transfer's counts and change digest; the caller appends the ledger row and commits.
    """
    tid = str(transfer.transfer_id)
    params: dict[str, Any] = {"channel": channel, "transfer_id": tid}
    result = BatchResult(orders_read=len(batch.orders))
    good: list[MarketplaceOrder] = []
    rejected: list[tuple[MarketplaceOrder, str]] = []
    for order in _latest(batch.orders):
        problem = order_problem(order)
        if problem is None:
            good.append(order)
        else:
            rejected.append((order, problem))
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (RESERVATION_LOCK,))
    conn.execute(_TEMP_TABLES)
    with conn.cursor() as cur:
        with cur.copy(
            "COPY in_order (order_id, status, marketplace_status, revision, updated_at, ordered_at) FROM STDIN"
        ) as copy:
            for order in good:
                copy.write_row(
                    (
                        order.order_id,
                        order.status,
                        order.marketplace_status[:200],
                        order.revision,
                        order.updated_at,
                        order.created_at,
                    )
                )
        with cur.copy(
            "COPY in_line (order_id, line_id, sku, offer_id, quantity, unit_price, currency) FROM STDIN"
        ) as copy:
            for order in good:
                for line in order.lines:
                    copy.write_row(
                        (
                            order.order_id,
                            line.line_id,
                            line.sku,
                            line.offer_id,
                            line.quantity,
                            line.unit_price,
                            line.currency,
                        )
                    )
    # The statements from here on depend on each other only inside the database: they go in one pipeline
    # (one round trip instead of ~15; each waited ~1-2 ms on the server and the GIL), results read after.
    with conn.pipeline():
        conn.execute(_CHANGED, params)
        stale_rows = conn.execute(_STALE, params)
        conn.execute(_UPSERT_ORDERS, params)
        conn.execute(_LINES, params)
        line_rows = conn.execute(_UPSERT_LINES, params)
        if rejected:
            _quarantine_orders(conn, channel, tid, rejected)
        conn.execute(_STATUS_EVENTS)
        conn.execute(_RELEASE, params)
        conn.execute(_REQUANTIFY, params)
        conn.execute(_RESERVE, params)
        conn.execute(_RECORD_CHANGES, params)
        count_rows = conn.execute(_COUNTS)
        oversold_rows = conn.execute(_OVERSOLD, params)
        touched_rows = conn.execute("SELECT DISTINCT sku FROM line_event WHERE field = 'reservation'")
        conn.execute(_SAVE_CURSOR, {**params, "cursor": batch.cursor})
    stale = stale_rows.fetchone()
    result.stale = int(stale[0]) if stale else 0
    unresolved = [
        {
            "order_id": order_id,
            "line_id": line_id,
            "reported": offer_id,
            "reason": f"{channel} order {order_id} line {line_id}: neither the line's SKU nor offer id {offer_id} "
            f"is known to the hub; the line reserves nothing until the listing is synced (sync_listings) "
            f"or the SKU is in the ERP",
            "raw": {"offer_id": offer_id},
        }
        for order_id, line_id, sku, offer_id, inserted in line_rows.fetchall()
        if sku is None and inserted
    ]
    if unresolved:
        conn.execute(
            _QUARANTINE,
            {
                "dataset": "order_line",
                "expectation": "sku_resolvable",
                "column": "sku",
                "source": f"channel:{channel}",
                "transfer_id": tid,
                "rows": json.dumps(unresolved, default=str),
            },
        )
    counts = count_rows.fetchone()
    assert counts is not None
    result.new_orders, result.changed_orders, result.cancelled_orders = int(counts[0]), int(counts[1]), int(counts[2])
    result.lines_reserved, result.lines_released = int(counts[3]), int(counts[4])
    result.rejected, result.unresolved_lines = len(rejected), len(unresolved)
    result.oversold = [OversoldLine(channel, *row) for row in oversold_rows.fetchall()]
    result.touched_skus = {row[0] for row in touched_rows.fetchall()}
    changes.summarise(conn, transfer)
    transfer.rows_read += result.orders_read
    transfer.rows_written += result.changed
    transfer.rows_changed += result.changed
    transfer.rows_rejected += result.rejected + result.unresolved_lines
    return result
