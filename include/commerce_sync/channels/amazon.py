"""Amazon SP-API: Login-with-Amazon tokens, the Feeds API, a ``JSON_LISTINGS_FEED`` outbox publisher and
the Listings Items API read-back for reconciliation.

A publish run claims the channel's pending outbox rows, builds one feed (≤ 25,000 messages, one
``PATCH`` message per SKU carrying ``/attributes/purchasable_offer`` and/or
``/attributes/fulfillment_availability``; ``messageId`` ↔ outbox rows), then
``createFeedDocument`` → upload → ``createFeed`` → poll ``getFeed`` → ``getFeedDocument`` → read the
processing report. Messages named in the report's ERROR issues fail with Amazon's text, per SKU; the
rest are sent. ``createFeed`` is limited to 5 submissions per 5 minutes (token bucket). Values are
absolute, so a feed re-submitted after a crash or a lost answer has no second effect.

Read-back (:func:`read_offers`): ``searchListingsItems`` (Listings Items API 2021-08-01) with
``includedData=summaries,offers,fulfillmentAvailability``, 20 per page, 5 requests/s with a burst of 5.
Amazon pages through at most 1,000 results of a search, so a seller's whole catalog cannot be read by
paging once it is larger: the reconciliation reads the SKUs the hub published, 20 per request
(``identifiersType=SKU``); SKUs containing a comma (which SP-API cannot tell from a separator) are read
one by one with ``getListingsItem``.

Orders (:meth:`AmazonMarketplace.read_orders`): Orders API v2026-01-01 ``searchOrders`` with
``lastUpdatedAfter`` (v0 ``getOrders`` is deprecated), ``includedData=FULFILLMENT,CANCELLATION``, up to
100 per page, following ``pagination.nextToken`` (sent with the same other parameters, as the API
requires). The answer's ``lastUpdatedBefore`` closes the window; the next one starts ``overlap`` before
it. searchOrders allows 0.0056 requests/s with a burst of 20: the client's ``orders_bucket`` keeps to
it (the benchmark passes a larger one). A pagination token expires after 24 hours: a rejected one
restarts the window from its start (an overlap, never a gap).

The cursor also keeps ``seen``, the newest ``lastUpdatedTime`` the hub has stored. The order doorbell's
probe (:meth:`AmazonMarketplace.orders_changed_since`) is one searchOrders call from ``seen`` + 1 ms with
``maxResultsPerPage=1``. searchOrders' budget is tiny (one request per ~179 s sustained), so the probe
asks at most every :data:`ORDER_PROBE_SECONDS` (half the sustained rate; the import keeps the rest and
the burst) and never waits for the bucket: with no token free it does not ask. For a sale-to-listing
time of seconds on Amazon, subscribe to SP-API notifications (``ORDER_CHANGE``) instead of probing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

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
from commerce_sync.errors import ChannelError, ConfigError, TransientError
from commerce_sync.transport.http import ChannelRequestError, OAuthClient, TokenBucket

log = logging.getLogger(__name__)

API = "/feeds/2021-06-30"
LISTINGS_API = "/listings/2021-08-01"
MAX_MESSAGES = 25_000
FEED_SUBMISSIONS = (5.0, 300.0)  # createFeed: 5 per 5 minutes
LISTINGS_SEARCHES = (5.0, 1.0, 5.0)  # searchListingsItems: 5 requests/s, burst 5
LISTINGS_GETS = (5.0, 1.0, 10.0)  # getListingsItem: 5 requests/s, burst 10
MAX_PAGE_SIZE = 20  # searchListingsItems pageSize and identifiers per request
MAX_SEARCH_RESULTS = 1000  # searchListingsItems pages through at most this many results
INCLUDED_DATA = "summaries,offers,fulfillmentAvailability"
ORDERS_API = "/orders/2026-01-01"
ORDER_SEARCHES = (0.0056, 1.0, 20.0)  # searchOrders: 0.0056 requests/s, burst 20
ORDER_GETS = (0.5, 1.0, 30.0)  # getOrder: 0.5 requests/s, burst 30
MAX_ORDERS_PER_PAGE = 100
ORDER_DATA = "FULFILLMENT,CANCELLATION"
ORDER_OVERLAP = timedelta(minutes=5)
ORDER_PROBE_SECONDS = 2 / ORDER_SEARCHES[0]  # ~357 s: the doorbell's probes take half the sustained rate
ORDER_STATUSES: dict[str, OrderStatus] = {
    "PENDING_AVAILABILITY": "unpaid",
    "PENDING": "unpaid",
    "UNSHIPPED": "ready",
    "PARTIALLY_SHIPPED": "ready",
    "SHIPPED": "ready",
    "CANCELLED": "cancelled",
    # Amazon-fulfilled multi-channel orders only: nothing leaves the seller's own stock.
    "UNFULFILLABLE": "cancelled",
}
"""Orders API v2026-01-01 ``fulfillment.fulfillmentStatus`` → the hub's order status."""
SCHEMA = Path(__file__).resolve().parents[3] / ".." / "shared" / "contracts" / "amazon" / "listings-feed-schema-v2.json"


