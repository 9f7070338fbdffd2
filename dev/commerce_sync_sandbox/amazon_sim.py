"""A local Amazon SP-API simulator: LWA tokens, the Feeds API (2021-06-30) for ``JSON_LISTINGS_FEED`` and the
read side of the Listings Items API (2021-08-01).

Contract (``../shared/contracts/amazon/feeds_2021-06-30.json`` and the listings feed schema v2):

* ``POST /auth/o2/token`` (Login with Amazon), form ``grant_type=refresh_token&refresh_token&client_id&client_secret``;
* ``POST /feeds/2021-06-30/documents`` ``{"contentType"}`` → ``{"feedDocumentId", "url"}``; the
  client ``PUT``s the feed document to ``url`` (here ``/_upload/{id}``, S3 in production, no auth);
* ``POST /feeds/2021-06-30/feeds`` ``{"feedType", "marketplaceIds", "inputFeedDocumentId"}`` → 202
  ``{"feedId"}``; processing is immediate here, so ``GET /feeds/2021-06-30/feeds/{feedId}`` is ``DONE``
  with a ``resultFeedDocumentId``;
* ``GET /feeds/2021-06-30/documents/{id}`` → ``{"feedDocumentId", "url"}`` of the processing report
  (``/_download/{id}``), whose ``issues`` name the ``messageId`` and SKU of every refused message.

Listings Items API (``listingsItems_2021-08-01.json`` in amzn/selling-partner-api-models), read side:

* ``GET /listings/2021-08-01/items/{sellerId}`` (searchListingsItems): ``marketplaceIds`` (required),
  ``includedData`` (``summaries`` default, ``offers``, ``fulfillmentAvailability``, ``issues``),
  ``identifiers`` + ``identifiersType=SKU`` (≤ 20), ``sortBy`` (``sku`` | ``createdDate`` |
  ``lastUpdatedDate``, default the last) and ``sortOrder`` (default ``DESC``), ``pageSize`` (≤ 20,
  default 10), ``pageToken``; answers ``{"numberOfResults", "pagination": {"nextToken",
  "previousToken"}, "items"}``. As on Amazon, only the first 1,000 results can be paged through
  (``numberOfResults`` still counts them all), and a listing edited between two pages moves in a
  ``lastUpdatedDate`` ordering;
* ``GET /listings/2021-08-01/items/{sellerId}/{sku}`` (getListingsItem), 404 for an unknown SKU.

Orders API v2026-01-01 (``../shared/contracts/amazon/orders_2026-01-01.json``), orders from the sandbox's
order book (:mod:`commerce_sync_sandbox.orders`):

* ``GET /orders/2026-01-01/orders`` (searchOrders): exactly one of ``createdAfter``/``lastUpdatedAfter``
  (the sandbox answers ``lastUpdatedAfter``), optional ``lastUpdatedBefore`` (at least two minutes before
  now), ``marketplaceIds``, ``maxResultsPerPage`` (1..100, default 100), ``includedData``,
  ``paginationToken``. Orders come oldest change first; the answer's ``lastUpdatedBefore`` is the end of
  the window it covers (the request's, or the moment of the first page), kept by the pagination token,
  so an order changed while a reader pages moves past the window instead of shifting the pages;
* ``GET /orders/2026-01-01/orders/{orderId}`` (getOrder) → ``{"order"}``.

``fulfillment.fulfillmentStatus`` (with ``includedData=FULFILLMENT``) is ``PENDING`` until paid, then
``UNSHIPPED``; ``CANCELLED`` after a cancellation (item ``cancellation`` with ``includedData=CANCELLATION``).
Answers carry ``x-amzn-RateLimit-Limit`` (searchOrders 0.0056/s, getOrder 0.5/s).

Offers are ``offerType`` ``B2C`` with ``price`` ``{"amount", "currencyCode"}``; availability is
``fulfillmentChannelCode`` ``DEFAULT`` (merchant-fulfilled) with ``quantity``. The answers carry
``x-amzn-RateLimit-Limit`` (searchListingsItems 5 requests/s, burst 5; getListingsItem 5/s, burst 10);
the simulator does not throttle by itself: the ``throttle`` fault does.

Listings are changed with ``PATCH`` messages on ``/attributes/purchasable_offer`` (price) and
``/attributes/fulfillment_availability`` (quantity). Values are absolute, so a re-submitted feed
changes nothing twice: ``stats["revisions"]`` counts only real changes. API calls need the
``x-amz-access-token`` header. Faults (:mod:`commerce_sync_sandbox.faults`) apply to API calls;
``drop_after_apply`` loses the answer of ``createFeed`` after the feed was processed.

Sandbox endpoints (no auth): ``GET /_sandbox/stats``, ``GET|POST /_sandbox/faults``,
``POST /_sandbox/listings/{sku}`` ``{"price", "quantity"}`` (a direct edit in Seller Central) and the order
endpoints of :mod:`commerce_sync_sandbox.orders` (``POST /_sandbox/orders`` buys, lowering the quantity).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from commerce_sync_sandbox import orders as order_book
from commerce_sync_sandbox.catalog import products
from commerce_sync_sandbox.faults import Faults
from commerce_sync_sandbox.http import JsonHandler, SimulatorServer
from commerce_sync_sandbox.orders import OrderBook, iso, now_us, parse_iso
from commerce_sync_sandbox.simulators import SimulatorContext, SimulatorSpec, register
from commerce_sync_sandbox.state import load_state, save_state

API = "2021-06-30"
LISTINGS_API = "2021-08-01"
MAX_MESSAGES = 25_000
MAX_PAGE_SIZE = 20
DEFAULT_PAGE_SIZE = 10
MAX_IDENTIFIERS = 20
MAX_SEARCH_RESULTS = 1000
"""searchListingsItems pages through at most this many results, however many match."""
INCLUDED_DATA = frozenset({"summaries", "offers", "fulfillmentAvailability", "issues"})
"""``includedData`` sets the sandbox answers (Amazon has more: attributes, procurement, ...)."""
SORT_KEYS = ("sku", "createdDate", "lastUpdatedDate")
RATE_LIMITS = {"search": "5.0", "item": "5.0"}
"""``x-amzn-RateLimit-Limit`` of searchListingsItems and getListingsItem (requests per second)."""
ORDERS_API = "2026-01-01"
ORDER_RATE_LIMITS = {"search": "0.0056", "get": "0.5"}
MAX_ORDERS_PER_PAGE = 100
ORDER_DATA = frozenset(
    {
        "BUYER",
        "RECIPIENT",
        "PROCEEDS",
        "EXPENSE",
        "PROMOTION",
        "CANCELLATION",
        "FULFILLMENT",
        "PACKAGES",
        "TAX",
        "PAYMENT",
        "FULFILLMENT_ORDERS",
    }
)
FULFILLMENT_STATUS = {"unpaid": "PENDING", "ready": "UNSHIPPED", "cancelled": "CANCELLED"}
BEFORE_MARGIN_US = 120 * 1_000_000
"""``lastUpdatedBefore`` must be at least two minutes before the request."""
PRICE_PATH = "/attributes/purchasable_offer"
QUANTITY_PATH = "/attributes/fulfillment_availability"


class SpApiError(Exception):
    """An error answer in SP-API's format."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON error document."""
        return {"errors": [{"code": self.code, "message": self.message}]}


