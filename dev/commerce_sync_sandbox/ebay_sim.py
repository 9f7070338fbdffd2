"""A local eBay Inventory API simulator: OAuth refresh-token grant and ``bulkUpdatePriceQuantity``.

Contract (developer.ebay.com, Sell Inventory API v1) for the calls the publisher makes:

* ``POST /identity/v1/oauth2/token`` with HTTP Basic ``client_id:secret`` and a form body
  ``grant_type=refresh_token&refresh_token=...`` → ``{"access_token", "expires_in", "token_type"}``;
* ``POST /sell/inventory/v1/bulk_update_price_quantity`` with ``{"requests": [{"sku",
  "shipToLocationAvailability": {"quantity"}, "offers": [{"offerId", "availableQuantity",
  "price": {"value", "currency"}}]}]}`` (at most 25 requests) → 200 when every item succeeded,
  207 otherwise, with ``{"responses": [{"statusCode", "sku", "offerId", "errors", "warnings"}]}``;
* ``GET /sell/inventory/v1/offer?sku=...`` → the SKU's offers. Sandbox extension: without ``sku``
  it pages through every offer (``limit``, ``offset``), which the reconciliation reads.

Fulfillment API v1 (orders, from the sandbox's order book :mod:`commerce_sync_sandbox.orders`):

* ``GET /sell/fulfillment/v1/order?filter=lastmodifieddate:[<from>..<to>]&limit=&offset=`` (``to``
  optional, both inclusive, ISO 8601 UTC; limit 1..200, default 50) → ``{"href", "total", "limit",
  "offset", "next", "orders"}``, oldest change first. As on eBay, ``cancelStatus.cancelRequests`` is
  always empty here;
* ``GET /sell/fulfillment/v1/order/{orderId}`` (getOrder) → the order with its cancel requests.

``orderPaymentStatus`` is ``PENDING`` until the buyer pays, then ``PAID`` (``FULLY_REFUNDED`` after a
cancellation of a paid order); ``cancelStatus.cancelState`` becomes ``CANCELED`` when cancelled.

Updates set absolute values, so repeating one changes nothing: the simulator counts a *revision*
only when a value really changes (eBay allows 250 revisions per listing and day), which is how
tests see that a re-sent batch had no duplicate effect. Faults: :mod:`commerce_sync_sandbox.faults`.
Sandbox endpoints (no auth): ``GET /_sandbox/stats``, ``GET|POST /_sandbox/faults``,
``POST /_sandbox/offers/{offerId}`` (a direct edit on ebay.com) and the order endpoints of
:mod:`commerce_sync_sandbox.orders` (``POST /_sandbox/orders`` buys, lowering ``availableQuantity``).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import secrets
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from commerce_sync_sandbox import orders as order_book
from commerce_sync_sandbox.catalog import products
from commerce_sync_sandbox.faults import Faults
from commerce_sync_sandbox.http import JsonHandler, SimulatorServer
from commerce_sync_sandbox.orders import OrderBook, iso, parse_iso
from commerce_sync_sandbox.simulators import SimulatorContext, SimulatorSpec, register
from commerce_sync_sandbox.state import load_state, save_state

MAX_REQUESTS_PER_CALL = 25
OFFER_ID_BASE = 5_000_000_000
DEFAULT_TOKEN_TTL = 7200
MAX_ORDER_PAGE = 200
SELLER_USERNAME = "sandbox_seller"


class EbayError(Exception):
    """An error answer in eBay's format."""

    def __init__(self, status: int, error_id: int, message: str, category: str = "REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.category = category

    def body(self) -> dict[str, Any]:
        """The JSON error document."""
        return {
            "errors": [
                {
                    "errorId": self.error_id,
                    "domain": "API_INVENTORY",
                    "category": self.category,
                    "message": self.message,
                }
            ]
        }


class EbaySimulator:
    """The simulator's state and rules, independent of HTTP; thread-safe.

    With ``state_path`` the offers and counters are kept in that JSON file across restarts (saved after
    every change); without it they live in memory only.
    """

    def __init__(
        self,
        *,
        catalog_n: int = 300,
        seed: int = 42,
        client_id: str = "demo-ebay-client",
        client_secret: str = "demo-ebay-secret",  # noqa: S107 - the sandbox's documented demo secret
        refresh_token: str = "demo-ebay-refresh-token",  # noqa: S107 - documented demo value
        token_ttl: int = DEFAULT_TOKEN_TTL,
        state_path: Path | None = None,
    ) -> None:
        self.state_path = state_path
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self.token_ttl = token_ttl
        self.faults = Faults()
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._offers: dict[str, dict[str, Any]] = {}
        for product in products(catalog_n, seed):
            number = int(product.sku.removeprefix("SKU-"))
            offer_id = str(OFFER_ID_BASE + number)
            self._offers[offer_id] = {
                "offerId": offer_id,
                "sku": product.sku,
                "marketplaceId": "EBAY_PL",
                "format": "FIXED_PRICE",
                "availableQuantity": product.stock + 1,
                "pricingSummary": {
                    "price": {
                        "value": str((product.purchase_price * Decimal("1.41")).quantize(Decimal("0.01"))),
                        "currency": "PLN",
                    }
                },
                "status": "PUBLISHED" if product.active else "UNPUBLISHED",
            }
        self._by_sku = {offer["sku"]: offer_id for offer_id, offer in self._offers.items()}
        self.stats = {"requests": 0, "bulk_calls": 0, "items": 0, "revisions": 0}
        self.orders = OrderBook(self, self._lock, _new_ids)
        saved = load_state(state_path)
        if saved is not None:
            self._offers.update({offer["offerId"]: offer for offer in saved.get("offers", [])})
            self._by_sku = {offer["sku"]: offer_id for offer_id, offer in self._offers.items()}
            self.stats.update(saved.get("stats", {}))
            self.orders.load(saved.get("orders"))

    def _save(self) -> None:
        if self.state_path is not None:
            save_state(
                self.state_path,
                {"offers": list(self._offers.values()), "stats": self.stats, "orders": self.orders.state()},
            )

    # ------------------------------------------------------------------ listings, for the order book
    def available(self, sku: str) -> int | None:
        offer_id = self._by_sku.get(sku)
        return int(self._offers[offer_id]["availableQuantity"]) if offer_id else None

    def adjust(self, sku: str, delta: int) -> None:
        offer = self._offers[self._by_sku[sku]]
        offer["availableQuantity"] = max(0, int(offer["availableQuantity"]) + delta)

    def offer_of(self, sku: str) -> tuple[str, str, str, str]:
        offer = self._offers[self._by_sku[sku]]
        price = offer["pricingSummary"]["price"]
        return offer["offerId"], f"Item {sku}", price["value"], price["currency"]

    def order_request(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any] | None:
        """A ``/_sandbox/orders...`` request (see :mod:`commerce_sync_sandbox.orders`); saved after a change."""
        return order_book.handle(self.orders, method, parts, body, self._save)

    # ------------------------------------------------------------------ fulfillment API
    def search_orders(self, query: dict[str, list[str]], href: str) -> dict[str, Any]:
        """``getOrders``: a page of the orders whose last change lies in the filter's window."""
        start, end = 0, 2**62
        for part in filter(None, (query.get("filter") or [""])[0].split(",")):
            name, _, value = part.partition(":")
            if name.strip() != "lastmodifieddate" or not (value.startswith("[") and value.endswith("]")):
                raise EbayError(
                    400, 30700, f"Invalid filter {part!r}: the sandbox supports lastmodifieddate:[from..to]"
                )
            low, dots, high = value[1:-1].partition("..")
            try:
                if low:
                    start = parse_iso(low) // 1000 * 1000
                if high:
                    end = (parse_iso(high) // 1000 + 1) * 1000  # inclusive to the millisecond
            except ValueError:
                raise EbayError(400, 30700, f"Invalid date in filter {part!r}") from None
            if not dots or not low:
                raise EbayError(
                    400, 30700, f"Invalid filter {part!r}: expected lastmodifieddate:[from..] or [from..to]"
                )
        limit = _int(query, "limit", 50)
        offset = _int(query, "offset", 0)
        if not 1 <= limit <= MAX_ORDER_PAGE or offset < 0:
            raise EbayError(400, 30800, f"limit must be 1..{MAX_ORDER_PAGE} and offset >= 0")
        with self._lock:
            window = [order for _, order in self.orders.changed(start, end)]
            page = [_order(order, full=False) for order in window[offset : offset + limit]]
        if self.faults.sparse_orders:
            for listed in page:
                del listed["cancelStatus"]
        answer: dict[str, Any] = {"href": href, "total": len(window), "limit": limit, "offset": offset, "orders": page}
        if offset + limit < len(window):
            answer["next"] = _with_offset(href, offset + limit)
        if offset > 0:
            answer["prev"] = _with_offset(href, max(offset - limit, 0))
        return answer

    def get_order(self, order_id: str) -> dict[str, Any]:
        """``getOrder``: one order, with its cancel requests."""
        with self._lock:
            order = self.orders.orders.get(order_id)
            if order is None:
                raise EbayError(404, 32100, f"Order {order_id} not found")
            return _order(order, full=True)

    def __repr__(self) -> str:
        return f"EbaySimulator(offers={len(self._offers)})"

    def issue_token(self, client_id: str, client_secret: str, grant: str, refresh_token: str | None) -> dict[str, Any]:
        """An access token for the refresh-token (or client-credentials) grant."""
        if not (
            secrets.compare_digest(client_id, self._client_id)
            and secrets.compare_digest(client_secret, self._client_secret)
        ):
            raise EbayError(401, 1001, "invalid_client")
        if grant == "refresh_token" and not secrets.compare_digest(refresh_token or "", self._refresh_token):
            raise EbayError(400, 1002, "invalid_grant: the refresh token is invalid or was issued to another client")
        if grant not in ("refresh_token", "client_credentials"):
            raise EbayError(400, 1003, "unsupported_grant_type")
        token = "v^1.1#i^1#" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return {"access_token": token, "expires_in": self.token_ttl, "token_type": "User Access Token"}

    def check_token(self, token: str) -> bool:
        """True if ``token`` is valid now."""
        with self._lock:
            expires = self._tokens.get(token)
            return expires is not None and expires > time.monotonic()

    def expire_tokens(self) -> None:
        """Invalidate every token (tests force a refresh with it)."""
        with self._lock:
            self._tokens.clear()

    def offer(self, offer_id: str) -> dict[str, Any] | None:
        """A copy of one offer."""
        with self._lock:
            found = self._offers.get(offer_id)
            return json.loads(json.dumps(found)) if found else None

    def offers(self, sku: str | None, offset: int, limit: int) -> dict[str, Any]:
        """``GET /offer``: the SKU's offers, or (sandbox extension) a page of all offers."""
        with self._lock:
            if sku is not None:
                chosen = [self._offers[self._by_sku[sku]]] if sku in self._by_sku else []
                if not chosen:
                    raise EbayError(404, 25713, f"This Offer is not available for SKU {sku}.")
                total = 1
            else:
                everything = list(self._offers.values())
                chosen = everything[offset : offset + limit]
                total = len(everything)
            return {"offers": json.loads(json.dumps(chosen)), "total": total, "limit": limit, "offset": offset}

    def edit_offer(self, offer_id: str, price: str | None = None, quantity: int | None = None) -> dict[str, Any]:
        """Change an offer directly (as a seller would on ebay.com)."""
        with self._lock:
            offer = self._offers.get(offer_id)
            if offer is None:
                raise EbayError(404, 25713, f"offer {offer_id} not found")
            if price is not None:
                offer["pricingSummary"]["price"]["value"] = str(Decimal(price).quantize(Decimal("0.01")))
            if quantity is not None:
                offer["availableQuantity"] = int(quantity)
            self._save()
            return json.loads(json.dumps(offer))

    def bulk_update(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Apply ``bulkUpdatePriceQuantity``; returns (200 or 207, responses)."""
        requests_ = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests_, list) or not requests_:
            raise EbayError(400, 25709, "requests must be a non-empty array")
        if len(requests_) > MAX_REQUESTS_PER_CALL:
            raise EbayError(400, 25709, f"at most {MAX_REQUESTS_PER_CALL} requests per call, got {len(requests_)}")
        responses = []
        with self._lock:
            self.stats["bulk_calls"] += 1
            for item in requests_:
                responses.extend(self._apply_item(item))
            self._save()
        status = 200 if all(r["statusCode"] == 200 for r in responses) else 207
        return status, {"responses": responses}

    def _apply_item(self, item: Any) -> list[dict[str, Any]]:
        self.stats["items"] += 1
        sku = item.get("sku") if isinstance(item, dict) else None
        if not isinstance(sku, str) or sku not in self._by_sku:
            return [_item_error(sku, None, 25702, f"SKU {sku} is not available in the system")]
        refusal = self.faults.rejection(sku)
        if refusal is not None:
            return [_item_error(sku, None, 25019, refusal)]
        changes: list[tuple[dict[str, Any], str, Any]] = []
        answers = []
        ship = item.get("shipToLocationAvailability")
        for entry in item.get("offers") or []:
            offer = self._offers.get(str(entry.get("offerId")))
            if offer is None or offer["sku"] != sku:
                answers.append(_item_error(sku, entry.get("offerId"), 25713, "This Offer is not available."))
                continue
            price = entry.get("price")
            if price is not None:
                try:
                    value = Decimal(str(price["value"])).quantize(Decimal("0.01"))
                except (KeyError, TypeError, InvalidOperation):
                    answers.append(_item_error(sku, offer["offerId"], 25709, "Invalid price value"))
                    continue
                if value <= 0 or price.get("currency") != offer["pricingSummary"]["price"]["currency"]:
                    answers.append(_item_error(sku, offer["offerId"], 25709, "Invalid price value or currency"))
                    continue
                changes.append((offer["pricingSummary"]["price"], "value", str(value)))
            quantity = entry.get("availableQuantity")
            if quantity is None and isinstance(ship, dict):
                quantity = ship.get("quantity")
            if quantity is not None:
                if not isinstance(quantity, int) or quantity < 0:
                    answers.append(_item_error(sku, offer["offerId"], 25709, "Invalid quantity"))
                    continue
                changes.append((offer, "availableQuantity", quantity))
            answers.append({"statusCode": 200, "sku": sku, "offerId": offer["offerId"], "errors": [], "warnings": []})
        if any(a["statusCode"] != 200 for a in answers):
            return answers  # an item is applied all or nothing
        for target, key, value in changes:
            if target[key] != value:
                target[key] = value
                self.stats["revisions"] += 1
        return answers


def _new_ids(seq: int) -> tuple[str, str]:
    draw = random.SystemRandom()
    return f"{draw.randrange(10, 99)}-{draw.randrange(10000, 99999)}-{draw.randrange(10000, 99999)}", str(
        draw.randrange(10**11, 10**12)
    )


def _order(order: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """An order in the Fulfillment API's shape (``full``: getOrder, with the cancel requests)."""
    lines = order["lines"]
    currency = lines[0]["currency"]
    total = sum(Decimal(line["price"]) * line["quantity"] for line in lines)
    cancelled = order["status"] == "cancelled"
    if order["status"] == "ready":
        payment = "PAID"
    elif cancelled and order.get("cancelled_after_ready"):
        payment = "FULLY_REFUNDED"
    else:
        payment = "PENDING"
    requests_: list[dict[str, Any]] = []
    by_buyer = order.get("cancelled_by") == "buyer"
    if cancelled and full:
        requests_.append(
            {
                "cancelRequestId": "5" + order["id"].replace("-", "")[:10],
                "cancelInitiator": "BUYER" if by_buyer else "SELLER",
                "cancelReason": "BUYER_ASKED_CANCEL"
                if order.get("cancelled_by") == "buyer"
                else "OUT_OF_STOCK_OR_CANNOT_FULFILL",
                "cancelRequestState": "COMPLETED",
                "cancelRequestedDate": iso(order["updated"]),
                "cancelCompletedDate": iso(order["updated"]),
            }
        )
    cancel_status: dict[str, Any] = {
        "cancelState": "CANCELED" if cancelled else "NONE_REQUESTED",
        "cancelRequests": requests_,
    }
    if cancelled:
        cancel_status["cancelledDate"] = iso(order["updated"])
    return {
        "orderId": order["id"],
        "legacyOrderId": order["id"],
        "creationDate": iso(order["created"]),
        "lastModifiedDate": iso(order["updated"]),
        "orderFulfillmentStatus": "NOT_STARTED",
        "orderPaymentStatus": payment,
        "sellerId": SELLER_USERNAME,
        "buyer": {"username": "buyer_" + order["id"][-5:]},
        "pricingSummary": {"total": {"value": f"{total:.2f}", "currency": currency}},
        "cancelStatus": cancel_status,
        "salesRecordReference": str(order["created"] % 100000),
        "lineItems": [
            {
                "lineItemId": line["line_id"],
                "legacyItemId": line["offer_id"],
                "sku": line["sku"],
                "title": line["title"],
                "quantity": line["quantity"],
                "lineItemCost": {"value": f"{Decimal(line['price']) * line['quantity']:.2f}", "currency": currency},
                "total": {"value": f"{Decimal(line['price']) * line['quantity']:.2f}", "currency": currency},
                "lineItemFulfillmentStatus": "NOT_STARTED",
            }
            for line in lines
        ],
    }


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    try:
        return int(values[0]) if values else default
    except ValueError:
        raise EbayError(400, 30800, f"{name} must be an integer") from None


def _with_offset(href: str, offset: int) -> str:
    url = urlsplit(href)
    query = parse_qs(url.query)
    query["offset"] = [str(offset)]
    return url._replace(query=urlencode(query, doseq=True)).geturl()


def _item_error(sku: Any, offer_id: Any, error_id: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": 400,
        "sku": sku,
        "offerId": offer_id,
        "errors": [{"errorId": error_id, "domain": "API_INVENTORY", "category": "REQUEST", "message": message}],
        "warnings": [],
    }


class EbayHTTPServer(SimulatorServer):
    """The Ebay simulator's HTTP server."""

    def __init__(self, address: tuple[str, int], simulator: EbaySimulator) -> None:
        super().__init__(address, simulator, EbayHandler)


class EbayHandler(JsonHandler):
    """Routes requests to the simulator."""

    server_version = "EbaySandbox/1.0"

    @property
    def simulator(self) -> EbaySimulator:
        """The simulator of this server."""
        server = self.server
        assert isinstance(server, EbayHTTPServer)
        return server.simulator

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if parts[:1] == ["_sandbox"]:
                self._sandbox(method, parts[1:], body)
                return
            with self.simulator._lock:
                self.simulator.stats["requests"] += 1
            if parts == ["identity", "v1", "oauth2", "token"] and method == "POST":
                self._token(body)
                return
            header = self.headers.get("Authorization") or ""
            if not header.startswith("Bearer ") or not self.simulator.check_token(header[7:].strip()):
                raise EbayError(401, 1001, "Invalid access token", "REQUEST")
            fault = self.simulator.faults.before_request()
            if fault is not None:
                status, headers = fault
                self._send(status, EbayError(status, 2001, "sandbox fault", "APPLICATION").body(), headers=headers)
                return
            if parts == ["sell", "inventory", "v1", "bulk_update_price_quantity"] and method == "POST":
                try:
                    document = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise EbayError(400, 25709, "the body is not valid JSON") from None
                status, answer = self.simulator.bulk_update(document)
                if self.simulator.faults.drop_now():
                    self.close_connection = True
                    return
                self._send(status, answer)
            elif parts == ["sell", "fulfillment", "v1", "order"] and method == "GET":
                address = self.server.server_address
                assert isinstance(address, tuple)
                href = f"http://{address[0]!s}:{address[1]}{self.path}"
                self._send(200, self.simulator.search_orders(query, href))
            elif parts[:4] == ["sell", "fulfillment", "v1", "order"] and len(parts) == 5 and method == "GET":
                self._send(200, self.simulator.get_order(parts[4]))
            elif parts == ["sell", "inventory", "v1", "offer"] and method == "GET":
                skus = query.get("sku")
                sku = skus[0] if skus else None
                offset = int((query.get("offset") or ["0"])[0])
                limit = min(int((query.get("limit") or ["100"])[0]), 200)
                self._send(200, self.simulator.offers(sku, offset, limit))
            else:
                raise EbayError(404, 2002, f"no resource {method} {url.path}")
        except EbayError as error:
            self._send(error.status, error.body())
        except ValueError as error:
            self._send(400, EbayError(400, 25709, str(error)).body())

    def _token(self, body: bytes) -> None:
        form = parse_qs(body.decode("utf-8", "replace"))
        header = self.headers.get("Authorization") or ""
        try:
            client_id, _, secret = (
                base64.b64decode(header.removeprefix("Basic "), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            client_id = secret = ""
        grant = (form.get("grant_type") or [""])[0]
        refreshes = form.get("refresh_token")
        refresh = refreshes[0] if refreshes else None
        try:
            self._send(200, self.simulator.issue_token(client_id, secret, grant, refresh))
        except EbayError as error:
            self._send(error.status, {"error": error.message.split(":")[0], "error_description": error.message})

    def _sandbox(self, method: str, parts: list[str], body: bytes) -> None:
        answer = self.simulator.order_request(method, parts, body)
        if answer is not None:
            self._send(answer[0], answer[1])
            return
        if method == "GET" and parts == ["stats"]:
            self._send(200, dict(self.simulator.stats))
        elif parts == ["faults"] and method in ("GET", "POST"):
            if method == "POST":
                self.simulator.faults.arm(**json.loads(body or b"{}"))
            self._send(200, self.simulator.faults.snapshot())
        elif method == "POST" and len(parts) == 2 and parts[0] == "offers":
            document = json.loads(body or b"{}")
            self._send(200, self.simulator.edit_offer(parts[1], document.get("price"), document.get("quantity")))
        elif method == "POST" and parts == ["expire-tokens"]:
            self.simulator.expire_tokens()
            self._send(200, {"expired": True})
        else:
            raise EbayError(404, 2002, "unknown sandbox endpoint")


def _build(context: SimulatorContext) -> EbaySimulator:
    return EbaySimulator(catalog_n=context.catalog_n, seed=context.seed, state_path=context.beside("ebay_state.json"))


register(SimulatorSpec("ebay", "eBay", 8703, _build, EbayHTTPServer))