class AmazonClient(OAuthClient):
    """SP-API client (Feeds API) with an LWA access token from a refresh token.

    Args:
        base_url: the regional SP-API endpoint (``https://sellingpartnerapi-eu.amazon.com``) or the simulator.
        client_id: LWA client id.
        client_secret: LWA client secret (never shown).
        refresh_token: the seller's LWA refresh token (never shown).
        token_url: LWA endpoint (``https://api.amazon.com/auth/o2/token``; default: on ``base_url``).
        seller_id: the selling partner id (needed by the Listings Items API).
        marketplace_id: the marketplace the channel sells in (``A1C3SOZRARQ6R3`` = Amazon.pl).
        **options: passed to :class:`~commerce_sync.transport.http.HttpClient`.
    """

    channel = "amazon"
    auth_failure_statuses = frozenset({401, 403})  # SP-API answers an expired or revoked token with 403
    auth_header = "x-amz-access-token"
    auth_scheme = ""
    token_margin = 120.0

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_url: str | None = None,
        seller_id: str | None = None,
        marketplace_id: str | None = None,
        product_type: str = "PRODUCT",
        conn_id: str | None = None,
        orders_rate: tuple[float, float, float] = ORDER_SEARCHES,
        order_gets_rate: tuple[float, float, float] = ORDER_GETS,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.client_id = client_id
        self.seller_id = seller_id
        self.marketplace_id = marketplace_id
        self.product_type = product_type
        self.conn_id = conn_id
        self.__secret = client_secret
        self.__refresh_token = refresh_token
        self.token_url = token_url or self.base_url + "/auth/o2/token"
        self.feed_bucket = TokenBucket(*FEED_SUBMISSIONS, sleep=self._sleep)
        self.search_bucket = TokenBucket(*LISTINGS_SEARCHES, sleep=self._sleep)
        self.get_bucket = TokenBucket(*LISTINGS_GETS, sleep=self._sleep)
        self.orders_bucket = TokenBucket(*orders_rate, sleep=self._sleep)
        self.order_get_bucket = TokenBucket(*order_gets_rate, sleep=self._sleep)
        self.session.headers["Accept"] = "application/json"

    def _sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    @classmethod
    def from_connection(cls, info: ConnectionInfo, **options: Any) -> AmazonClient:
        """From an Airflow connection: host = SP-API endpoint, login/password = LWA client id/secret,
        ``extra.refresh_token``, optional ``extra.token_url``, ``extra.seller_id``, ``extra.marketplace_id``
        and ``extra.product_type`` (default ``PRODUCT``)."""
        refresh = info.extra.get("refresh_token")
        if not info.login or not info.password or not refresh:
            raise ConfigError(
                f"connection {info.conn_id!r} needs login (LWA client id), password (LWA client secret) and "
                "extra.refresh_token"
            )
        seller_id = info.extra.get("seller_id")
        marketplace_id = info.extra.get("marketplace_id")
        return cls(
            info.base_url(),
            info.login,
            info.password,
            str(refresh),
            info.extra.get("token_url"),
            seller_id=str(seller_id) if seller_id else None,
            marketplace_id=str(marketplace_id) if marketplace_id else None,
            product_type=str(info.extra.get("product_type") or "PRODUCT"),
            conn_id=info.conn_id,
            **options,
        )

    def __repr__(self) -> str:
        return f"AmazonClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def _request_token(self) -> requests.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.__refresh_token,
            "client_id": self.client_id,
            "client_secret": self.__secret,
        }
        return self.request(
            "POST",
            self.token_url,
            body=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            authenticate=False,
        )

    def submit_feed(self, document: Mapping[str, Any], marketplace_ids: list[str]) -> str:
        """createFeedDocument → upload → createFeed (rate-limited); returns the feed id."""
        created = self.request(
            "POST", f"{API}/documents", json_body={"contentType": "application/json; charset=UTF-8"}
        ).json()
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.request(
            "PUT",
            created["url"],
            body=data,
            headers={"Content-Type": "application/json; charset=UTF-8"},
            authenticate=False,
        )
        self.feed_bucket.acquire()
        answer = self.request(
            "POST",
            f"{API}/feeds",
            json_body={
                "feedType": "JSON_LISTINGS_FEED",
                "marketplaceIds": marketplace_ids,
                "inputFeedDocumentId": created["feedDocumentId"],
            },
        ).json()
        return str(answer["feedId"])

    def wait_for_feed(self, feed_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Poll getFeed until DONE; raise on CANCELLED/FATAL or after ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 1.0
        while True:
            feed: dict[str, Any] = self.request("GET", f"{API}/feeds/{feed_id}").json()
            status = feed.get("processingStatus")
            if status == "DONE":
                return feed
            if status in ("CANCELLED", "FATAL"):
                raise ChannelError(f"amazon: feed {feed_id} ended {status}; its processing report may say why")
            if time.monotonic() + delay > deadline:
                raise TransientError(f"amazon: feed {feed_id} still {status} after {timeout:.0f}s; rows stay pending")
            self.sleep(delay)
            delay = min(delay * 2, 30.0)

    def report(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """The processing report of a DONE feed (getFeedDocument, then download)."""
        document = self.request("GET", f"{API}/documents/{feed['resultFeedDocumentId']}").json()
        report: dict[str, Any] = self.request("GET", document["url"], authenticate=False).json()
        return report

    def account(self) -> tuple[str, str]:
        """(seller id, marketplace id): the Listings Items API and the listings feed need both.

        Raises:
            ConfigError: the connection does not give them.
        """
        if not self.seller_id or not self.marketplace_id:
            raise ConfigError(
                f"amazon: connection {self.conn_id or '(unnamed)'!r} needs extra.seller_id and "
                "extra.marketplace_id (the selling partner id and the marketplace, e.g. A1C3SOZRARQ6R3 for Amazon.pl)"
            )
        return self.seller_id, self.marketplace_id

    def search_orders(
        self, updated_after: str, *, page_size: int = MAX_ORDERS_PER_PAGE, token: str | None = None
    ) -> dict[str, Any]:
        """searchOrders (v2026-01-01): one page of the orders updated at or after ``updated_after``.

        Waits for the ``orders_bucket`` (searchOrders' rate limit) first.
        """
        _, marketplace_id = self.account()
        params: dict[str, Any] = {
            "lastUpdatedAfter": updated_after,
            "marketplaceIds": marketplace_id,
            "maxResultsPerPage": max(1, min(page_size, MAX_ORDERS_PER_PAGE)),
            "includedData": ORDER_DATA,
        }
        if token:
            params["paginationToken"] = token
        self.orders_bucket.acquire()
        page: dict[str, Any] = self.request("GET", f"{ORDERS_API}/orders", params=params).json()
        return page

    def get_order(self, order_id: str) -> dict[str, Any]:
        """getOrder (v2026-01-01) with the fulfillment and cancellation data."""
        self.order_get_bucket.acquire()
        answer = self.request(
            "GET", f"{ORDERS_API}/orders/{quote(order_id, safe='')}", params={"includedData": ORDER_DATA}
        ).json()
        order: dict[str, Any] = answer.get("order") or {}
        return order

    def _search(self, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        seller_id, marketplace_id = self.account()
        query = {"marketplaceIds": marketplace_id, "includedData": INCLUDED_DATA, "pageSize": MAX_PAGE_SIZE, **params}
        token: str | None = None
        while True:
            self.search_bucket.acquire()
            page: dict[str, Any] = self.request(
                "GET",
                f"{LISTINGS_API}/items/{quote(seller_id, safe='')}",
                params={**query, "pageToken": token} if token else query,
            ).json()
            if token is None and "identifiers" not in params:
                found = int(page.get("numberOfResults") or 0)
                if found > MAX_SEARCH_RESULTS:
                    raise ChannelError(
                        f"amazon: the seller has {found} listings in {marketplace_id}; searchListingsItems pages "
                        f"through at most {MAX_SEARCH_RESULTS}: read them by SKU (list_listings(skus=...))"
                    )
            yield from page.get("items") or []
            token = (page.get("pagination") or {}).get("nextToken")
            if not token:
                return

    def list_listings(self, skus: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The seller's listings in the connection's marketplace (searchListingsItems, 20 per request).

        Args:
            skus: read only these SKUs, 20 per request; a SKU that has no listing is simply absent. Without
                it every listing is paged through, sorted by SKU (a ``lastUpdatedDate`` order would move
                listings edited while we page); more than 1,000 listings then raise :class:`ChannelError`.
        """
        if skus is None:
            yield from self._search({"sortBy": "sku", "sortOrder": "ASC"})
            return
        batch: list[str] = []
        for sku in skus:
            if "," in sku:  # SP-API cannot tell a comma in a SKU from a separator
                found = self.get_listing(sku)
                if found is not None:
                    yield found
                continue
            batch.append(sku)
            if len(batch) == MAX_PAGE_SIZE:
                yield from self._search({"identifiers": ",".join(batch), "identifiersType": "SKU"})
                batch = []
        if batch:
            yield from self._search({"identifiers": ",".join(batch), "identifiersType": "SKU"})

    def get_listing(self, sku: str) -> dict[str, Any] | None:
        """One listing (getListingsItem), or None if the SKU has none in the marketplace."""
        seller_id, marketplace_id = self.account()
        self.get_bucket.acquire()
        try:
            item: dict[str, Any] = self.request(
                "GET",
                f"{LISTINGS_API}/items/{quote(seller_id, safe='')}/{quote(sku, safe='')}",
                params={"marketplaceIds": marketplace_id, "includedData": INCLUDED_DATA},
            ).json()
        except ChannelRequestError as error:
            if error.status == 404:
                return None
            raise
        return item


def offer_of(item: Mapping[str, Any], marketplace_id: str | None = None) -> ChannelOffer:
    """What a Listings Items API item shows: the B2C offer's price and the merchant-fulfilled quantity.

    Business (B2B) prices and Amazon-fulfilled (AFN) stock are not what the hub publishes and are ignored.
    """
    price: Decimal | None = None
    currency: str | None = None
    for offer in item.get("offers") or []:
        if offer.get("offerType") != "B2C":
            continue
        if marketplace_id and offer.get("marketplaceId") not in (None, marketplace_id):
            continue
        money = offer.get("price") or {}
        if money.get("amount") is not None:
            price = Decimal(str(money["amount"]))
            currency = money.get("currencyCode")
            break
    quantity: int | None = None
    for availability in item.get("fulfillmentAvailability") or []:
        if availability.get("fulfillmentChannelCode") == "DEFAULT" and availability.get("quantity") is not None:
            quantity = int(availability["quantity"])
            break
    return ChannelOffer(str(item.get("sku")), price, currency, quantity)


def listings_feed(seller_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON_LISTINGS_FEED document (schema v2)."""
    return {"header": {"sellerId": seller_id, "version": "2.0", "issueLocale": "en_US"}, "messages": messages}


def validate_feed(document: Mapping[str, Any], schema_path: Path = SCHEMA) -> None:
    """Validate against Amazon's published listings feed schema (raises ``jsonschema.ValidationError``)."""
    import jsonschema

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.validate(document, schema)


def _message(message_id: int, sku: str, product_type: str, marketplace: str, rows: list[Item]) -> dict[str, Any]:
    patches: list[dict[str, Any]] = []
    for row in rows:
        value: dict[str, Any]
        if row.field == "price":
            value = {
                "marketplace_id": marketplace,
                "currency": row.currency,
                "our_price": [{"schedule": [{"value_with_tax": float(row.amount)}]}],
            }
            patches.append({"op": "replace", "path": "/attributes/purchasable_offer", "value": [value]})
        else:
            value = {"fulfillment_channel_code": "DEFAULT", "quantity": row.quantity}
            patches.append({"op": "replace", "path": "/attributes/fulfillment_availability", "value": [value]})
    return {
        "messageId": message_id,
        "sku": sku,
        "operationType": "PATCH",
        "productType": product_type,
        "patches": patches,
    }


class AmazonMarketplace(Marketplace):
    """Amazon as the publisher sees it: one ``JSON_LISTINGS_FEED`` of up to 25,000 PATCH messages per request.

    Listings are addressed by our SKU (no offer id to learn). A feed is processed asynchronously:
    ``createFeedDocument`` → upload → ``createFeed`` (5 per 5 minutes) → poll ``getFeed`` → processing
    report, whose ERROR issues name the failed messages; a message id maps back to a SKU's rows.
    Read-back asks the Listings Items API for the SKUs the hub published, 20 per request, because a
    search pages through at most 1,000 results.
    """

    kind = "amazon"
    title = "Amazon"
    max_items_per_request = MAX_MESSAGES
    needs_offer_id = False
    reads_back_by_sku = True
    request_noun = "feed"
    probes_orders = True
    order_probe_seconds = ORDER_PROBE_SECONDS
    client: AmazonClient

    def __init__(
        self, client: AmazonClient, poll_timeout: float = 600.0, order_overlap: timedelta = ORDER_OVERLAP
    ) -> None:
        super().__init__(client)
        self.poll_timeout = poll_timeout
        self.order_overlap = order_overlap

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> AmazonMarketplace:
        return cls(AmazonClient.from_connection(info))

    def prepare(self) -> None:
        self.client.account()  # fails early, naming the connection, when the ids are missing

    def build(self, items: list[Item]) -> Request:
        seller_id, marketplace_id = self.client.account()
        by_sku: dict[str, list[Item]] = {}
        for item in items:
            by_sku.setdefault(item.sku, []).append(item)
        skus = sorted(by_sku)
        messages = [
            _message(number, sku, self.client.product_type, marketplace_id, by_sku[sku])
            for number, sku in enumerate(skus, 1)
        ]
        return Request(items, listings_feed(seller_id, messages), context={"skus": skus})

    def send(self, request: Request) -> str:
        _, marketplace_id = self.client.account()
        feed_id = self.client.submit_feed(request.body, [marketplace_id])
        request.request_id = feed_id
        return feed_id

    def collect(self, request: Request, sent: str) -> list[Outcome]:
        feed_id = sent
        report = self.client.report(self.client.wait_for_feed(feed_id, timeout=self.poll_timeout))
        errors: dict[int, list[str]] = {}
        for issue in report.get("issues") or []:
            if issue.get("severity") == "ERROR":
                errors.setdefault(int(issue.get("messageId") or 0), []).append(
                    f"{issue.get('code')}: {issue.get('message')}"
                )
        number_of = {sku: number for number, sku in enumerate(request.context["skus"], 1)}
        outcomes: list[Outcome] = []
        for item in request.items:
            number = number_of[item.sku]
            problem = errors.get(number) or errors.get(0)
            if problem:
                error = f"SKU {item.sku}: {'; '.join(problem)}"
                outcomes.append(Outcome(item.id, "failed", {"feedId": feed_id}, error))
            else:
                outcomes.append(Outcome(item.id, "sent", {"feedId": feed_id, "messageId": number}))
        return outcomes

    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        """One searchOrders page of the orders updated since the cursor (see the module docs).

        The cursor is ``{"after"}``, plus ``{"token", "before"}`` while a window is paged.
        """
        state = decode_cursor(self.title, cursor) or {"after": iso_ms(datetime.now(UTC))}
        reading = Reading(self.title, self.client)
        after = str(state["after"])
        token = state.get("token")
        with reading_orders(self.title):
            try:
                page = self.client.search_orders(after, page_size=limit, token=token)
            except ChannelRequestError as error:
                if not token or error.status != 400:
                    raise
                log.warning("amazon: pagination token refused (%s); reading the window from %s again", error, after)
                reading.count("restarted_windows")
                token = None
                page = self.client.search_orders(after, page_size=limit)
            reading.count("pages")
            newest = reading.take(
                page.get("orders") or [],
                amazon_order,
                complete=lambda order: isinstance((order.get("fulfillment") or {}).get("fulfillmentStatus"), str),
                fetch=self.client.get_order,
            )
        seen = max(filter(None, (parse_time(state.get("seen")), newest)), default=None)
        next_token = (page.get("pagination") or {}).get("nextToken")
        before = page.get("lastUpdatedBefore") or state.get("before")
        if next_token:
            cursor_state: dict[str, Any] = {"after": after, "token": next_token}
            if before:
                cursor_state["before"] = before
        else:
            end = parse_time(before) or newest
            start = parse_time(after)
            if end is None or start is None:
                cursor_state = {"after": after}
            else:
                cursor_state = {"after": iso_ms(max(start, end - self.order_overlap))}
        if seen is not None:
            cursor_state["seen"] = iso_ms(seen)
        return reading.batch(cursor_state, more=bool(next_token))

    def orders_changed_since(self, cursor: str | None) -> OrderNews | None:
        """searchOrders from the newest change the hub stored (``seen`` + 1 ms, else the cursor's
        ``after``), one result: news when Amazon returns an order. None, without a call, when the
        client's searchOrders bucket has no token free (the import must not wait for the probe's).

        A cursor in the middle of a window (``token``) is news without a call. The marker is the probe's
        start, the first order it returned and whether there were more.
        """
        start = probe_after(self.title, cursor, paging_key="token", start_key="after")
        if isinstance(start, OrderNews):
            return start
        after = iso_ms(start)
        if self.client.orders_bucket.delay() > 0:
            return None
        page = self.client.search_orders(after, page_size=1)
        listed = page.get("orders") or []
        if not listed:
            return OrderNews(False, f"after:{after}:none", {"after": after, "orders": 0})
        first = listed[0]
        more = bool((page.get("pagination") or {}).get("nextToken"))
        marker = f"after:{after}:first:{first.get('orderId')}@{first.get('lastUpdatedTime')}:more:{more}"
        return OrderNews(True, marker, {"after": after, "first_order": first.get("orderId"), "more": more})

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        """The seller's offers as the reconciliation compares them (all listings, or only ``skus``)."""
        for item in self.client.list_listings(skus):
            yield offer_of(item, self.client.marketplace_id)


def amazon_order(order: Mapping[str, Any]) -> MarketplaceOrder:
    """An Orders API v2026-01-01 order as a :class:`MarketplaceOrder` (SKU from ``product.sellerSku``,
    offer id = ASIN).

    Raises:
        MalformedOrder: no order id, an unknown or missing fulfillment status, no items, or an item the hub
            cannot import. A cancelled order's items with ``quantityOrdered`` 0 are left out: the hub releases
            a cancelled order's reservations by order.
    """
    order_id = order.get("orderId")
    if not order_id:
        raise MalformedOrder(None, "an order in the answer has no orderId")
    order_id = str(order_id)
    word = (order.get("fulfillment") or {}).get("fulfillmentStatus")
    status = ORDER_STATUSES.get(str(word))
    if status is None:
        raise MalformedOrder(order_id, f"fulfillment status {word!r} is not one of {sorted(ORDER_STATUSES)}")
    items = order.get("orderItems")
    if not isinstance(items, list):
        raise MalformedOrder(order_id, "the order has no orderItems")
    lines = []
    for item in items:
        if status == "cancelled" and item.get("quantityOrdered") == 0:
            continue
        product = item.get("product") or {}
        price = (product.get("price") or {}).get("unitPrice") or {}
        lines.append(
            order_line(
                order_id,
                item.get("orderItemId"),
                product.get("sellerSku"),
                product.get("asin"),
                item.get("quantityOrdered"),
                money(price.get("amount")),
                price.get("currencyCode"),
            )
        )
    if not lines and status != "cancelled":
        raise MalformedOrder(order_id, "the order has no items")
    return MarketplaceOrder(
        order_id=order_id,
        status=status,
        marketplace_status=str(word),
        revision=str(order.get("lastUpdatedTime")) if order.get("lastUpdatedTime") else None,
        updated_at=parse_time(order.get("lastUpdatedTime")),
        lines=tuple(lines),
        created_at=parse_time(order.get("createdTime")),
    )


registry.register(
    registry.ChannelKind(
        name="amazon",
        family="marketplace",
        title="Amazon",
        capabilities=frozenset({"publish", "read_back", "import_orders"}),
        outbox_fields=("price", "quantity"),
        marketplace=AmazonMarketplace.from_connection,
        needs_connection=True,
        asset=registry.fixed_asset("AMAZON_LISTINGS"),
        pool="amazon_api",
        pool_slots=1,
        rate_limit="createFeed 5 per 5 min per region; each task's bucket allows 5 per 5 min: 1 x 5",
    )
)
