"""The simulators' shared order book: buying on a simulated marketplace, and the log its order APIs read.

Each marketplace simulator owns one :class:`OrderBook`. A test, the demo or the CLI buys through the
sandbox endpoints every simulator serves (no auth)::

    POST /_sandbox/orders            {"sku", "quantity", "paid": true|false, "force": false} -> {"orderId"}
    POST /_sandbox/orders/bulk       {"orders": [{"sku", "quantity", "paid"}, ...], "force"}  -> {"orderIds"}
    POST /_sandbox/orders/{id}/pay                                                            -> the order
    POST /_sandbox/orders/{id}/cancel {"by": "buyer" | "auto"}                                -> the order
    GET  /_sandbox/orders/{id}                                                                -> the order

Buying lowers the listing's quantity on that simulator as the real marketplace does; fewer units listed
than asked answer 409, unless ``force`` (two marketplaces selling the same last unit: the listing goes
to 0 and the order is still taken). Cancelling puts the units back on the listing.

Every change appends entries to a log in time order (one per Allegro event type: ``BOUGHT``,
``FILLED_IN``, ``READY_FOR_PROCESSING``, ``BUYER_CANCELLED``/``AUTO_CANCELLED``). Allegro serves the
log as its order events; eBay and Amazon answer "orders changed between two times" from it with a
binary search, so neither buying nor reading scans every order (the benchmark imports 10,000).
Timestamps are integer microseconds, strictly increasing within a book.

The helpers :func:`buy`, :func:`buy_bulk`, :func:`pay` and :func:`cancel` call those endpoints.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import requests

Status = Literal["unpaid", "ready", "cancelled"]
MAX_BULK = 20_000


class OrderBookError(Exception):
    """A refused sandbox order request: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"errors": [{"code": "SANDBOX_ORDER", "message": self.message}]}


class Listings(Protocol):
    """What a simulator tells the order book about its listings (called under the simulator's lock)."""

    def available(self, sku: str) -> int | None:
        """Units listed for ``sku``, or None if the simulator has no listing for it."""

    def adjust(self, sku: str, delta: int) -> None:
        """Change the listed units by ``delta`` (never below 0)."""

    def offer_of(self, sku: str) -> tuple[str, str, str, str]:
        """(offer id, title, unit price as a decimal string, currency) of the listing."""


@dataclass(frozen=True)
class Entry:
    """One log entry: an order changed at ``at`` (µs since the epoch) to ``version``."""

    seq: int
    at: int
    order_id: str
    version: int
    type: str


def now_us() -> int:
    return time.time_ns() // 1000


