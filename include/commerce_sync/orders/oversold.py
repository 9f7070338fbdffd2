"""Oversold order lines: listed for the operator, alerted once through the notifiers.

A line is oversold when it was reserved with fewer units left than it sold (two channels sold the last
unit between two imports). The quantity push already lists 0 everywhere; what is left is a human
decision per order (cancel it on the marketplace, or source the unit), so each line is alerted once
(``oversold_alerted_at``) and stays listed until it is resolved: its order cancelled (the reservation is
released) or the operator marks it resolved (``commerce-sync orders --resolve CHANNEL:ORDER``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from commerce_sync.db import connect
from commerce_sync.notify import alert

RUNBOOK = (
    "Oversold lines: decide per order: cancel it on the marketplace (the next import releases the units) "
    "or source the missing units; then `commerce-sync orders --resolve CHANNEL:ORDER_ID`. 0 is already "
    "listed on every channel for these SKUs."
)

_OPEN = """
SELECT r.channel, r.order_id, r.line_id, r.sku, r.quantity, r.oversold, r.available_at_reservation, r.created_at,
       r.oversold_alerted_at
FROM hub.stock_reservation AS r
WHERE r.oversold > 0 AND r.oversold_resolved_at IS NULL AND r.state <> 'released'
ORDER BY r.created_at, r.channel, r.order_id, r.line_id
"""


@dataclass(frozen=True)
class Oversold:
    channel: str
    order_id: str
    line_id: str
    sku: str
    quantity: int
    oversold: int
    available: int | None
    reserved_at: datetime
    alerted_at: datetime | None

    def describe(self) -> str:
        return (
            f"{self.channel} order {self.order_id} line {self.line_id}: SKU {self.sku} sold {self.quantity}, "
            f"{self.oversold} not in stock"
        )


def open_oversold(dsn: str) -> list[Oversold]:
    """Oversold lines not resolved yet (oldest first)."""
    with connect(dsn) as conn:
        return [Oversold(*row) for row in conn.execute(_OPEN).fetchall()]


def alert_oversold(dsn: str) -> list[Oversold]:
    """Send one alert for the open oversold lines not alerted yet, and mark them; return them."""
    with connect(dsn) as conn:
        fresh = [Oversold(*row) for row in conn.execute(_OPEN).fetchall() if row[8] is None]
        if not fresh:
            return []
        alert(
            f"commerce-sync: {len(fresh)} oversold order line(s)",
            "\n".join(line.describe() for line in fresh),
            runbook=RUNBOOK,
            details={"lines": [f"{o.channel}:{o.order_id}:{o.line_id}" for o in fresh]},
        )
        conn.execute(
            "UPDATE hub.stock_reservation SET oversold_alerted_at = now() "
            "WHERE (channel, order_id, line_id) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))",
            ([o.channel for o in fresh], [o.order_id for o in fresh], [o.line_id for o in fresh]),
        )
    return fresh


def resolve(dsn: str, key: str) -> int:
    """Mark the oversold lines of order ``CHANNEL:ORDER_ID`` resolved; return how many were open."""
    channel, _, order_id = key.partition(":")
    with connect(dsn) as conn:
        return conn.execute(
            "UPDATE hub.stock_reservation SET oversold_resolved_at = now() "
            "WHERE channel = %s AND order_id = %s AND oversold > 0 AND oversold_resolved_at IS NULL",
            (channel, order_id),
        ).rowcount