class AmazonSimulator:
    """State and rules of the simulated seller account; thread-safe.

    With ``state_path`` the listings (price, quantity, last update) and counters are kept in that JSON
    file across restarts (saved after every change); feeds and documents are not. Without it
    everything lives in memory only.
    """

    def __init__(
        self,
        *,
        catalog_n: int = 300,
        seed: int = 42,
        seller_id: str = "A2SANDBOXSELLER",
        marketplace_id: str = "A1C3SOZRARQ6R3",
        client_id: str = "amzn1.application-oa2-client.sandbox",
        client_secret: str = "demo-amazon-secret",  # noqa: S107 - the sandbox's documented demo secret
        refresh_token: str = "Atzr|demo-amazon-refresh-token",  # noqa: S107 - documented demo value
        state_path: Path | None = None,
    ) -> None:
        self.state_path = state_path
        self.seller_id = seller_id
        self.marketplace_id = marketplace_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self.faults = Faults()
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._documents: dict[str, bytes | None] = {}
        self._feeds: dict[str, dict[str, Any]] = {}
        self._listings: dict[str, dict[str, Any]] = {}
        # What the Listings Items API shows besides price and quantity (name, ASIN, dates), per SKU.
        self._details: dict[str, dict[str, Any]] = {}
        created = self._last_update = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
        for product in products(catalog_n, seed):
            self._listings[product.sku] = {
                "sku": product.sku,
                "price": str((product.purchase_price * Decimal("1.45")).quantize(Decimal("0.01"))),
                "currency": "PLN",
                "quantity": product.stock,
            }
            asin = "B0" + hashlib.sha256(product.sku.encode()).hexdigest()[:8].upper()
            self._details[product.sku] = {"name": product.name, "asin": asin, "created": created, "updated": created}
        self.stats = {"requests": 0, "feeds": 0, "messages": 0, "revisions": 0, "searches": 0, "item_reads": 0}
        self.orders = OrderBook(self, self._lock, _new_ids)
        saved = load_state(state_path)
        if saved is not None:
            self.orders.load(saved.get("orders"))
            for sku, listing in saved.get("listings", {}).items():
                if sku in self._listings:
                    self._listings[sku] = listing
                    self._details[sku]["updated"] = datetime.fromisoformat(saved["updated"][sku])
            self._last_update = max(datetime.fromisoformat(saved["last_update"]), self._last_update)
            self.stats.update(saved.get("stats", {}))

    def _save(self) -> None:
        if self.state_path is None:
            return
        updated = {sku: detail["updated"].isoformat() for sku, detail in self._details.items()}
        save_state(
            self.state_path,
            {
                "listings": self._listings,
                "updated": updated,
                "last_update": self._last_update.isoformat(),
                "stats": self.stats,
                "orders": self.orders.state(),
            },
        )

    def __repr__(self) -> str:
        return f"AmazonSimulator(listings={len(self._listings)})"

    # ------------------------------------------------------------------ listings, for the order book
    def available(self, sku: str) -> int | None:
        listing = self._listings.get(sku)
        return int(listing["quantity"]) if listing else None

    def adjust(self, sku: str, delta: int) -> None:
        listing = self._listings[sku]
        listing["quantity"] = max(0, int(listing["quantity"]) + delta)
        self._touch(sku)

    def offer_of(self, sku: str) -> tuple[str, str, str, str]:
        listing = self._listings[sku]
        details = self._details[sku]
        return details["asin"], details["name"], listing["price"], listing["currency"]

    def order_request(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any] | None:
        """A ``/_sandbox/orders...`` request (see :mod:`commerce_sync_sandbox.orders`); saved after a change."""
        return order_book.handle(self.orders, method, parts, body, self._save)

    # ------------------------------------------------------------------ orders API
    def search_orders(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """``searchOrders``: one page of the orders changed in the window (see the module docs)."""
        if bool(_first(query, "createdAfter")) == bool(_first(query, "lastUpdatedAfter")):
            raise SpApiError(400, "InvalidInput", "exactly one of createdAfter and lastUpdatedAfter is required")
        if _first(query, "createdAfter") or _first(query, "createdBefore"):
            raise SpApiError(400, "InvalidInput", "the sandbox answers lastUpdatedAfter searches only")
        marketplaces = _csv(query, "marketplaceIds")
        if marketplaces and self.marketplace_id not in marketplaces:
            raise SpApiError(
                400, "InvalidInput", f"marketplaceIds {marketplaces}: this seller sells in {self.marketplace_id}"
            )
        included = self._order_data(query)
        raw_size = _first(query, "maxResultsPerPage")
        try:
            size = int(raw_size) if raw_size is not None else MAX_ORDERS_PER_PAGE
        except ValueError:
            raise SpApiError(400, "InvalidInput", f"maxResultsPerPage {raw_size!r} is not an integer") from None
        if not 1 <= size <= MAX_ORDERS_PER_PAGE:
            raise SpApiError(400, "InvalidInput", f"maxResultsPerPage must be between 1 and {MAX_ORDERS_PER_PAGE}")
        try:
            after = parse_iso(str(_first(query, "lastUpdatedAfter")))
            raw_before = _first(query, "lastUpdatedBefore")
            before = parse_iso(raw_before) + 1 if raw_before else None
        except ValueError as error:
            raise SpApiError(400, "InvalidInput", f"invalid date: {error}") from None
        now = now_us()
        if before is not None and (before <= after or before > now - BEFORE_MARGIN_US):
            raise SpApiError(
                400, "InvalidInput", "lastUpdatedBefore must be after lastUpdatedAfter and two minutes before now"
            )
        fixed = {
            k: v for k, v in sorted(query.items()) if k not in ("paginationToken", "maxResultsPerPage", "includedData")
        }
        fingerprint = hashlib.sha256(json.dumps(fixed).encode()).hexdigest()[:16]
        token = _first(query, "paginationToken")
        start = after
        if token is not None:
            try:
                document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                bound, start, matches = int(document["b"]), int(document["k"]) + 1, document["q"] == fingerprint
            except (binascii.Error, ValueError, KeyError, TypeError):
                raise SpApiError(400, "InvalidInput", "paginationToken is not valid") from None
            if not matches:
                raise SpApiError(400, "InvalidInput", "paginationToken does not belong to this search")
        else:
            bound = before if before is not None else now
        with self._lock:
            self.stats["searches"] += 1
            found: list[tuple[int, dict[str, Any]]] = []
            for at, order in self.orders.changed(start, bound):
                found.append((at, order))
                if len(found) > size:
                    break
            page = [_amazon_order(order, included, self.marketplace_id) for _, order in found[:size]]
        if self.faults.sparse_orders:
            for listed in page:
                listed.pop("fulfillment", None)
        answer: dict[str, Any] = {"orders": page, "lastUpdatedBefore": iso(bound)}
        if len(found) > size:
            key = found[size - 1][0]
            next_token = json.dumps({"b": bound, "k": key, "q": fingerprint}).encode()
            answer["pagination"] = {"nextToken": base64.urlsafe_b64encode(next_token).decode().rstrip("=")}
        return answer

    def get_order(self, order_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """``getOrder``."""
        included = self._order_data(query)
        with self._lock:
            order = self.orders.orders.get(order_id)
            if order is None:
                raise SpApiError(404, "NotFound", f"order {order_id} not found")
            return {"order": _amazon_order(order, included, self.marketplace_id)}

    @staticmethod
    def _order_data(query: dict[str, list[str]]) -> set[str]:
        included = set(_csv(query, "includedData"))
        unknown = included - ORDER_DATA
        if unknown:
            raise SpApiError(400, "InvalidInput", f"includedData {sorted(unknown)} is not valid")
        return included

    # ------------------------------------------------------------------ auth
    def issue_token(self, form: dict[str, str]) -> dict[str, Any]:
        """A Login-with-Amazon access token for the refresh-token grant."""
        if form.get("grant_type") != "refresh_token":
            raise SpApiError(400, "unsupported_grant_type", "only grant_type=refresh_token is supported")
        valid_client = secrets.compare_digest(form.get("client_id", ""), self._client_id)
        if not (valid_client and secrets.compare_digest(form.get("client_secret", ""), self._client_secret)):
            raise SpApiError(401, "invalid_client", "Client authentication failed")
        if not secrets.compare_digest(form.get("refresh_token", ""), self._refresh_token):
            raise SpApiError(400, "invalid_grant", "The request has an invalid grant parameter : refresh_token")
        token = "Atza|" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + 3600
        return {"access_token": token, "token_type": "bearer", "expires_in": 3600}

    def check_token(self, token: str) -> bool:
        """True if ``token`` is valid now."""
        with self._lock:
            expires = self._tokens.get(token)
            return expires is not None and expires > time.monotonic()

    def expire_tokens(self) -> None:
        """Invalidate every token."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------------ feeds
    def listing(self, sku: str) -> dict[str, Any] | None:
        """A copy of one listing."""
        with self._lock:
            found = self._listings.get(sku)
            return dict(found) if found else None

    def edit_listing(self, sku: str, price: str | None = None, quantity: int | None = None) -> dict[str, Any]:
        """Change a listing directly (as in Seller Central)."""
        with self._lock:
            listing = self._listings[sku]
            if price is not None:
                listing["price"] = str(Decimal(price).quantize(Decimal("0.01")))
            if quantity is not None:
                listing["quantity"] = int(quantity)
            self._touch(sku)
            self._save()
            return dict(listing)

    def _touch(self, sku: str) -> None:
        # Strictly increasing, so the latest edit sorts first in a lastUpdatedDate ordering even
        # within one clock tick.
        self._last_update = max(datetime.now(UTC), self._last_update + timedelta(microseconds=1))
        self._details[sku]["updated"] = self._last_update

    # ------------------------------------------------------------------ listings items (read side)
    def search_listings(self, seller_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """``searchListingsItems``: one page of the seller's listings in one marketplace."""
        self._check_seller(seller_id)
        marketplace = self._marketplace(query)
        included = self._included(query)
        raw_size = _first(query, "pageSize")
        try:
            page_size = int(raw_size) if raw_size is not None else DEFAULT_PAGE_SIZE
        except ValueError:
            raise SpApiError(400, "InvalidInput", f"pageSize {raw_size!r} is not an integer") from None
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise SpApiError(400, "InvalidInput", f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
        identifiers = _csv(query, "identifiers")
        identifiers_type = _first(query, "identifiersType")
        if bool(identifiers) != bool(identifiers_type):
            raise SpApiError(400, "InvalidInput", "identifiers and identifiersType must be given together")
        if len(identifiers) > MAX_IDENTIFIERS:
            raise SpApiError(400, "InvalidInput", f"at most {MAX_IDENTIFIERS} identifiers per request")
        if identifiers_type not in (None, "SKU"):
            raise SpApiError(400, "InvalidInput", f"identifiersType {identifiers_type} is not supported by the sandbox")
        sort_by = _first(query, "sortBy") or "lastUpdatedDate"
        sort_order = _first(query, "sortOrder") or "DESC"
        if sort_by not in SORT_KEYS or sort_order not in ("ASC", "DESC"):
            raise SpApiError(400, "InvalidInput", f"sortBy {sort_by!r} / sortOrder {sort_order!r} is not valid")
        fingerprint = hashlib.sha256(
            json.dumps({k: v for k, v in sorted(query.items()) if k != "pageToken"}).encode()
        ).hexdigest()[:16]
        offset = _token_offset(_first(query, "pageToken"), fingerprint)
        with self._lock:
            self.stats["searches"] += 1
            wanted = set(identifiers)
            found = [sku for sku in self._listings if not wanted or sku in wanted]
            if sort_by == "sku":
                found.sort(reverse=sort_order == "DESC")
            else:
                field = "created" if sort_by == "createdDate" else "updated"
                found.sort(key=lambda sku: (self._details[sku][field], sku), reverse=sort_order == "DESC")
            reachable = found[:MAX_SEARCH_RESULTS]
            page = reachable[offset : offset + page_size]
            items = [self._item(sku, included, marketplace) for sku in page]
        pagination: dict[str, str] = {}
        if offset + page_size < len(reachable):
            pagination["nextToken"] = _token(offset + page_size, fingerprint)
        if offset > 0:
            pagination["previousToken"] = _token(max(offset - page_size, 0), fingerprint)
        answer: dict[str, Any] = {"numberOfResults": len(found), "items": items}
        if pagination:
            answer["pagination"] = pagination
        return answer

    def get_listing_item(self, seller_id: str, sku: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """``getListingsItem``: one listing by SKU."""
        self._check_seller(seller_id)
        marketplace = self._marketplace(query)
        included = self._included(query)
        with self._lock:
            self.stats["item_reads"] += 1
            if sku not in self._listings:
                raise SpApiError(404, "NOT_FOUND", f"SKU '{sku}' not found in marketplace {marketplace}")
            return self._item(sku, included, marketplace)

    def _check_seller(self, seller_id: str) -> None:
        if seller_id != self.seller_id:
            raise SpApiError(403, "Unauthorized", "Access to requested resource is denied.")

    def _marketplace(self, query: dict[str, list[str]]) -> str:
        marketplaces = _csv(query, "marketplaceIds")
        if not marketplaces:
            raise SpApiError(400, "InvalidInput", "marketplaceIds is required")
        if marketplaces != [self.marketplace_id]:
            shown = ",".join(marketplaces)
            raise SpApiError(400, "InvalidInput", f"marketplaceIds {shown}: this seller sells in {self.marketplace_id}")
        return marketplaces[0]

    def _included(self, query: dict[str, list[str]]) -> set[str]:
        included = set(_csv(query, "includedData") or ["summaries"])
        unknown = included - INCLUDED_DATA
        if unknown:
            raise SpApiError(400, "InvalidInput", f"includedData {sorted(unknown)} is not supported by the sandbox")
        return included

    def _item(self, sku: str, included: set[str], marketplace: str) -> dict[str, Any]:
        listing = self._listings[sku]
        details = self._details[sku]
        item: dict[str, Any] = {"sku": sku}
        if "summaries" in included:
            item["summaries"] = [
                {
                    "marketplaceId": marketplace,
                    "asin": details["asin"],
                    "productType": "PRODUCT",
                    "conditionType": "new_new",
                    "status": ["BUYABLE", "DISCOVERABLE"] if listing["quantity"] > 0 else ["DISCOVERABLE"],
                    "itemName": details["name"],
                    "createdDate": _iso(details["created"]),
                    "lastUpdatedDate": _iso(details["updated"]),
                }
            ]
        if "offers" in included:
            item["offers"] = [
                {
                    "marketplaceId": marketplace,
                    "offerType": "B2C",
                    "price": {"currencyCode": listing["currency"], "amount": listing["price"]},
                }
            ]
        if "fulfillmentAvailability" in included:
            item["fulfillmentAvailability"] = [{"fulfillmentChannelCode": "DEFAULT", "quantity": listing["quantity"]}]
        if "issues" in included:
            item["issues"] = []
        return item

    def create_document(self, base_url: str) -> dict[str, Any]:
        """``createFeedDocument``: an id and the URL to upload the document to."""
        document_id = "amzn1.tortuga.4." + uuid.uuid4().hex
        with self._lock:
            self._documents[document_id] = None
        return {"feedDocumentId": document_id, "url": f"{base_url}/_upload/{document_id}"}

    def upload(self, document_id: str, data: bytes) -> None:
        """The upload of a feed document to its pre-signed URL."""
        with self._lock:
            if document_id not in self._documents:
                raise SpApiError(404, "NotFound", "no such upload URL")
            self._documents[document_id] = data

    def download(self, document_id: str) -> bytes:
        """The content of a (report) document."""
        with self._lock:
            data = self._documents.get(document_id)
        if data is None:
            raise SpApiError(404, "NotFound", f"document {document_id} has no content")
        return data

    def create_feed(self, body: Any) -> dict[str, Any]:
        """``createFeed``: process the uploaded ``JSON_LISTINGS_FEED`` at once and keep its report."""
        if not isinstance(body, dict) or body.get("feedType") != "JSON_LISTINGS_FEED":
            raise SpApiError(400, "InvalidInput", "feedType must be JSON_LISTINGS_FEED")
        if not body.get("marketplaceIds"):
            raise SpApiError(400, "InvalidInput", "marketplaceIds is required")
        document_id = body.get("inputFeedDocumentId")
        with self._lock:
            data = self._documents.get(str(document_id))
        if data is None:
            raise SpApiError(400, "InvalidInput", f"inputFeedDocumentId {document_id} was not uploaded")
        try:
            feed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SpApiError(400, "InvalidInput", "the feed document is not JSON") from None
        feed_id = str(50_000_000_000 + len(self._feeds) + 1)
        report = self._process(feed, feed_id)
        report_id = "amzn1.tortuga.4.report." + uuid.uuid4().hex
        with self._lock:
            self._documents[report_id] = json.dumps(report).encode("utf-8")
            self._feeds[feed_id] = {
                "feedId": feed_id,
                "feedType": "JSON_LISTINGS_FEED",
                "marketplaceIds": body["marketplaceIds"],
                "createdTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "processingStatus": "DONE",
                "resultFeedDocumentId": report_id,
            }
            self.stats["feeds"] += 1
        return {"feedId": feed_id}

    def feed(self, feed_id: str) -> dict[str, Any]:
        """``getFeed``."""
        with self._lock:
            found = self._feeds.get(feed_id)
        if found is None:
            raise SpApiError(404, "NotFound", f"feed {feed_id} not found")
        return dict(found)

    def _process(self, feed: dict[str, Any], feed_id: str) -> dict[str, Any]:
        header = feed.get("header") or {}
        messages = feed.get("messages") or []
        issues: list[dict[str, Any]] = []
        if header.get("version") != "2.0" or header.get("sellerId") != self.seller_id:
            issues.append({"messageId": 0, "code": "100", "severity": "ERROR", "message": "invalid header"})
            messages = []
        if len(messages) > MAX_MESSAGES:
            raise SpApiError(400, "InvalidInput", f"at most {MAX_MESSAGES} messages per feed")
        accepted = 0
        with self._lock:
            for message in messages:
                self.stats["messages"] += 1
                problem = self._apply(message)
                if problem is None:
                    accepted += 1
                else:
                    issues.append(
                        {
                            "messageId": message.get("messageId"),
                            "sku": message.get("sku"),
                            "code": "90000",
                            "severity": "ERROR",
                            "message": problem,
                        }
                    )
            self._save()
        invalid = len(messages) - accepted
        return {
            "header": {"sellerId": self.seller_id, "version": "2.0", "feedId": feed_id},
            "issues": issues,
            "summary": {
                "errors": len(issues),
                "warnings": 0,
                "messagesProcessed": len(messages),
                "messagesAccepted": accepted,
                "messagesInvalid": invalid,
            },
        }

    def _apply(self, message: dict[str, Any]) -> str | None:
        sku = message.get("sku")
        listing = self._listings.get(str(sku))
        if listing is None:
            return f"SKU {sku} has no listing in this marketplace"
        if message.get("operationType") != "PATCH":
            return "only PATCH messages are supported by the sandbox"
        refusal = self.faults.rejection(str(sku))
        if refusal is not None:
            return refusal
        changes: list[tuple[str, Any]] = []
        for patch in message.get("patches") or []:
            value = (patch.get("value") or [{}])[0]
            if patch.get("path") == PRICE_PATH:
                try:
                    schedule = value["our_price"][0]["schedule"][0]
                    price = Decimal(str(schedule["value_with_tax"])).quantize(Decimal("0.01"))
                except (KeyError, IndexError, TypeError, InvalidOperation):
                    return "purchasable_offer.our_price needs schedule[0].value_with_tax"
                if price <= 0 or value.get("currency") != listing["currency"]:
                    return f"price {price} {value.get('currency')} is not valid for this listing"
                changes.append(("price", str(price)))
            elif patch.get("path") == QUANTITY_PATH:
                quantity = value.get("quantity")
                if not isinstance(quantity, int) or quantity < 0:
                    return "fulfillment_availability.quantity must be a non-negative integer"
                changes.append(("quantity", quantity))
            else:
                return f"patch path {patch.get('path')} is not supported by the sandbox"
        for key, new in changes:
            if listing[key] != new:
                listing[key] = new
                self.stats["revisions"] += 1
                self._touch(str(sku))
        return None


def _new_ids(seq: int) -> tuple[str, str]:
    draw = random.SystemRandom()
    order_id = f"{draw.randrange(100, 999)}-{draw.randrange(10**6, 10**7)}-{draw.randrange(10**6, 10**7)}"
    return order_id, str(draw.randrange(10**13, 10**14))


def _amazon_order(order: dict[str, Any], included: set[str], marketplace: str) -> dict[str, Any]:
    """An order in the Orders API v2026-01-01 shape, with the datasets in ``included``."""
    status = order["status"]
    items: list[dict[str, Any]] = []
    for line in order["lines"]:
        item: dict[str, Any] = {
            "orderItemId": line["line_id"],
            "quantityOrdered": line["quantity"],
            "product": {
                "asin": line["offer_id"],
                "title": line["title"],
                "sellerSku": line["sku"],
                "condition": {"conditionType": "NEW", "conditionSubtype": "NEW"},
                "price": {"unitPrice": {"amount": line["price"], "currencyCode": line["currency"]}},
            },
        }
        if "PROCEEDS" in included:
            total = f"{Decimal(line['price']) * line['quantity']:.2f}"
            item["proceeds"] = {"proceedsTotal": {"amount": total, "currencyCode": line["currency"]}}
        if "FULFILLMENT" in included:
            item["fulfillment"] = {
                "quantityFulfilled": 0,
                "quantityUnfulfilled": 0 if status == "cancelled" else line["quantity"],
            }
        if "CANCELLATION" in included and status == "cancelled":
            by = "BUYER" if order.get("cancelled_by") == "buyer" else "AMAZON"
            cancellation: dict[str, Any] = {
                "cancellationExecution": {
                    "cancelledBy": by,
                    "cancelReason": "CUSTOMER_REQUEST" if by == "BUYER" else "UNPAID",
                }
            }
            if by == "BUYER":
                cancellation["cancellationRequest"] = {"requester": "BUYER", "cancelReason": "CUSTOMER_REQUEST"}
            item["cancellation"] = cancellation
        items.append(item)
    answer: dict[str, Any] = {
        "orderId": order["id"],
        "createdTime": iso(order["created"]),
        "lastUpdatedTime": iso(order["updated"]),
        "salesChannel": {"channelName": "AMAZON", "marketplaceId": marketplace, "marketplaceName": "Amazon.pl"},
        "orderItems": items,
    }
    if "FULFILLMENT" in included:
        answer["fulfillment"] = {"fulfillmentStatus": FULFILLMENT_STATUS[status], "fulfilledBy": "MERCHANT"}
    if "BUYER" in included:
        answer["buyer"] = {"buyerName": "Sandbox Buyer", "buyerEmail": f"{order['id']}@marketplace.amazon.example"}
    return answer


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _csv(query: dict[str, list[str]], name: str) -> list[str]:
    # Like SP-API, an encoded comma (%2C) separates values as a literal one does.
    return [part for value in query.get(name) or [] for part in value.split(",") if part]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "q": fingerprint}).encode()).decode().rstrip("=")


def _token_offset(token: str | None, fingerprint: str) -> int:
    if token is None:
        return 0
    try:
        document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset = int(document["o"])
        matches = document["q"] == fingerprint
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise SpApiError(400, "InvalidInput", "pageToken is not valid") from None
    if not matches or not 0 <= offset < MAX_SEARCH_RESULTS:
        raise SpApiError(400, "InvalidInput", "pageToken does not belong to this search")
    return offset


class AmazonHTTPServer(SimulatorServer):
    """The Amazon simulator's HTTP server."""

    def __init__(self, address: tuple[str, int], simulator: AmazonSimulator) -> None:
        super().__init__(address, simulator, AmazonHandler)


class AmazonHandler(JsonHandler):
    """Routes requests to the simulator."""

    server_version = "AmazonSandbox/1.0"

    @property
    def simulator(self) -> AmazonSimulator:
        """The simulator of this server."""
        server = self.server
        assert isinstance(server, AmazonHTTPServer)
        return server.simulator

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        sim = self.simulator
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = sim.order_request(method, parts[1:], body) if parts[:1] == ["_sandbox"] else None
            if answer is not None:
                self._send(answer[0], answer[1])
                return
            if parts[:1] == ["_sandbox"] and method == "GET" and parts[1:] == ["stats"]:
                self._send(200, dict(sim.stats))
                return
            if parts[:1] == ["_sandbox"] and parts[1:] == ["faults"]:
                if method == "POST":
                    sim.faults.arm(**json.loads(body or b"{}"))
                self._send(200, sim.faults.snapshot())
                return
            if parts[:2] == ["_sandbox", "listings"] and len(parts) == 3 and method == "POST":
                if sim.listing(parts[2]) is None:
                    raise SpApiError(404, "NOT_FOUND", f"SKU '{parts[2]}' has no listing")
                edit = json.loads(body or b"{}")
                self._send(200, sim.edit_listing(parts[2], price=edit.get("price"), quantity=edit.get("quantity")))
                return
            with sim._lock:
                sim.stats["requests"] += 1
            if parts == ["auth", "o2", "token"] and method == "POST":
                form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
                self._send(200, sim.issue_token(form))
                return
            if len(parts) == 2 and parts[0] == "_upload" and method == "PUT":
                sim.upload(parts[1], body)
                self._send(200, {})
                return
            if len(parts) == 2 and parts[0] == "_download" and method == "GET":
                data = sim.download(parts[1])
                self._raw(200, data, "application/json")
                return
            if parts[:2] not in (["feeds", API], ["listings", LISTINGS_API], ["orders", ORDERS_API]):
                raise SpApiError(404, "NotFound", f"no resource {url.path}")
            if not sim.check_token(self.headers.get("x-amz-access-token") or ""):
                raise SpApiError(403, "Unauthorized", "Access to requested resource is denied.")
            fault = sim.faults.before_request()
            if fault is not None:
                status, headers = fault
                code = "QuotaExceeded" if status == 429 else "ServiceUnavailable"
                self._send(status, SpApiError(status, code, "sandbox fault").body(), headers=headers)
                return
            if parts[0] == "orders":
                self._orders(method, parts[2:], parse_qs(url.query))
            elif parts[0] == "listings":
                self._listings(method, parts[2:], parse_qs(url.query))
            else:
                self._feeds(method, parts[2:], body)
        except SpApiError as error:
            if error.code in ("invalid_client", "invalid_grant", "unsupported_grant_type"):
                self._send(error.status, {"error": error.code, "error_description": error.message})
            else:
                self._send(error.status, error.body())
        except (ValueError, TypeError) as error:
            self._send(400, SpApiError(400, "InvalidInput", str(error)).body())

    def _orders(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        sim = self.simulator
        if method == "GET" and parts == ["orders"]:
            self._send(200, sim.search_orders(query), headers={"x-amzn-RateLimit-Limit": ORDER_RATE_LIMITS["search"]})
        elif method == "GET" and len(parts) == 2 and parts[0] == "orders":
            answer = sim.get_order(parts[1], query)
            self._send(200, answer, headers={"x-amzn-RateLimit-Limit": ORDER_RATE_LIMITS["get"]})
        else:
            raise SpApiError(404, "NotFound", f"no resource {method} /orders/{ORDERS_API}/{'/'.join(parts)}")

    def _listings(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        sim = self.simulator
        if method == "GET" and len(parts) == 2 and parts[0] == "items":
            answer = sim.search_listings(parts[1], query)
            self._send(200, answer, headers={"x-amzn-RateLimit-Limit": RATE_LIMITS["search"]})
        elif method == "GET" and len(parts) == 3 and parts[0] == "items":
            answer = sim.get_listing_item(parts[1], parts[2], query)
            self._send(200, answer, headers={"x-amzn-RateLimit-Limit": RATE_LIMITS["item"]})
        else:
            raise SpApiError(404, "NotFound", f"no resource {method} /listings/{LISTINGS_API}/{'/'.join(parts)}")

    def _feeds(self, method: str, parts: list[str], body: bytes) -> None:
        sim = self.simulator
        address = self.server.server_address
        assert isinstance(address, tuple)
        host, port = address[0], address[1]
        if parts == ["documents"] and method == "POST":
            self._send(201, sim.create_document(f"http://{host!s}:{port}"))
        elif len(parts) == 2 and parts[0] == "documents" and method == "GET":
            sim.download(parts[1])
            self._send(200, {"feedDocumentId": parts[1], "url": f"http://{host!s}:{port}/_download/{parts[1]}"})
        elif parts == ["feeds"] and method == "POST":
            answer = sim.create_feed(json.loads(body.decode("utf-8")))
            if sim.faults.drop_now():
                self.close_connection = True
                return
            self._send(202, answer)
        elif len(parts) == 2 and parts[0] == "feeds" and method == "GET":
            self._send(200, sim.feed(parts[1]))
        else:
            raise SpApiError(404, "NotFound", f"no resource {method} /feeds/{API}/{'/'.join(parts)}")


def _build(context: SimulatorContext) -> AmazonSimulator:
    return AmazonSimulator(
        catalog_n=context.catalog_n, seed=context.seed, state_path=context.beside("amazon_state.json")
    )


register(SimulatorSpec("amazon", "Amazon SP-API", 8704, _build, AmazonHTTPServer))
