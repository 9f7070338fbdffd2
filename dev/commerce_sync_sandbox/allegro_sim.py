"""A local Allegro REST API simulator: OAuth client credentials, offers and batch change commands.

It follows the public contract of ``api.allegro.pl`` for the calls the publisher makes:

* ``POST /auth/oauth/token?grant_type=client_credentials`` with HTTP Basic ``client_id:secret``;
* ``GET /sale/offers?offset=&limit=`` (limit 1..1000, optional ``external.id`` filter);
* ``PUT /sale/offer-price-change-commands/{commandId}`` (``modification.type = FIXED_PRICE``) and
  ``PUT /sale/offer-quantity-change-commands/{commandId}`` (``modification.changeType = FIXED``
  or ``GAIN``), both with ``offerCriteria = [{"type": "CONTAINS_OFFERS", "offers": [{"id"}]}]``;
* ``GET .../{commandId}`` (general report) and ``GET .../{commandId}/tasks`` (task report);
* ``GET /order/events?from=&type=&limit=`` (limit 1..1000, default 100; events after the event id
  ``from``, oldest first), ``GET /order/event-stats`` (``latestEvent``) and
  ``GET /order/checkout-forms/{checkoutFormId}`` (status ``BOUGHT``/``FILLED_IN``/
  ``READY_FOR_PROCESSING``/``CANCELLED``, ``lineItems`` with ``offer.external.id``, ``revision``).
  Orders come from the sandbox's order book (:mod:`commerce_sync_sandbox.orders`); event ids are
  increasing numbers. The faults ``duplicate_events`` and ``shuffle_events`` repeat and reorder them.

``/sale`` calls need ``Authorization: Bearer`` and ``Accept: application/vnd.allegro.public.v1+json``.
Errors use Allegro's shape ``{"errors": [{"code", "message", "path", "userMessage", "details"}]}``.

Commands are idempotent by ``commandId``: a repeated PUT with the same body returns the original
report and changes nothing; a different body under a used id is a 409. Commands are processed at
once, but the PUT answers like Allegro's queue (``success`` and ``failed`` still 0), so clients
must poll the report. State (offers, commands, counters) lives in memory and is written
atomically to a JSON file after every change, so a restart continues where it stopped. Tokens are
kept in memory only: after a restart clients get a 401 and must fetch a new token.

Sandbox-only endpoints (no auth): ``GET /_sandbox/stats``, ``POST /_sandbox/reset``,
``GET|POST /_sandbox/faults`` (switchable faults, see :mod:`commerce_sync_sandbox.faults`) and
``POST /_sandbox/offers/{offerId}`` (edit an offer directly, as a seller would on allegro.pl) and the
order endpoints of :mod:`commerce_sync_sandbox.orders` (``POST /_sandbox/orders`` buys, lowering the offer's
stock).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from commerce_sync_sandbox import orders as order_book
from commerce_sync_sandbox.catalog import products
from commerce_sync_sandbox.faults import Faults
from commerce_sync_sandbox.http import JsonHandler, SimulatorServer
from commerce_sync_sandbox.orders import Entry, OrderBook, iso
from commerce_sync_sandbox.simulators import SimulatorContext, SimulatorSpec, register
from commerce_sync_sandbox.state import load_state, save_state

MEDIA_TYPE = "application/vnd.allegro.public.v1+json"
MAX_OFFERS_PER_COMMAND = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_TOKEN_TTL = 43199
OFFER_ID_BASE = 17_000_000_000
CommandKind = Literal["price", "quantity"]
KINDS: dict[str, CommandKind] = {
    "offer-price-change-commands": "price",
    "offer-quantity-change-commands": "quantity",
}
_AMOUNT = re.compile(r"^\d{1,9}(\.\d{1,2})?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_EVENTS = 1000
SELLER_ID = "51356837"
ORDER_EVENT_TYPES = frozenset(
    {
        "BOUGHT",
        "FILLED_IN",
        "READY_FOR_PROCESSING",
        "BUYER_CANCELLED",
        "AUTO_CANCELLED",
        "BUYER_MODIFIED",
        "FULFILLMENT_STATUS_CHANGED",
    }
)
FORM_STATUS = {"unpaid": "FILLED_IN", "ready": "READY_FOR_PROCESSING", "cancelled": "CANCELLED"}


class ApiError(Exception):
    """An error answer in Allegro's format."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path

    def body(self) -> dict[str, Any]:
        """The JSON error document."""
        return {
            "errors": [
                {
                    "code": self.code,
                    "message": self.message,
                    "details": None,
                    "path": self.path,
                    "userMessage": self.message,
                }
            ]
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def initial_offers(catalog_n: int = 300, seed: int = 42) -> list[dict[str, Any]]:
    """One offer per catalog product, priced and stocked unlike what the pricing computes.

    Products inactive in the ERP still have an (ended) offer: the marketplace keeps listings the
    ERP has discontinued, and the sync must set their stock to 0 there.

    The price is purchase price x 1.37 to the cent (pricing rounds to its own price points) and the
    stock is the ERP stock + 3, so the first sync has something to publish for every offer.
    """
    offers = []
    for product in products(catalog_n, seed):
        number = int(product.sku.removeprefix("SKU-"))
        offers.append(
            {
                "id": str(OFFER_ID_BASE + number),
                "name": product.name[:75],
                "external": {"id": product.sku},
                "sellingMode": {
                    "format": "BUY_NOW",
                    "price": {
                        "amount": str((product.purchase_price * Decimal("1.37")).quantize(Decimal("0.01"))),
                        "currency": "PLN",
                    },
                },
                "stock": {"available": product.stock + 3, "unit": "UNIT"},
                "publication": {"status": "ACTIVE" if product.active else "ENDED"},
            }
        )
    return offers


def _empty_stats() -> dict[str, int]:
    return {"price_commands": 0, "quantity_commands": 0, "offers_changed": 0, "requests": 0}


class AllegroSimulator:
    """The simulator's state and rules, independent of HTTP; every method is thread-safe."""

    def __init__(
        self,
        state_path: Path,
        *,
        catalog_n: int = 300,
        seed: int = 42,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",  # noqa: S107 - the sandbox's documented demo secret
        token_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> None:
        self.state_path = state_path
        self.catalog_n = catalog_n
        self.seed = seed
        self._client_id = client_id
        self._client_secret = client_secret
        self.token_ttl = token_ttl
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._offers: dict[str, dict[str, Any]] = {}
        self._commands: dict[str, dict[str, dict[str, Any]]] = {"price": {}, "quantity": {}}
        self._stats = _empty_stats()
        self._by_sku: dict[str, str] = {}
        self.faults = Faults()
        self.orders = OrderBook(self, self._lock, _new_ids)
        self._load()

    def __repr__(self) -> str:
        return f"AllegroSimulator(state_path={str(self.state_path)!r}, offers={len(self._offers)})"

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        with self._lock:
            state = load_state(self.state_path)
            if state is not None:
                self._offers = {offer["id"]: offer for offer in state["offers"]}
                self._commands = {"price": {}, "quantity": {}, **state.get("commands", {})}
                self._stats = {**_empty_stats(), **state.get("stats", {})}
                self._by_sku = {offer["external"]["id"]: offer["id"] for offer in self._offers.values()}
                self.orders.load(state.get("orders"))
            else:
                self._reset_state()

    def _reset_state(self) -> None:
        self._offers = {offer["id"]: offer for offer in initial_offers(self.catalog_n, self.seed)}
        self._commands = {"price": {}, "quantity": {}}
        self._stats = _empty_stats()
        self._by_sku = {offer["external"]["id"]: offer["id"] for offer in self._offers.values()}
        self.orders.reset()
        self._save()

    def _save(self) -> None:
        state = {
            "offers": list(self._offers.values()),
            "commands": self._commands,
            "stats": self._stats,
            "orders": self.orders.state(),
        }
        save_state(self.state_path, state)

    def save(self) -> None:
        """Persist the state now (the request counter is otherwise saved with the next change)."""
        with self._lock:
            self._save()

    def reset(self) -> None:
        """Back to the initial offers, no commands, zero counters."""
        with self._lock:
            self._reset_state()

    def stats(self) -> dict[str, int]:
        """Counters since the state file was created (or last reset)."""
        with self._lock:
            return dict(self._stats)

    def count_request(self) -> None:
        """Count one API request."""
        with self._lock:
            self._stats["requests"] += 1

    def offer(self, offer_id: str) -> dict[str, Any] | None:
        """A copy of one offer, or None."""
        with self._lock:
            found = self._offers.get(offer_id)
            return json.loads(json.dumps(found)) if found else None

    # ------------------------------------------------------------------ listings, for the order book
    def available(self, sku: str) -> int | None:
        offer_id = self._by_sku.get(sku)
        return int(self._offers[offer_id]["stock"]["available"]) if offer_id else None

    def adjust(self, sku: str, delta: int) -> None:
        stock = self._offers[self._by_sku[sku]]["stock"]
        stock["available"] = max(0, int(stock["available"]) + delta)

    def offer_of(self, sku: str) -> tuple[str, str, str, str]:
        offer = self._offers[self._by_sku[sku]]
        price = offer["sellingMode"]["price"]
        return offer["id"], offer["name"], price["amount"], price["currency"]

    def order_request(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any] | None:
        """A ``/_sandbox/orders...`` request (see :mod:`commerce_sync_sandbox.orders`); saved after a change."""
        return order_book.handle(self.orders, method, parts, body, self._save)

    # ------------------------------------------------------------------ orders API
    def order_events(self, after: str | None, types: list[str], limit: int) -> dict[str, Any]:
        """``GET /order/events``: events after the event id ``after`` (all retained ones without it)."""
        if not 1 <= limit <= MAX_EVENTS:
            raise ApiError(422, "VALIDATION_ERROR", f"limit must be between 1 and {MAX_EVENTS}", "limit")
        unknown = sorted(set(types) - ORDER_EVENT_TYPES)
        if unknown:
            raise ApiError(422, "VALIDATION_ERROR", f"unknown event types {unknown}", "type")
        try:
            seq = int(after) if after is not None else 0
        except ValueError:
            raise ApiError(422, "VALIDATION_ERROR", f"from {after!r} is not an event id", "from") from None
        with self._lock:
            events: list[dict[str, Any]] = []
            while len(events) < limit:
                chunk = self.orders.events_after(seq, limit)
                if not chunk:
                    break
                seq = chunk[-1].seq
                events.extend(self._event(e) for e in chunk if not types or e.type in types)
            events = events[:limit]
        if self.faults.duplicate_events:
            events = [event for event in events for _ in (0, 1)]
        if self.faults.shuffle_events:
            random.Random(len(events)).shuffle(events)
        return {"events": events}

    def order_event_stats(self) -> dict[str, Any]:
        """``GET /order/event-stats``: the latest event (what a reader starting now starts after)."""
        latest = self.orders.latest
        if latest is None:
            return {"latestEvent": None}
        return {"latestEvent": {"id": str(latest.seq), "occurredAt": iso(latest.at)}}

    def checkout_form(self, form_id: str) -> dict[str, Any]:
        """``GET /order/checkout-forms/{id}``: the order's current state."""
        with self._lock:
            order = self.orders.orders.get(form_id)
            if order is None:
                raise ApiError(404, "NOT_FOUND", f"checkout form {form_id} not found", "checkoutFormId")
            lines = _line_items(order)
            total = sum(Decimal(line["price"]["amount"]) * line["quantity"] for line in lines)
            currency = lines[0]["price"]["currency"] if lines else "PLN"
            return {
                "id": order["id"],
                "messageToSeller": None,
                "buyer": _buyer(order),
                "payment": {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, order["id"])),
                    "type": "ONLINE",
                    "provider": "P24",
                    "finishedAt": iso(order["paid"]) if order["paid"] else None,
                    "paidAmount": {"amount": f"{total:.2f}", "currency": currency} if order["paid"] else None,
                },
                "status": FORM_STATUS[order["status"]],
                "fulfillment": {"status": "NEW", "shipmentSummary": {"lineItemsSent": "NONE"}},
                "lineItems": lines,
                "summary": {"totalToPay": {"amount": f"{total:.2f}", "currency": currency}},
                "updatedAt": iso(order["updated"]),
                "revision": _revision(order["id"], order["version"]),
                "marketplace": {"id": "allegro-pl"},
            }

    def _event(self, entry: Entry) -> dict[str, Any]:
        order = self.orders.orders[entry.order_id]
        return {
            "id": str(entry.seq),
            "occurredAt": iso(entry.at),
            "type": entry.type,
            "order": {
                "seller": {"id": SELLER_ID},
                "buyer": _buyer(order),
                "lineItems": _line_items(order),
                "checkoutForm": {"id": order["id"], "revision": _revision(order["id"], entry.version)},
                "marketplace": {"id": "allegro-pl"},
            },
        }

    # ------------------------------------------------------------------ auth
    def issue_token(self, client_id: str, client_secret: str) -> dict[str, Any]:
        """A bearer token for valid client credentials."""
        valid_id = secrets.compare_digest(client_id, self._client_id)
        valid_secret = secrets.compare_digest(client_secret, self._client_secret)
        if not (valid_id and valid_secret):
            raise ApiError(401, "invalid_client", "Bad credentials")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_ttl,
            "scope": "allegro:api:sale:offers:read allegro:api:sale:offers:write",
            "jti": str(uuid.uuid4()),
        }

    def check_token(self, token: str) -> bool:
        """True if ``token`` was issued by this process and has not expired."""
        with self._lock:
            expires = self._tokens.get(token)
            if expires is None:
                return False
            if expires <= time.monotonic():
                del self._tokens[token]
                return False
            return True

    def expire_tokens(self) -> None:
        """Invalidate every token (tests use this to force a refresh)."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------------ offers
    def list_offers(self, offset: int, limit: int, external_ids: list[str] | None = None) -> dict[str, Any]:
        """A page of offers in Allegro's ``GET /sale/offers`` shape."""
        if limit < 1 or limit > 1000:
            raise ApiError(422, "VALIDATION_ERROR", "limit must be between 1 and 1000", "limit")
        if offset < 0:
            raise ApiError(422, "VALIDATION_ERROR", "offset must not be negative", "offset")
        with self._lock:
            offers = list(self._offers.values())
            if external_ids:
                wanted = set(external_ids)
                offers = [o for o in offers if o["external"]["id"] in wanted]
            page = json.loads(json.dumps(offers[offset : offset + limit]))
        return {"offers": page, "count": len(page), "totalCount": len(offers)}

    # ------------------------------------------------------------------ commands
    def submit(self, kind: CommandKind, command_id: str, body: Any) -> dict[str, Any]:
        """Apply a change command once; a repeat with the same body returns the first report."""
        try:
            parsed = uuid.UUID(command_id)
        except ValueError:
            raise _invalid("commandId must be a UUID", "commandId") from None
        if str(parsed) != command_id.lower():
            raise _invalid("commandId must be a UUID", "commandId")
        modification, offer_ids = self._validate(kind, body)
        fingerprint = _canonical(body)
        with self._lock:
            existing = self._commands[kind].get(command_id)
            if existing is not None:
                if existing["body"] != fingerprint:
                    raise ApiError(
                        409,
                        "CONFLICT",
                        f"command {command_id} already exists with a different body",
                        "commandId",
                    )
                return dict(existing["accepted"])
            scheduled = _now()
            tasks = []
            changed = 0
            for offer_id in offer_ids:
                status, message = self._apply(kind, offer_id, modification)
                changed += status == "SUCCESS"
                tasks.append(
                    {
                        "offer": {"id": offer_id},
                        "field": kind,
                        "status": status,
                        "message": message,
                        "scheduledAt": scheduled,
                        "finishedAt": _now(),
                    }
                )
            accepted = {
                "id": command_id,
                "taskCount": {"total": len(tasks), "success": 0, "failed": 0},
            }
            self._commands[kind][command_id] = {
                "body": fingerprint,
                "accepted": accepted,
                "createdAt": scheduled,
                "tasks": tasks,
            }
            self._stats[f"{kind}_commands"] += 1
            self._stats["offers_changed"] += changed
            self._save()
            return dict(accepted)

    def _validate(self, kind: CommandKind, body: Any) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(body, dict):
            raise _invalid("body must be a JSON object")
        modification = body.get("modification")
        if not isinstance(modification, dict):
            raise _invalid("modification is required", "modification")
        if kind == "price":
            if modification.get("type") != "FIXED_PRICE":
                raise _invalid("only modification.type FIXED_PRICE is supported", "modification.type")
            price = modification.get("price")
            amount = price.get("amount") if isinstance(price, dict) else None
            currency = price.get("currency") if isinstance(price, dict) else None
            if not isinstance(amount, str) or not _AMOUNT.match(amount) or Decimal(amount) <= 0:
                raise _invalid(
                    "price.amount must be a positive decimal string with at most 2 decimals",
                    "modification.price.amount",
                )
            if not isinstance(currency, str) or not _CURRENCY.match(currency):
                raise _invalid("price.currency must be an ISO 4217 code", "modification.price.currency")
        else:
            change_type = modification.get("changeType")
            value = modification.get("value")
            if change_type not in ("FIXED", "GAIN"):
                raise _invalid("modification.changeType must be FIXED or GAIN", "modification.changeType")
            if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 1_000_000:
                raise _invalid("modification.value must be an integer", "modification.value")
            if change_type == "FIXED" and value < 0:
                raise _invalid("a FIXED quantity must not be negative", "modification.value")
        criteria = body.get("offerCriteria")
        if not isinstance(criteria, list) or not criteria:
            raise _invalid("offerCriteria must be a non-empty list", "offerCriteria")
        offer_ids: list[str] = []
        for index, criterion in enumerate(criteria):
            path = f"offerCriteria[{index}]"
            if not isinstance(criterion, dict) or criterion.get("type") != "CONTAINS_OFFERS":
                raise _invalid("criterion type must be CONTAINS_OFFERS", path + ".type")
            offers = criterion.get("offers")
            if not isinstance(offers, list) or not offers:
                raise _invalid("offers must be a non-empty list", path + ".offers")
            for position, item in enumerate(offers):
                offer_id = item.get("id") if isinstance(item, dict) else None
                if not isinstance(offer_id, str) or not offer_id:
                    raise ApiError(
                        400, "VALIDATION_ERROR", "offer id must be a string", f"{path}.offers[{position}].id"
                    )
                if offer_id not in offer_ids:
                    offer_ids.append(offer_id)
        if len(offer_ids) > MAX_OFFERS_PER_COMMAND:
            raise _invalid(f"at most {MAX_OFFERS_PER_COMMAND} offers per command", "offerCriteria")
        return modification, offer_ids

    def _apply(self, kind: CommandKind, offer_id: str, modification: dict[str, Any]) -> tuple[str, str]:
        offer = self._offers.get(offer_id)
        if offer is None:
            return "FAIL", f"Offer {offer_id} not found"
        refusal = self.faults.rejection(offer["external"]["id"])
        if refusal is not None:
            return "FAIL", f"Offer {offer_id}: {refusal}"
        if kind == "price":
            price = offer["sellingMode"]["price"]
            currency = modification["price"]["currency"]
            if currency != price["currency"]:
                return "FAIL", f"Currency {currency} differs from the offer's currency {price['currency']}"
            price["amount"] = str(Decimal(modification["price"]["amount"]).quantize(Decimal("0.01")))
        else:
            stock = offer["stock"]
            value = int(modification["value"])
            new = value if modification["changeType"] == "FIXED" else stock["available"] + value
            if new < 0:
                return "FAIL", f"Quantity of offer {offer_id} cannot become negative"
            stock["available"] = new
        return "SUCCESS", ""

    def edit_offer(self, offer_id: str, price: str | None = None, quantity: int | None = None) -> dict[str, Any]:
        """Change an offer directly (as a seller would in the marketplace's UI), bypassing commands."""
        with self._lock:
            offer = self._offers.get(offer_id)
            if offer is None:
                raise ApiError(404, "NOT_FOUND", f"offer {offer_id} not found", "offerId")
            if price is not None:
                offer["sellingMode"]["price"]["amount"] = str(Decimal(price).quantize(Decimal("0.01")))
            if quantity is not None:
                offer["stock"]["available"] = int(quantity)
            self._save()
            return json.loads(json.dumps(offer))

    def report(self, kind: CommandKind, command_id: str) -> dict[str, Any]:
        """The general report of a command (processing is immediate, so it is final)."""
        with self._lock:
            command = self._command(kind, command_id)
            tasks = command["tasks"]
            success = sum(task["status"] == "SUCCESS" for task in tasks)
            return {
                "id": command_id,
                "taskCount": {"total": len(tasks), "success": success, "failed": len(tasks) - success},
            }

    def tasks(self, kind: CommandKind, command_id: str, offset: int, limit: int) -> dict[str, Any]:
        """A page of the task report."""
        if limit < 1 or limit > 1000 or offset < 0:
            raise ApiError(422, "VALIDATION_ERROR", "limit must be 1..1000 and offset >= 0", "limit")
        with self._lock:
            command = self._command(kind, command_id)
            return {"tasks": json.loads(json.dumps(command["tasks"][offset : offset + limit]))}

    def _command(self, kind: CommandKind, command_id: str) -> dict[str, Any]:
        command = self._commands[kind].get(command_id)
        if command is None:
            raise ApiError(404, "NOT_FOUND", f"command {command_id} not found", "commandId")
        return command


