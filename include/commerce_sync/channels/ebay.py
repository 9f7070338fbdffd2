"""eBay: the Inventory API client and the publisher that drains ``hub.outbox`` into bulk updates.

``POST /sell/inventory/v1/bulk_update_price_quantity`` takes at most 25 SKUs per call and answers
per item (200, or 207 with per-item errors). Updates set absolute values, so a re-sent batch (after
a crash between eBay's answer and our commit, or a dropped answer) changes nothing on eBay: the
outbox row's idempotency key is reflected in what we send, and applying it twice has one effect.
The OAuth user token comes from the refresh-token grant (connection ``extra.refresh_token``), is
refreshed before it expires or after a 401, and never appears in repr, logs, XCom or the ledger.

Orders (:meth:`EbayMarketplace.read_orders`) come from the Fulfillment API's getOrders with
``filter=lastmodifieddate:[<from>..<to>]``, paged by ``offset``. The window's end ``to`` is fixed when
its first page is read, so orders modified meanwhile leave the window (they fall in the next one)
instead of joining it; an order leaving shifts the later pages, which the reader notices in ``total``
and answers by stepping ``offset`` back as far, so a page re-reads orders rather than skipping one.
The next window starts ``overlap`` before the newest ``lastModifiedDate`` seen (or before ``to`` when
the window was empty), which also covers a clock difference between eBay and us; when orders left the
window while it was paged, the last page says ``more`` so that the next window is read at once.
Cancellations are ``cancelStatus.cancelState``; an order the list returns without it is read with
getOrder.

The cursor also keeps ``seen``, the newest ``lastModifiedDate`` the hub has stored. The order
doorbell's probe (:meth:`EbayMarketplace.orders_changed_since`) asks getOrders for
``lastmodifieddate:[<seen + 1 ms>..]`` with ``limit=1``: orders the overlapping window reads again are
not news, so the doorbell does not ring forever.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import requests

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
from commerce_sync.channels.order_reading import (
    MalformedOrder,
    Reading,
    decode_cursor,
    iso_ms,
    money,
    order_line,
    parse_time,
    probe_after,
    reading_orders,
)
from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch, OrderNews, OrderStatus
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ConfigError
from commerce_sync.transport.http import OAuthClient

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 25
BULK_PATH = "/sell/inventory/v1/bulk_update_price_quantity"
SCOPE = (
    "https://api.ebay.com/oauth/api_scope/sell.inventory https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly"
)
ORDERS_PATH = "/sell/fulfillment/v1/order"
MAX_ORDERS_PER_PAGE = 200
ORDER_OVERLAP = timedelta(minutes=5)
PAID = frozenset({"PAID", "PARTIALLY_REFUNDED", "FULLY_REFUNDED"})
"""Payment states of an order whose units left the listing for good (a refund does not put them back)."""
UNPAID = frozenset({"PENDING", "FAILED"})


class EbayClient(OAuthClient):
    """eBay Sell Inventory API client.

    Args:
        base_url: ``https://api.ebay.com`` (or the simulator).
        client_id: the app's client id.
        client_secret: the app's client secret (never shown).
        refresh_token: the seller's refresh token (never shown).
        **options: passed to :class:`~commerce_sync.transport.http.HttpClient`.
    """

    channel = "ebay"
    token_margin = 120.0
    requests_per_period = (50.0, 1.0)  # well under eBay's per-app call limits, smooths bursts

    def __init__(self, base_url: str, client_id: str, client_secret: str, refresh_token: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.client_id = client_id
        self.__secret = client_secret
        self.__refresh_token = refresh_token
        self.session.headers["Accept"] = "application/json"

    @classmethod
    def from_connection(cls, info: ConnectionInfo, **options: Any) -> EbayClient:
        """A client from an Airflow connection: host = API base URL, login/password = client id/secret,
        ``extra.refresh_token`` = the seller's refresh token."""
        refresh = info.extra.get("refresh_token")
        if not info.login or not info.password or not refresh:
            raise ConfigError(
                f"connection {info.conn_id!r} needs login (eBay client id), password (client secret) and "
                "extra.refresh_token (the seller's OAuth refresh token)"
            )
        return cls(info.base_url(), info.login, info.password, str(refresh), **options)

    def __repr__(self) -> str:
        return f"EbayClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def _request_token(self) -> requests.Response:
        return self.request(
            "POST",
            "/identity/v1/oauth2/token",
            body=urlencode(
                {"grant_type": "refresh_token", "refresh_token": self.__refresh_token, "scope": SCOPE}
            ).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(self.client_id, self.__secret),
            authenticate=False,
        )

    def bulk_update(self, requests_: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``bulkUpdatePriceQuantity`` for at most 25 SKUs; returns the per-item responses."""
        if not 1 <= len(requests_) <= MAX_ITEMS_PER_CALL:
            raise ValueError(f"eBay takes 1..{MAX_ITEMS_PER_CALL} items per call, got {len(requests_)}")
        response = self.request("POST", BULK_PATH, json_body={"requests": requests_})
        responses: list[dict[str, Any]] = response.json().get("responses") or []
        return responses

    def orders_page(self, start: str, end: str | None, *, limit: int, offset: int) -> dict[str, Any]:
        """getOrders: one page of the orders last modified in [start, end] (ISO 8601 UTC, inclusive;
        no ``end``: up to now)."""
        page: dict[str, Any] = self.request(
            "GET",
            ORDERS_PATH,
            params={
                "filter": f"lastmodifieddate:[{start}..{end or ''}]",
                "limit": max(1, min(limit, MAX_ORDERS_PER_PAGE)),
                "offset": offset,
            },
        ).json()
        return page

    def get_order(self, order_id: str) -> dict[str, Any]:
        """getOrder: one order with its cancel requests."""
        order: dict[str, Any] = self.request("GET", f"{ORDERS_PATH}/{order_id}").json()
        return order

    def list_offers(self, page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every offer (the simulator pages ``GET /offer``; production reads it per SKU)."""
        offset = 0
        while True:
            page = self.request("GET", "/sell/inventory/v1/offer", params={"offset": offset, "limit": page_size}).json()
            offers = page.get("offers") or []
            yield from offers
            offset += len(offers)
            if not offers or offset >= int(page.get("total") or 0):
                return


class EbayMarketplace(Marketplace):
    """eBay as the publisher sees it: ``bulkUpdatePriceQuantity`` calls of at most 25 SKUs.

    A SKU's newest pending price and quantity travel in one item, and eBay answers per item in the
    same response (synchronous), so outcomes are read from the call's own answer.
    """

    kind = "ebay"
    title = "eBay"
    max_items_per_request = MAX_ITEMS_PER_CALL
    probes_orders = True
    client: EbayClient

    def __init__(self, client: EbayClient, order_overlap: timedelta = ORDER_OVERLAP) -> None:
        super().__init__(client)
        self.order_overlap = order_overlap

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> EbayMarketplace:
        return cls(EbayClient.from_connection(info))

    def build(self, items: list[Item]) -> Request:
        by_sku: dict[str, list[Item]] = {}
        for item in items:
            by_sku.setdefault(item.sku, []).append(item)
        return Request(items, {"requests": [_item(sku, rows) for sku, rows in by_sku.items()]})

    def send(self, request: Request) -> list[dict[str, Any]]:
        return self.client.bulk_update(request.body["requests"])

    def collect(self, request: Request, sent: list[dict[str, Any]]) -> list[Outcome]:
        answers = {str(answer.get("sku")): answer for answer in sent}
        outcomes: list[Outcome] = []
        for item in request.items:
            answer = answers.get(item.sku)
            if answer is not None and answer.get("statusCode") == 200:
                outcomes.append(Outcome(item.id, "sent", answer))
                continue
            errors = (answer or {}).get("errors") or [{"message": "eBay returned no answer for this SKU"}]
            text = "; ".join(f"{e.get('errorId', '')} {e.get('message', '')}".strip() for e in errors)
            outcomes.append(Outcome(item.id, "failed", answer, f"SKU {item.sku} (offer {item.offer_id}): {text}"))
        return outcomes

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        """One page of the orders modified in the cursor's window (see the module docs).

        The cursor is ``{"from", "to", "offset", "total"}`` while a window is paged, then ``{"from"}``.
        """
        state = decode_cursor(self.title, cursor) or {"from": iso_ms(_now())}
        reading = Reading(self.title, self.client)
        with reading_orders(self.title):
            start = str(state["from"])
            end = str(state.get("to") or iso_ms(_now()))
            offset = int(state.get("offset") or 0)
            expected = state.get("total")
            left = int(state.get("left") or 0)
            page = self.client.orders_page(start, end, limit=limit, offset=offset)
            reading.count("pages")
            total = int(page.get("total") or 0)
            if expected is not None and total < int(expected):
                left += int(expected) - total
            if expected is not None and total < int(expected) and offset > 0:
                # Orders left the window since the last page: later ones moved up; read from as far back.
                offset = max(0, offset - (int(expected) - total))
                page = self.client.orders_page(start, end, limit=limit, offset=offset)
                reading.count("pages")
                reading.count("stepped_back", int(expected) - total)
                total = int(page.get("total") or 0)
            listed = page.get("orders") or []
            newest_here = reading.take(
                listed,
                ebay_order,
                complete=lambda order: isinstance((order.get("cancelStatus") or {}).get("cancelState"), str),
                fetch=self.client.get_order,
            )
            newest = max(filter(None, (parse_time(state.get("newest")), newest_here)), default=None)
            seen = max(filter(None, (parse_time(state.get("seen")), newest)), default=None)
            offset += len(listed)
        paging = bool(listed) and offset < total
        if paging:
            cursor_state: dict[str, Any] = {"from": start, "to": end, "offset": offset, "total": total}
            if newest is not None:
                cursor_state["newest"] = iso_ms(newest)
            if left:
                cursor_state["left"] = left
        else:
            basis = newest or parse_time(end) or _now()
            cursor_state = {"from": iso_ms(max(basis - self.order_overlap, parse_time(start) or basis))}
        if seen is not None:
            cursor_state["seen"] = iso_ms(seen)
        reading.counts["window"] = [start, end]
        # Orders that left the window while it was paged changed after its end: the next window has them.
        return reading.batch(cursor_state, more=paging or left > 0)

    def orders_changed_since(self, cursor: str | None) -> OrderNews | None:
        """getOrders ``lastmodifieddate:[<after>..]``, ``limit=1``: news when an order changed after the
        newest change the hub stored (``seen``), or after the window's start for a cursor without one.

        A cursor in the middle of a window (the last import stopped while paging) is news without a
        call. The marker is the probe's start and the count of orders after it: a further sale raises
        the count, an import moves the start.
        """
        after = probe_after(self.title, cursor, paging_key="to", start_key="from")
        if isinstance(after, OrderNews):
            return after
        page = self.client.orders_page(iso_ms(after), None, limit=1, offset=0)
        total = int(page.get("total") or 0)
        return OrderNews(total > 0, f"after:{iso_ms(after)}:orders:{total}", {"after": iso_ms(after), "orders": total})

    def listings(self) -> Iterator[tuple[str | None, str | None]]:
        for offer in self.client.list_offers():
            sku, offer_id = offer.get("sku"), offer.get("offerId")
            yield (str(sku) if sku else None), (str(offer_id) if offer_id else None)

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        """The seller's offers as the reconciliation compares them."""
        for offer in self.client.list_offers():
            price = ((offer.get("pricingSummary") or {}).get("price")) or {}
            value = price.get("value")
            quantity = offer.get("availableQuantity")
            yield ChannelOffer(
                str(offer.get("sku")),
                Decimal(str(value)) if value is not None else None,
                price.get("currency"),
                int(quantity) if quantity is not None else None,
            )


def _now() -> datetime:
    return datetime.now(UTC)


def order_status(order: Mapping[str, Any]) -> OrderStatus:
    """The hub status of a Fulfillment API order.

    ``cancelStatus.cancelState`` ``CANCELED`` → cancelled; otherwise ``orderPaymentStatus`` PAID (or
    refunded after payment) → ready, PENDING/FAILED → unpaid.

    Raises:
        MalformedOrder: a payment status this reader does not know.
    """
    order_id = str(order.get("orderId") or "")
    if (order.get("cancelStatus") or {}).get("cancelState") == "CANCELED":
        return "cancelled"
    payment = order.get("orderPaymentStatus")
    if payment in PAID:
        return "ready"
    if payment in UNPAID:
        return "unpaid"
    raise MalformedOrder(order_id, f"orderPaymentStatus {payment!r} is not one of {sorted(PAID | UNPAID)}")


def ebay_order(order: Mapping[str, Any]) -> MarketplaceOrder:
    """A Fulfillment API order as a :class:`MarketplaceOrder` (SKU from ``lineItems[].sku``).

    Raises:
        MalformedOrder: no order id, no line items, or a line the hub cannot import.
    """
    order_id = order.get("orderId")
    if not order_id:
        raise MalformedOrder(None, "an order in the answer has no orderId")
    order_id = str(order_id)
    status = order_status(order)
    items = order.get("lineItems")
    if not isinstance(items, list) or not items:
        raise MalformedOrder(order_id, "the order has no line items")
    lines = []
    for item in items:
        cost = item.get("lineItemCost") or {}
        quantity = item.get("quantity")
        total = money(cost.get("value"))
        unit = total / quantity if total is not None and isinstance(quantity, int) and quantity > 0 else None
        lines.append(
            order_line(
                order_id,
                item.get("lineItemId"),
                item.get("sku"),
                item.get("legacyItemId"),
                quantity,
                unit,
                cost.get("currency"),
            )
        )
    cancel_state = (order.get("cancelStatus") or {}).get("cancelState")
    words = [str(order.get("orderPaymentStatus")), str(order.get("orderFulfillmentStatus")), str(cancel_state)]
    return MarketplaceOrder(
        order_id=order_id,
        status=status,
        marketplace_status="/".join(words),
        revision=str(order.get("lastModifiedDate")) if order.get("lastModifiedDate") else None,
        updated_at=parse_time(order.get("lastModifiedDate")),
        lines=tuple(lines),
        created_at=parse_time(order.get("creationDate")),
    )


def _item(sku: str, rows: list[Item]) -> dict[str, Any]:
    offer: dict[str, Any] = {"offerId": rows[0].offer_id}
    item: dict[str, Any] = {"sku": sku, "offers": [offer]}
    for row in rows:
        if row.field == "price":
            offer["price"] = {"value": str(row.amount), "currency": row.currency}
        else:
            offer["availableQuantity"] = row.quantity
            item["shipToLocationAvailability"] = {"quantity": row.quantity}
    return item


registry.register(
    registry.ChannelKind(
        name="ebay",
        family="marketplace",
        title="eBay",
        capabilities=frozenset({"publish", "read_back", "import_orders"}),
        outbox_fields=("price", "quantity"),
        marketplace=EbayMarketplace.from_connection,
        needs_connection=True,
        asset=registry.fixed_asset("EBAY_OFFERS"),
        pool="ebay_api",
        pool_slots=2,
        rate_limit="daily call quotas per app; each task's bucket allows 50 requests/s: 2 x 50/s = 100/s",
    )
)
