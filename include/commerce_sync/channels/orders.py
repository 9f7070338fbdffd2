"""Orders as a marketplace reports them: the shape every kind's order reader returns.

A marketplace kind with the ``import_orders`` capability implements
:meth:`commerce_sync.channels.marketplace.Marketplace.read_orders`: given the cursor the hub stored
after the previous batch (``None`` on the first run), it returns one :class:`OrderBatch` — the
*current* state of every order that changed since that cursor, and the cursor to store once those
orders are committed. The hub stores orders, their reservations and the new cursor in one transaction,
so a crash between two batches re-reads the last one, and a replayed or overlapping batch changes
nothing (orders are keyed by the marketplace's own ids).

A reader never interprets stock; it maps the marketplace's statuses onto three:

- ``unpaid``: bought but not paid or not ready yet (Allegro ``BOUGHT``/``FILLED_IN``, Amazon
  ``PENDING``/``UNCONFIRMED``). The unit is already gone from the marketplace: the hub reserves it, but
  does not hand the order to the ERP yet.
- ``ready``: paid and ready for processing, or further (shipped, delivered). Reserved and handed to the
  ERP.
- ``cancelled``: cancelled by the buyer, the seller or the marketplace. The reservation is released;
  an order already handed to the ERP is cancelled there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

OrderStatus = Literal["unpaid", "ready", "cancelled"]
ORDER_STATUSES: tuple[OrderStatus, ...] = ("unpaid", "ready", "cancelled")


@dataclass(frozen=True)
class OrderLine:
    """One line item of an order.

    Args:
        line_id: the marketplace's id of the line item (unique within the order).
        sku: the seller's SKU when the marketplace reports it (Allegro ``offer.external.id``, eBay
            ``sku``, Amazon ``sellerSku``); otherwise the hub resolves it from ``offer_id``.
        offer_id: the marketplace's id of the offer or listing sold.
        quantity: units sold on this line (> 0).
        unit_price: price of one unit as charged, if reported.
        currency: ISO 4217 code of ``unit_price``.
    """

    line_id: str
    sku: str | None
    offer_id: str | None
    quantity: int
    unit_price: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class MarketplaceOrder:
    """The current state of one order on a marketplace.

    Args:
        order_id: the marketplace's order id (Allegro checkout-form id, eBay orderId, Amazon orderId).
        status: the normalised status (see the module docs).
        marketplace_status: the marketplace's own status words, for the audit trail and the operator.
        revision: what the marketplace says changes whenever the order does (Allegro ``revision``,
            eBay/Amazon last-modified time); an order seen again with the same revision is unchanged.
        updated_at: when the marketplace last changed the order.
        created_at: when it was bought.
        lines: its line items.
    """

    order_id: str
    status: OrderStatus
    marketplace_status: str
    revision: str | None
    updated_at: datetime | None
    lines: tuple[OrderLine, ...]
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status not in ORDER_STATUSES:
            raise ValueError(f"order {self.order_id}: status {self.status!r} is not one of {list(ORDER_STATUSES)}")


@dataclass(frozen=True)
class OrderBatch:
    """One read of a marketplace's changed orders.

    Args:
        orders: the current state of the orders that changed (an order appears at most once).
        cursor: what to store, with these orders, as the channel's order cursor.
        more: another read from ``cursor`` right away would return more orders.
        details: what the reader wants recorded in the ledger (events read, pages, duplicates skipped).
    """

    orders: tuple[MarketplaceOrder, ...]
    cursor: str | None
    more: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderNews:
    """What a cheap probe of a channel's orders saw (:meth:`Marketplace.orders_changed_since`).

    Args:
        new: the marketplace has orders (or order changes) the hub has not stored yet.
        marker: names this news: the same unimported news probed again gives the same marker, and any
            further sale or any import of the channel changes it. The order doorbell fires once per
            marker, so it does not ring again and again while a DAG run is still importing.
        details: what the probe saw, for the trigger's log and event payload.
    """

    new: bool
    marker: str
    details: dict[str, Any] = field(default_factory=dict)


class OrderReader(Protocol):
    """What order import needs of a channel: :meth:`Marketplace.read_orders`."""

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch: ...