def _new_ids(seq: int) -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def _revision(order_id: str, version: int) -> str:
    return hashlib.sha256(f"{order_id}:{version}".encode()).hexdigest()[:8]


def _buyer(order: dict[str, Any]) -> dict[str, Any]:
    number = int(hashlib.sha256(order["id"].encode()).hexdigest()[:6], 16)
    return {"id": str(number), "email": f"buyer{number}@allegromail.example", "login": f"buyer{number}", "guest": False}


def _line_items(order: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": line["line_id"],
            "offer": {"id": line["offer_id"], "name": line["title"], "external": {"id": line["sku"]}},
            "quantity": line["quantity"],
            "originalPrice": {"amount": line["price"], "currency": line["currency"]},
            "price": {"amount": line["price"], "currency": line["currency"]},
            "boughtAt": iso(order["created"]),
        }
        for line in order["lines"]
    ]


class AllegroHTTPServer(SimulatorServer):
    """The Allegro simulator's HTTP server."""

    def __init__(self, address: tuple[str, int], simulator: AllegroSimulator) -> None:
        super().__init__(address, simulator, AllegroHandler)


class AllegroHandler(JsonHandler):
    """Routes requests to the simulator and renders its answers and errors."""

    server_version = "AllegroSandbox/1.0"
    content_type = MEDIA_TYPE

    @property
    def simulator(self) -> AllegroSimulator:
        """The simulator of the server handling this request."""
        server = self.server
        assert isinstance(server, AllegroHTTPServer)
        return server.simulator

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            body = self._read_body()
            if parts[:1] == ["_sandbox"]:
                self._sandbox(method, parts[1:], body)
                return
            self.simulator.count_request()
            if parts == ["auth", "oauth", "token"] and method == "POST":
                self._token(query, body)
                return
            if parts[:1] not in (["sale"], ["order"]):
                raise ApiError(404, "NOT_FOUND", f"no resource {url.path}")
            self._authorise(method)
            fault = self.simulator.faults.before_request()
            if fault is not None:
                status, headers = fault
                code = "TOO_MANY_REQUESTS" if status == 429 else "SERVICE_UNAVAILABLE"
                self._send(status, ApiError(status, code, "sandbox fault").body(), headers=headers)
                return
            if parts[0] == "order":
                self._order(method, parts[1:], query)
            else:
                self._sale(method, parts[1:], query, body)
        except ApiError as error:
            if error.code in ("invalid_client", "invalid_token", "invalid_grant", "unsupported_grant_type"):
                self._send(error.status, {"error": error.code, "error_description": error.message})
            else:
                self._send(error.status, error.body())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "request body too large")
        return self.rfile.read(length) if length else b""

    def _order(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        if method != "GET":
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed here")
        if parts == ["events"]:
            froms = query.get("from")
            after = froms[0] if froms else None
            limit = _int_param(query, "limit", 100)
            self._send(200, self.simulator.order_events(after, query.get("type") or [], limit))
        elif parts == ["event-stats"]:
            self._send(200, self.simulator.order_event_stats())
        elif len(parts) == 2 and parts[0] == "checkout-forms":
            self._send(200, self.simulator.checkout_form(parts[1]))
        else:
            raise ApiError(404, "NOT_FOUND", "no such resource")

    def _sandbox(self, method: str, parts: list[str], body: bytes) -> None:
        answer = self.simulator.order_request(method, parts, body)
        if answer is not None:
            self._send(answer[0], answer[1])
            return
        if method == "GET" and parts == ["stats"]:
            self._send(200, self.simulator.stats())
        elif method == "POST" and parts == ["reset"]:
            self.simulator.reset()
            self._send(200, self.simulator.stats())
        elif parts == ["faults"] and method in ("GET", "POST"):
            if method == "POST":
                try:
                    self.simulator.faults.arm(**json.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    raise _invalid(str(exc)) from None
            self._send(200, self.simulator.faults.snapshot())
        elif method == "POST" and len(parts) == 2 and parts[0] == "offers":
            document = json.loads(body or b"{}")
            self._send(200, self.simulator.edit_offer(parts[1], document.get("price"), document.get("quantity")))
        elif method == "POST" and parts == ["expire-tokens"]:
            self.simulator.expire_tokens()
            self._send(200, {"expired": True})
        else:
            raise ApiError(404, "NOT_FOUND", "unknown sandbox endpoint")

    def _token(self, query: dict[str, list[str]], body: bytes) -> None:
        form = parse_qs(body.decode("utf-8", "replace")) if body else {}
        grant = (query.get("grant_type") or form.get("grant_type") or [""])[0]
        if grant != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            raise ApiError(401, "invalid_client", "HTTP Basic client authentication required")
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "invalid_client", "malformed Basic credentials") from None
        client_id, _, client_secret = decoded.partition(":")
        self._send(200, self.simulator.issue_token(client_id, client_secret), content_type="application/json")

    def _authorise(self, method: str) -> None:
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Bearer ") or not self.simulator.check_token(header[7:].strip()):
            raise ApiError(401, "invalid_token", "Invalid or expired access token")
        if MEDIA_TYPE not in (self.headers.get("Accept") or ""):
            raise ApiError(406, "NOT_ACCEPTABLE", f"Accept must be {MEDIA_TYPE}")
        if method == "PUT" and MEDIA_TYPE not in (self.headers.get("Content-Type") or ""):
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type must be {MEDIA_TYPE}")

    def _sale(self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes) -> None:
        if parts == ["offers"] and method == "GET":
            offset = _int_param(query, "offset", 0)
            limit = _int_param(query, "limit", 20)
            self._send(200, self.simulator.list_offers(offset, limit, query.get("external.id")))
            return
        kind = KINDS.get(parts[0]) if parts else None
        if kind is None or len(parts) not in (2, 3):
            raise ApiError(404, "NOT_FOUND", "no such resource")
        command_id = parts[1]
        if method == "PUT" and len(parts) == 2:
            try:
                document = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise _invalid("body is not valid JSON") from None
            accepted = self.simulator.submit(kind, command_id, document)
            if self.simulator.faults.drop_now():
                # Applied, but the answer is lost: the client sees a dropped connection.
                self.close_connection = True
                return
            self._send(201, accepted)
        elif method == "GET" and len(parts) == 2:
            self._send(200, self.simulator.report(kind, command_id))
        elif method == "GET" and parts[2] == "tasks":
            offset = _int_param(query, "offset", 0)
            limit = _int_param(query, "limit", 100)
            self._send(200, self.simulator.tasks(kind, command_id, offset, limit))
        else:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed here")


def _invalid(message: str, path: str | None = None) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, path)


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise ApiError(422, "VALIDATION_ERROR", f"{name} must be an integer", name) from None


def _build(context: SimulatorContext) -> AllegroSimulator:
    known = {k: v for k, v in context.options.items() if k in ("client_id", "client_secret", "token_ttl")}
    return AllegroSimulator(context.state_file, catalog_n=context.catalog_n, seed=context.seed, **known)


register(SimulatorSpec("allegro", "Allegro", 8702, _build, AllegroHTTPServer))
