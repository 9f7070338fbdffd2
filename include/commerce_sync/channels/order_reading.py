"""What the marketplaces' order readers share: cursors, line checks, counts for the ledger, error wording.

Each kind's :meth:`~commerce_sync.channels.marketplace.Marketplace.read_orders` keeps its API specifics
(Allegro events, eBay's modified-date window, Amazon's searchOrders) and uses these for the rest:

- the cursor is a compact JSON object (:func:`encode_cursor` / :func:`decode_cursor`); a cursor that is
  not one of ours fails with :class:`~commerce_sync.errors.DataError` naming the channel;
- a malformed order (no id, a line without id, a quantity that is not a positive integer) is not
  imported: :class:`Reading` records it under ``details["skipped"]`` with the reason and logs an error,
  so the rest of the batch still reserves its units and nothing disappears unreported;
- a read that fails after the client's retries (429 beyond ``Retry-After``, a 5xx burst, the network)
  raises :class:`~commerce_sync.errors.TransientError` saying that nothing was stored and the cursor
  did not move, so the next run reads the same orders again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch, OrderLine, OrderNews
from commerce_sync.errors import DataError, TransientError
from commerce_sync.transport.http import HttpClient

log = logging.getLogger(__name__)

MAX_SKIPPED_SHOWN = 100
_CENT = Decimal("0.01")


class MalformedOrder(ValueError):
    """An order the marketplace reported in a shape the hub cannot import."""

    def __init__(self, order_id: str | None, reason: str) -> None:
        self.order_id = order_id or "(no order id)"
        self.reason = reason
        super().__init__(f"order {self.order_id}: {reason}")


def encode_cursor(state: dict[str, Any]) -> str:
    """The cursor string stored by the hub: compact JSON with sorted keys."""
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def decode_cursor(title: str, cursor: str | None) -> dict[str, Any] | None:
    """The reader state in ``cursor`` (None on the first run).

    Raises:
        DataError: the stored cursor is not a JSON object written by this reader.
    """
    if cursor is None:
        return None
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise DataError(
            f"{title}: the stored order cursor {cursor[:80]!r} is not a JSON object written by the order reader; "
            "set it to a valid cursor or delete it to start from now"
        )
    return state


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from an API (``Z`` or an offset), as an aware UTC datetime; None if absent."""
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def probe_after(title: str, cursor: str | None, *, paging_key: str, start_key: str) -> OrderNews | datetime:
    """Where a time-window reader's probe asks from, or the news a cursor tells by itself.

    News without a call: no cursor yet, a cursor in the middle of a window (``paging_key`` set: the last
    import stopped while paging), a cursor without a start. Otherwise the moment after which an order is
    news: the newest change the hub stored (``seen``) + 1 ms, or the window's start (``start_key``),
    whichever is later, so the reader's overlapping window does not ring for orders already stored.
    """
    state = decode_cursor(title, cursor)
    if state is None:
        return OrderNews(True, "no-cursor", {"reason": "no order cursor stored yet"})
    if state.get(paging_key):
        return OrderNews(True, f"paging:{cursor}", {"reason": "the last import stopped inside a window"})
    start = parse_time(state.get(start_key))
    seen = parse_time(state.get("seen"))
    if start is None:
        return OrderNews(True, f"no-start:{cursor}", {"reason": "the cursor has no start"})
    return start if seen is None else max(start, seen + timedelta(milliseconds=1))


