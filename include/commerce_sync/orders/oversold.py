"""Oversold order lines: listed for the operator, alerted once through the notifiers.

A line is oversold when it was reserved with fewer units left than it sold (two channels sold the last
unit between two imports). The quantity push already lists 0 everywhere; what is left is a human
decision per order (cancel it on the marketplace, or source the unit), so each line is alerted once
(``oversold_alerted_at``) and stays listed until it is resolved: its order cancelled (the reservation is
released) or the operator marks it resolved (``commerce-sync orders --resolve CHANNEL:ORDER --reason WHY``; the
decision, who and why, is a ledger transfer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from commerce_sync.audit import ledger
from commerce_sync.db import connect
from commerce_sync.errors import DataError
from commerce_sync.notify import alert

RUNBOOK = (
    "Oversold lines: decide per order: cancel it on the marketplace (the next import releases the units) "
    "or source the missing units; then `commerce-sync orders --resolve CHANNEL:ORDER_ID --reason WHY`. 0 is already "
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


def resolve(dsn: str, key: str, *, by: str, reason: str) -> int:
    """Mark the oversold lines of order ``CHANNEL:ORDER_ID`` resolved; return how many were open.

    The decision is a ledger transfer (source ``operator:<by>``, dataset ``oversold_resolution``) in the
    same transaction, naming the order, its lines, who and why, so an auditor sees who closed an oversell
    and on what grounds. Nothing is written when the order had no open oversold line.

    Raises:
        DataError: ``key`` is not ``CHANNEL:ORDER_ID``, or ``by`` / ``reason`` is empty.
    """
    channel, sep, order_id = key.partition(":")
    if not sep or not channel or not order_id:
        raise DataError(f"{key!r}: expected CHANNEL:ORDER_ID, e.g. allegro:29d1-a")
    if not by.strip() or not reason.strip():
        raise DataError(f"resolving {key}: say who decides and why (both are kept in the ledger)")
    transfer = ledger.Transfer(
        source=f"operator:{by.strip()}", target="hub", dataset="oversold_resolution", run=ledger.RunContext()
    )
    with connect(dsn) as conn:
        lines = conn.execute(
            "UPDATE hub.stock_reservation SET oversold_resolved_at = now() "
            "WHERE channel = %s AND order_id = %s AND oversold > 0 AND oversold_resolved_at IS NULL "
            "RETURNING line_id, sku, oversold",
            (channel, order_id),
        ).fetchall()
        if not lines:
            return 0
        transfer.rows_read = transfer.rows_changed = len(lines)
        transfer.details = {
            "order": key,
            "reason": reason.strip(),
            "lines": [{"line_id": line_id, "sku": sku, "oversold": units} for line_id, sku, units in lines],
        }
        ledger.append(conn, transfer, "success")
    return len(lines)