def iso(us: int, digits: int = 3) -> str:
    """``2026-12-05T03:20:00.123Z`` (``digits`` fraction digits; 0 for whole seconds)."""
    moment = datetime.fromtimestamp(us // 1_000_000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{us % 1_000_000:06d}"[:digits]
    return text + "Z"


def parse_iso(text: str) -> int:
    """µs since the epoch of an ISO 8601 time with a zone (``Z`` or an offset)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return (moment - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OrderBook:
    """Orders of one simulated marketplace and the log of their changes; thread-safe with ``lock``.

    Args:
        listings: the simulator's listings (checked and lowered when buying).
        lock: the simulator's lock, held while an order and its listing change together.
        new_ids: makes (order id, line id) from a sequence number.
    """

    def __init__(self, listings: Listings, lock: threading.RLock, new_ids: Callable[[int], tuple[str, str]]) -> None:
        self.listings = listings
        self.lock = lock
        self.new_ids = new_ids
        self.orders: dict[str, dict[str, Any]] = {}
        self.log: list[Entry] = []
        self._times: list[int] = []
        self._last = 0

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """JSON-ready orders and log (saved with the simulator's state)."""
        with self.lock:
            return {
                "orders": list(self.orders.values()),
                "log": [[e.seq, e.at, e.order_id, e.version, e.type] for e in self.log],
            }

    def load(self, state: dict[str, Any] | None) -> None:
        """Restore what :meth:`state` returned (nothing to do for a state saved before orders existed)."""
        if not state:
            return
        with self.lock:
            self.orders = {order["id"]: order for order in state.get("orders", [])}
            self.log = [Entry(*row) for row in state.get("log", [])]
            self._times = [entry.at for entry in self.log]
            self._last = self._times[-1] if self._times else 0

    def reset(self) -> None:
        with self.lock:
            self.orders, self.log, self._times, self._last = {}, [], [], 0

    # ------------------------------------------------------------------ changes
    def _tick(self) -> int:
        self._last = max(now_us(), self._last + 1)
        return self._last

    def _record(self, order: dict[str, Any], *types: str) -> None:
        order["version"] += 1
        at = self._tick()
        order["updated"] = at
        for kind in types:
            entry = Entry(len(self.log) + 1, at, order["id"], order["version"], kind)
            self.log.append(entry)
            self._times.append(at)

    def buy(self, sku: str, quantity: int, *, paid: bool = True, force: bool = False) -> dict[str, Any]:
        """Take an order for ``quantity`` units of ``sku``; lowers the listing. Returns the order."""
        if not isinstance(sku, str) or not sku:
            raise OrderBookError(400, "sku must be a non-empty string")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise OrderBookError(400, f"quantity must be a positive integer, not {quantity!r}")
        with self.lock:
            available = self.listings.available(sku)
            if available is None:
                raise OrderBookError(404, f"no listing for SKU {sku} on this marketplace")
            if available < quantity and not force:
                raise OrderBookError(
                    409, f"SKU {sku}: {available} units listed, {quantity} asked (force: true sells anyway)"
                )
            offer_id, title, price, currency = self.listings.offer_of(sku)
            self.listings.adjust(sku, -quantity)
            order_id, line_id = self.new_ids(len(self.orders) + 1)
            while order_id in self.orders:
                order_id, line_id = self.new_ids(len(self.orders) + 1)
            at = self._tick()
            order = {
                "id": order_id,
                "lines": [
                    {
                        "line_id": line_id,
                        "sku": sku,
                        "offer_id": offer_id,
                        "title": title,
                        "quantity": quantity,
                        "price": price,
                        "currency": currency,
                    }
                ],
                "status": "unpaid",
                "cancelled_by": None,
                "paid": None,
                "created": at,
                "updated": at,
                "version": 0,
                "oversold": available < quantity,
            }
            self.orders[order_id] = order
            if paid:
                order["status"] = "ready"
                order["paid"] = at
                self._record(order, "BOUGHT", "FILLED_IN", "READY_FOR_PROCESSING")
            else:
                self._record(order, "BOUGHT", "FILLED_IN")
            return order

    def buy_many(self, wanted: Sequence[dict[str, Any]], *, force: bool = False) -> list[str]:
        """Take many orders at once (all or nothing for the 409/404 checks of each)."""
        if len(wanted) > MAX_BULK:
            raise OrderBookError(400, f"at most {MAX_BULK} orders per bulk request")
        with self.lock:
            ids: list[str] = []
            for index, spec in enumerate(wanted):
                if not isinstance(spec, dict):
                    raise OrderBookError(400, f"orders[{index}] must be an object")
                try:
                    order = self.buy(
                        spec.get("sku"),  # type: ignore[arg-type]
                        spec.get("quantity", 1),
                        paid=bool(spec.get("paid", True)),
                        force=force or bool(spec.get("force", False)),
                    )
                except OrderBookError as error:
                    raise OrderBookError(error.status, f"orders[{index}]: {error.message}") from None
                ids.append(order["id"])
            return ids

    def pay(self, order_id: str) -> dict[str, Any]:
        """The buyer paid: the order becomes ready for processing."""
        with self.lock:
            order = self.get(order_id)
            if order["status"] == "cancelled":
                raise OrderBookError(409, f"order {order_id} is cancelled and cannot be paid")
            if order["status"] != "ready":
                order["status"] = "ready"
                order["paid"] = self._tick()
                self._record(order, "READY_FOR_PROCESSING")
            return order

    def cancel(self, order_id: str, by: str = "buyer") -> dict[str, Any]:
        """Cancel an order (before or after it was paid); its units go back on the listing."""
        if by not in ("buyer", "auto"):
            raise OrderBookError(400, f"by must be 'buyer' or 'auto', not {by!r}")
        with self.lock:
            order = self.get(order_id)
            if order["status"] != "cancelled":
                order["cancelled_after_ready"] = order["status"] == "ready"
                order["status"] = "cancelled"
                order["cancelled_by"] = by
                for line in order["lines"]:
                    self.listings.adjust(line["sku"], line["quantity"])
                self._record(order, "AUTO_CANCELLED" if by == "auto" else "BUYER_CANCELLED")
            return order

    def get(self, order_id: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None:
            raise OrderBookError(404, f"order {order_id} not found")
        return order

    # ------------------------------------------------------------------ reads
    def events_after(self, seq: int, limit: int) -> list[Entry]:
        """Log entries after sequence number ``seq`` (the log is numbered 1, 2, ...)."""
        with self.lock:
            return self.log[max(seq, 0) : max(seq, 0) + limit]

    def changed(self, start_us: int, end_us: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(last change, order) of each order whose last change lies in [start_us, end_us), in time order.

        Binary search over the log, then only its entries in the window: an order changed again later
        is skipped here (it is in a later window).
        """
        with self.lock:
            first = bisect.bisect_left(self._times, start_us)
            last = bisect.bisect_left(self._times, end_us)
            seen: set[str] = set()
            found: list[tuple[int, dict[str, Any]]] = []
            for entry in self.log[first:last]:
                order = self.orders[entry.order_id]
                if entry.version != order["version"] or entry.order_id in seen:
                    continue
                seen.add(entry.order_id)
                found.append((entry.at, order))
        yield from found

    @property
    def latest(self) -> Entry | None:
        with self.lock:
            return self.log[-1] if self.log else None


def handle(
    book: OrderBook, method: str, parts: list[str], body: bytes, save: Callable[[], None]
) -> tuple[int, Any] | None:
    """Answer a ``/_sandbox/orders...`` request (``parts`` after ``_sandbox``), or None if it is not one.

    ``save`` persists the simulator's state; it is called, under the book's lock, after every change.
    """
    if parts[:1] != ["orders"]:
        return None
    answer = _answer(book, method, parts, body)
    if method == "POST" and answer[0] < 300:
        with book.lock:
            save()
    return answer


def _answer(book: OrderBook, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    try:
        document = json.loads(body or b"{}")
        if not isinstance(document, dict):
            raise OrderBookError(400, "the body must be a JSON object")
        if method == "POST" and parts == ["orders"]:
            order = book.buy(
                document.get("sku"),  # type: ignore[arg-type]
                document.get("quantity", 1),
                paid=bool(document.get("paid", True)),
                force=bool(document.get("force", False)),
            )
            return 201, {"orderId": order["id"], "order": order}
        if method == "POST" and parts == ["orders", "bulk"]:
            wanted = document.get("orders")
            if not isinstance(wanted, list):
                raise OrderBookError(400, "orders must be a list")
            return 201, {"orderIds": book.buy_many(wanted, force=bool(document.get("force", False)))}
        if method == "POST" and len(parts) == 3 and parts[2] == "pay":
            return 200, book.pay(parts[1])
        if method == "POST" and len(parts) == 3 and parts[2] == "cancel":
            return 200, book.cancel(parts[1], str(document.get("by", "buyer")))
        if method == "GET" and len(parts) == 2:
            with book.lock:
                return 200, book.get(parts[1])
        raise OrderBookError(404, f"unknown sandbox endpoint {method} /_sandbox/{'/'.join(parts)}")
    except OrderBookError as error:
        return error.status, error.body()
    except (ValueError, TypeError) as error:
        return 400, OrderBookError(400, str(error)).body()


# ---------------------------------------------------------------------- client helpers
def _post(url: str, document: dict[str, Any], timeout: float = 60.0) -> Any:
    response = requests.post(url, json=document, timeout=timeout)
    if response.status_code >= 400:
        try:
            message = response.json()["errors"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            message = response.text[:300] or response.reason
        raise OrderBookError(response.status_code, f"{url}: {message}")
    return response.json()


def buy(base_url: str, sku: str, quantity: int = 1, *, paid: bool = True, force: bool = False) -> str:
    """Buy ``quantity`` units of ``sku`` on the simulator at ``base_url``; returns the order id.

    Raises:
        OrderBookError: 404 no listing for the SKU, 409 fewer units listed (pass ``force`` to oversell).
    """
    answer = _post(
        f"{base_url.rstrip('/')}/_sandbox/orders", {"sku": sku, "quantity": quantity, "paid": paid, "force": force}
    )
    return str(answer["orderId"])


def buy_bulk(base_url: str, orders: Sequence[dict[str, Any]], *, force: bool = False) -> list[str]:
    """Create many orders in one request (``[{"sku", "quantity", "paid"}]``); returns their ids."""
    answer = _post(f"{base_url.rstrip('/')}/_sandbox/orders/bulk", {"orders": list(orders), "force": force})
    return [str(order_id) for order_id in answer["orderIds"]]


def pay(base_url: str, order_id: str) -> dict[str, Any]:
    """The buyer pays order ``order_id``."""
    answer: dict[str, Any] = _post(f"{base_url.rstrip('/')}/_sandbox/orders/{order_id}/pay", {})
    return answer


def cancel(base_url: str, order_id: str, by: str = "buyer") -> dict[str, Any]:
    """Cancel order ``order_id`` (``by`` the buyer or automatically); its units go back on the listing."""
    answer: dict[str, Any] = _post(f"{base_url.rstrip('/')}/_sandbox/orders/{order_id}/cancel", {"by": by})
    return answer