def iso_ms(moment: datetime) -> str:
    """``2026-12-05T03:20:00.123Z``: the millisecond ISO form the order APIs take in filters."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def money(amount: Any) -> Decimal | None:
    """A price from an API (string or number), or None when absent or unreadable."""
    if amount is None:
        return None
    try:
        return Decimal(str(amount))
    except InvalidOperation:
        return None


def order_line(
    order_id: str,
    line_id: Any,
    sku: Any,
    offer_id: Any,
    quantity: Any,
    unit_price: Decimal | None = None,
    currency: Any = None,
) -> OrderLine:
    """A checked :class:`OrderLine`.

    Raises:
        MalformedOrder: no line id, or a quantity that is not a positive integer.
    """
    if line_id in (None, ""):
        raise MalformedOrder(order_id, "a line item has no id")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise MalformedOrder(order_id, f"line {line_id}: quantity {quantity!r} is not an integer")
    if quantity <= 0:
        raise MalformedOrder(order_id, f"line {line_id}: quantity {quantity} is not positive")
    if unit_price is not None and unit_price < 0:
        raise MalformedOrder(order_id, f"line {line_id}: unit price {unit_price} is negative")
    return OrderLine(
        line_id=str(line_id),
        sku=str(sku) if sku not in (None, "") else None,
        offer_id=str(offer_id) if offer_id not in (None, "") else None,
        quantity=quantity,
        unit_price=unit_price.quantize(_CENT) if unit_price is not None else None,
        currency=str(currency) if currency else None,
    )


@dataclass
class Reading:
    """One ``read_orders`` call: the orders found (at most once each) and the counts for the ledger."""

    title: str
    client: HttpClient
    orders: dict[str, MarketplaceOrder] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    _retries: int = 0
    _throttled: int = 0

    def __post_init__(self) -> None:
        self._retries = self.client.retries
        self._throttled = self.client.throttled

    def count(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def add(self, order: MarketplaceOrder) -> None:
        """Keep ``order``; a second copy in one batch replaces the first (the later read is newer)."""
        if order.order_id in self.orders:
            self.count("duplicates")
        self.orders[order.order_id] = order

    def take(
        self,
        listed: list[dict[str, Any]],
        convert: Callable[[dict[str, Any]], MarketplaceOrder],
        *,
        complete: Callable[[dict[str, Any]], bool],
        fetch: Callable[[str], dict[str, Any]],
    ) -> datetime | None:
        """Convert and keep the orders of a page; return the newest ``updated_at`` among them.

        An order the list returns without what ``complete`` checks is read again by id with ``fetch``
        (counted as ``get_order_calls``); a malformed one is skipped and reported.
        """
        newest: datetime | None = None
        for raw in listed:
            order = raw
            if not complete(order) and order.get("orderId"):
                order = fetch(str(order["orderId"]))
                self.count("get_order_calls")
            try:
                found = convert(order)
            except MalformedOrder as error:
                self.skip(error)
                continue
            self.add(found)
            if found.updated_at is not None and (newest is None or found.updated_at > newest):
                newest = found.updated_at
        return newest

    def skip(self, error: MalformedOrder) -> None:
        """Report a malformed order in the batch's details (and the log) instead of importing it."""
        log.error("%s: order %s not imported: %s", self.title, error.order_id, error.reason)
        self.skipped.append({"order_id": error.order_id, "reason": error.reason})

    def batch(self, cursor: dict[str, Any], more: bool) -> OrderBatch:
        """The :class:`OrderBatch` of this read, with ``details``."""
        details: dict[str, Any] = {
            **self.counts,
            "orders": len(self.orders),
            "retries": self.client.retries - self._retries,
            "throttled": self.client.throttled - self._throttled,
            "skipped": len(self.skipped),
        }
        if self.skipped:
            details["skipped_orders"] = self.skipped[:MAX_SKIPPED_SHOWN]
        return OrderBatch(tuple(self.orders.values()), encode_cursor(cursor), more, details)


@contextmanager
def reading_orders(title: str) -> Iterator[None]:
    """Re-word a read that failed after the client's retries so the operator knows what happened."""
    try:
        yield
    except TransientError as exc:
        raise TransientError(
            f"{title}: reading orders failed ({exc}). Nothing was stored and the order cursor did not move: "
            f"the next run reads the same orders again. If it lasts, check {title}'s API status and the "
            "channel's connection"
        ) from exc
