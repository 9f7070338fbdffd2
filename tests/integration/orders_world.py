"""Helpers for the order tests: a scripted marketplace order stream and readers of the hub and the ERP.

The hub, the ERP (the sandbox ERP database with its order functions) and the pricing engine are real;
only the marketplace's order API is replaced by :class:`ScriptedOrders`, a list of order snapshots read
with a numeric cursor, so a test decides exactly which snapshots, replays and overlaps each batch holds.
(The readers of the real marketplace APIs are tested against the simulators in test_order_readers.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from commerce_sync.audit import ledger
from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch, OrderLine, OrderStatus
from commerce_sync.config import load_config
from commerce_sync.db import connect
from commerce_sync.orders.erp import hand_off, open_writer
from commerce_sync.orders.importer import ImportResult, import_orders, push_quantities

RUN = ledger.RunContext(run_id="orders-test", dag_id="orders_test", task_id="t")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class ScriptedOrders:
    """A marketplace's order feed: every snapshot ever reported, read from a numeric cursor."""

    snapshots: list[MarketplaceOrder] = field(default_factory=list)
    clock: int = 0

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        start = int(cursor or 0)
        chunk = self.snapshots[start : start + limit]
        end = start + len(chunk)
        return OrderBatch(tuple(chunk), str(end), more=end < len(self.snapshots), details={"read": len(chunk)})

    def report(self, order: MarketplaceOrder) -> MarketplaceOrder:
        self.snapshots.append(order)
        return order

    def sell(self, order_id: str, sku: str, quantity: int = 1, *, status: OrderStatus = "ready") -> MarketplaceOrder:
        self.clock += 1
        at = T0 + timedelta(seconds=self.clock)
        line = OrderLine(line_id=f"{order_id}-1", sku=sku, offer_id=None, quantity=quantity)
        return self.report(MarketplaceOrder(order_id, status, status.upper(), str(self.clock), at, (line,), at))

    def change(self, order: MarketplaceOrder, status: OrderStatus) -> MarketplaceOrder:
        self.clock += 1
        at = T0 + timedelta(seconds=self.clock)
        return self.report(
            replace(order, status=status, marketplace_status=status.upper(), revision=str(self.clock), updated_at=at)
        )


def import_all(hub: str, channel_id: str, orders: ScriptedOrders, *, limit: int = 100) -> ImportResult:
    return import_orders(hub, load_config().channel(channel_id), orders, RUN, limit=limit)


def push(hub: str) -> None:
    push_quantities(hub, load_config(), RUN)


def erp_hand_off(hub: str) -> Any:
    erp = load_config().erp
    with open_writer(erp) as writer:
        return hand_off(hub, erp, writer, RUN)


def offer_quantities(hub: str, sku: str) -> dict[str, int]:
    with connect(hub) as conn:
        return dict(conn.execute("SELECT channel, quantity FROM hub.channel_offer WHERE sku = %s", (sku,)).fetchall())


def pending_fields(hub: str, sku: str) -> list[tuple[str, str, Any]]:
    with connect(hub) as conn:
        return conn.execute(
            "SELECT channel, field, payload FROM hub.outbox WHERE sku = %s AND status = 'pending' ORDER BY channel, field",
            (sku,),
        ).fetchall()


def erp_product(erp: str, sku: str) -> tuple[int, int]:
    with connect(erp) as conn:
        row = conn.execute("SELECT stock, reserved FROM erp.products WHERE sku = %s", (sku,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def set_erp_stock(erp: str, sku: str, stock: int) -> None:
    with connect(erp) as conn:
        conn.execute("UPDATE erp.products SET stock = %s WHERE sku = %s", (stock, sku))


def skus_in_stock(hub: str, n: int) -> list[str]:
    """``n`` active SKUs that every channel lists, by SKU."""
    with connect(hub) as conn:
        rows = conn.execute(
            "SELECT p.sku FROM hub.product AS p JOIN hub.stock AS s ON s.sku = p.sku "
            "WHERE p.active AND s.quantity - s.reserved > 5 ORDER BY p.sku LIMIT %s",
            (n,),
        ).fetchall()
    return [r[0] for r in rows]
