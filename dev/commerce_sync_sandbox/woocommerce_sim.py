"""A WooCommerce shop simulator: the REST API v3 calls the ``woocommerce`` channel makes, and webhooks.

Contract (woocommerce.github.io/woocommerce-rest-api-docs, WooCommerce 9.x) for what the channel uses:

* Auth: HTTP Basic with the REST API key's consumer key and secret (or ``consumer_key`` /
  ``consumer_secret`` query parameters); otherwise 401 ``woocommerce_rest_cannot_view``.
* ``GET /wp-json/wc/v3/products`` (``page``, ``per_page`` ≤ 100, ``sku`` comma-separated, ``status``,
  ``orderby=id``), ``GET /products/{id}/variations``: lists with ``X-WP-Total`` / ``X-WP-TotalPages``.
* ``POST /products/batch`` and ``POST /products/{id}/variations/batch``: ``create`` / ``update`` /
  ``delete`` with at most 100 items in all (more: 413 ``rest_request_entity_too_large``); answered per
  item (an item's error: ``{"id": 0, "error": {"code", "message", "data": {"status": 400}}}``); a
  create with a SKU in use fails ``product_invalid_sku``; an unknown id ``woocommerce_rest_product_invalid_id``.
* ``GET /orders`` (``modified_after``, ``before``/``after`` on the creation date, ``status``,
  ``orderby=modified|date|id``, ``order``, ``page``, ``per_page``, ``dates_are_gmt``), ``GET /orders/{id}``.
* ``POST /webhooks`` (``name``, ``topic`` ``order.created``/``order.updated``, ``delivery_url``,
  ``secret``): on every order change the shop POSTs the order to each matching webhook with
  ``X-WC-Webhook-Topic``, ``-Resource``, ``-Event``, ``-ID``, ``-Delivery-ID`` and ``-Signature`` (base64
  HMAC-SHA256 of the raw body with the webhook's secret).

Sandbox-only endpoints (no auth): ``POST /_sandbox/orders`` places an order (``{"lines": [{"sku",
"quantity"}], "status": "pending"}``; stock is taken at once and given back when the order is cancelled,
refunded or fails), ``POST /_sandbox/orders/{id}`` changes its status, ``GET /_sandbox/deliveries`` lists
the webhook deliveries, ``GET|POST /_sandbox/faults`` arms faults: those of
:class:`~commerce_sync_sandbox.faults.Faults` (429, 503, dropped answers, per-SKU ``reject`` in batches)
plus ``webhook_twice`` (the next N deliveries are sent twice with one delivery id) and ``webhook_lost``
(the next N are never sent).

The shop starts with the first half of the sandbox catalog (so the channel's ``create_missing`` has
products to create), the SKU ``VAR-1`` as a variable product with variations ``VAR-1-S`` and ``VAR-1-M``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from commerce_sync.channels.woocommerce import webhook_signature
from commerce_sync_sandbox.catalog import products
from commerce_sync_sandbox.faults import Faults
from commerce_sync_sandbox.http import JsonHandler, SimulatorServer
from commerce_sync_sandbox.simulators import SimulatorContext, SimulatorSpec, register
from commerce_sync_sandbox.state import load_state, save_state

log = logging.getLogger(__name__)

API = ["wp-json", "wc", "v3"]
MAX_BATCH = 100
MAX_PER_PAGE = 100
CONSUMER_KEY = "ck_demo_woocommerce_key"
CONSUMER_SECRET = "cs_demo_woocommerce_secret"  # noqa: S105 - the sandbox's documented demo secret
PRODUCT_ID_BASE = 1000
RESTOCK_STATUSES = frozenset({"cancelled", "refunded", "failed"})
ORDER_STATUSES = frozenset({"pending", "on-hold", "processing", "completed", "cancelled", "refunded", "failed"})


class WooError(Exception):
    """A WooCommerce REST error: ``{"code", "message", "data": {"status"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"status": self.status}}


@dataclass
class ShopFaults(Faults):
    """The shared faults plus lost and doubled webhook deliveries."""

    webhook_twice: int = 0
    webhook_lost: int = 0

    def clear(self) -> None:
        super().clear()
        self.arm(webhook_twice=0, webhook_lost=0)

    def webhook(self) -> int:
        """How many times the next delivery is sent: 0 (lost), 1 or 2 (twice)."""
        with self._lock:
            if self.webhook_lost > 0:
                self.webhook_lost -= 1
                self.fired["webhook_lost"] = self.fired.get("webhook_lost", 0) + 1
                return 0
            if self.webhook_twice > 0:
                self.webhook_twice -= 1
                self.fired["webhook_twice"] = self.fired.get("webhook_twice", 0) + 1
                return 2
        return 1


def _gmt(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _price_text(value: Any, field: str) -> str:
    """A price as WooCommerce stores it (a decimal string; empty clears it)."""
    if value == "":
        return ""
    if not isinstance(value, str):
        raise WooError(400, "rest_invalid_param", f"{field} must be a string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise WooError(400, "rest_invalid_param", f"{field} {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise WooError(400, "rest_invalid_param", f"{field} {value!r} is not a price")
    return value


class WooCommerceSimulator:
    """State and rules of the simulated shop; thread-safe.

    Args:
        catalog_n: size of the sandbox catalog (the shop starts with its first half).
        seed: catalog seed.
        state_path: JSON file keeping products, orders and webhooks across restarts (None: memory only).
    """

    def __init__(
        self,
        *,
        catalog_n: int = 300,
        seed: int = 42,
        state_path: Path | None = None,
        consumer_key: str = CONSUMER_KEY,
        consumer_secret: str = CONSUMER_SECRET,
    ) -> None:
        self.state_path = state_path
        self._key = consumer_key
        self._secret = consumer_secret
        self.faults = ShopFaults()
        self._lock = threading.RLock()
        self._delivered = threading.Condition(self._lock)
        self.clock_offset = timedelta(0)
        """Added to the wall clock (tests move the shop's time forward)."""
        self.products: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.batches: list[tuple[str, dict[str, Any]]] = []
        """The last 1,000 batch documents received, with their path (for tests and the demo)."""
        self.stats = {"requests": 0, "batches": 0, "items": 0, "creates": 0, "item_errors": 0}
        self._next_id = PRODUCT_ID_BASE
        saved = load_state(state_path)
        if saved is not None:
            self.products = {int(p["id"]): p for p in saved.get("products", [])}
            self.orders = {int(o["id"]): o for o in saved.get("orders", [])}
            self.webhooks = {int(w["id"]): w for w in saved.get("webhooks", [])}
            self.stats.update(saved.get("stats", {}))
            self._next_id = int(saved.get("next_id", PRODUCT_ID_BASE))
        else:
            self._seed(catalog_n, seed)
        self._seeded_until = int(saved.get("seeded_until", self._next_id)) if saved else self._next_id

    def __repr__(self) -> str:
        return f"WooCommerceSimulator(products={len(self.products)}, orders={len(self.orders)})"

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _seed(self, catalog_n: int, seed: int) -> None:
        moment = _gmt(self.now())
        for product in products(catalog_n, seed)[: catalog_n // 2]:
            pid = self._new_id()
            self.products[pid] = {
                "id": pid,
                "parent_id": 0,
                "type": "simple",
                "status": "publish",
                "sku": product.sku,
                "name": product.name,
                "description": "",
                "regular_price": str((product.purchase_price * Decimal("1.35")).quantize(Decimal("0.01"))),
                "sale_price": "",
                "manage_stock": True,
                "stock_quantity": product.stock,
                "stock_status": "instock" if product.stock > 0 else "outofstock",
                "global_unique_id": "",
                "categories": [],
                "images": [],
                "attributes": [],
                "date_modified_gmt": moment,
            }
        parent = self._new_id()
        self.products[parent] = {
            "id": parent,
            "parent_id": 0,
            "type": "variable",
            "status": "publish",
            "sku": "VAR-1",
            "name": "Koszulka sandbox",
            "regular_price": "",
            "manage_stock": False,
            "stock_quantity": None,
            "stock_status": "instock",
            "date_modified_gmt": moment,
        }
        for size in ("S", "M"):
            vid = self._new_id()
            self.products[vid] = {
                "id": vid,
                "parent_id": parent,
                "type": "variation",
                "status": "publish",
                "sku": f"VAR-1-{size}",
                "regular_price": "49.00",
                "sale_price": "",
                "manage_stock": True,
                "stock_quantity": 5,
                "stock_status": "instock",
                "description": "",
                "date_modified_gmt": moment,
            }

    def _save(self) -> None:
        if self.state_path is not None:
            save_state(
                self.state_path,
                {
                    "products": list(self.products.values()),
                    "orders": list(self.orders.values()),
                    "webhooks": list(self.webhooks.values()),
                    "stats": self.stats,
                    "next_id": self._next_id,
                    "seeded_until": self._seeded_until,
                },
            )

    def check_auth(self, key: str, secret: str) -> bool:
        return secrets.compare_digest(key, self._key) and secrets.compare_digest(secret, self._secret)

    # ------------------------------------------------------------------ products
    def by_sku(self, sku: str) -> dict[str, Any] | None:
        """The product or variation carrying ``sku``."""
        with self._lock:
            return next((p for p in self.products.values() if p.get("sku") == sku), None)

    def list_products(self, query: dict[str, list[str]], parent: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if parent is not None:
                if parent not in self.products or self.products[parent]["type"] != "variable":
                    raise WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
                found = [p for p in self.products.values() if p["parent_id"] == parent]
            else:
                found = [p for p in self.products.values() if p["type"] != "variation"]
            skus = _first(query, "sku")
            if skus:
                wanted = set(skus.split(","))
                # WooCommerce matches variations by SKU too when asked for SKUs.
                found = [p for p in self.products.values() if p.get("sku") in wanted]
            return [dict(p) for p in sorted(found, key=lambda p: p["id"])]

    def batch(self, document: Any, parent: int | None = None) -> dict[str, Any]:
        """Apply one batch; returns WooCommerce's per-item answer."""
        if not isinstance(document, dict):
            raise WooError(400, "rest_invalid_json", "The body must be a JSON object.")
        count = sum(len(document.get(op) or []) for op in ("create", "update", "delete"))
        if count > MAX_BATCH:
            raise WooError(413, "rest_request_entity_too_large", f"Unable to accept more than {MAX_BATCH} items.")
        answer: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            self.batches = [
                *self.batches[-999:],
                (f"/products/{parent}/variations" if parent else "/products", document),
            ]
            self.stats["batches"] += 1
            self.stats["items"] += count
            if document.get("create"):
                answer["create"] = [self._item(self._create, entry, parent) for entry in document["create"]]
            if document.get("update"):
                answer["update"] = [self._item(self._update, entry, parent) for entry in document["update"]]
            self._save()
        return answer

    def _item(self, apply: Any, entry: Any, parent: int | None) -> dict[str, Any]:
        try:
            if not isinstance(entry, dict):
                raise WooError(400, "rest_invalid_param", "each item must be an object")
            rejected = self.faults.rejection(entry.get("sku") or self._sku_of(entry.get("id")))
            if rejected is not None:
                raise WooError(400, "woocommerce_rest_sandbox_rejected", rejected)
            result: dict[str, Any] = apply(entry, parent)
            return result
        except WooError as error:
            self.stats["item_errors"] += 1
            return {"id": entry.get("id", 0) if isinstance(entry, dict) else 0, "error": error.body()}

    def _sku_of(self, product_id: Any) -> str | None:
        try:
            product = self.products.get(int(product_id))
        except (TypeError, ValueError):
            return None
        return product.get("sku") if product else None

    def _create(self, entry: dict[str, Any], parent: int | None) -> dict[str, Any]:
        sku = entry.get("sku")
        if not sku or self.by_sku(str(sku)) is not None:
            raise WooError(400, "product_invalid_sku", "Invalid or duplicated SKU.")
        if parent is None and not entry.get("name"):
            raise WooError(400, "woocommerce_rest_product_invalid_name", "A product needs a name.")
        pid = self._new_id()
        product: dict[str, Any] = {
            "id": pid,
            "parent_id": parent or 0,
            "type": "variation" if parent else str(entry.get("type") or "simple"),
            "status": str(entry.get("status") or "publish"),
            "sku": str(sku),
            "name": "",
            "description": "",
            "regular_price": "",
            "sale_price": "",
            "manage_stock": False,
            "stock_quantity": None,
            "stock_status": "instock",
            "global_unique_id": "",
            "categories": [],
            "images": [],
            "attributes": [],
        }
        self._apply(product, entry)
        self.products[pid] = product
        self.stats["creates"] += 1
        return dict(product)

    def _update(self, entry: dict[str, Any], parent: int | None) -> dict[str, Any]:
        try:
            product = self.products[int(entry.get("id"))]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise WooError(400, "woocommerce_rest_product_invalid_id", "Invalid ID.") from None
        if (parent or 0) != product["parent_id"]:
            raise WooError(400, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        self._apply(product, entry)
        return dict(product)

    def _apply(self, product: dict[str, Any], entry: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        for field in ("regular_price", "sale_price"):
            if field in entry:
                changes[field] = _price_text(entry[field], field)
        if "stock_quantity" in entry:
            quantity = entry["stock_quantity"]
            if not isinstance(quantity, int) or isinstance(quantity, bool):
                raise WooError(400, "rest_invalid_param", "stock_quantity must be an integer")
            changes["stock_quantity"] = quantity
        if "stock_status" in entry and entry["stock_status"] not in ("instock", "outofstock", "onbackorder"):
            raise WooError(400, "rest_invalid_param", "stock_status is not one of instock, outofstock, onbackorder")
        gtin = entry.get("global_unique_id")
        if gtin and (not str(gtin).isdigit() or len(str(gtin)) not in (8, 12, 13, 14)):
            raise WooError(400, "woocommerce_rest_invalid_global_unique_id", "Invalid GTIN.")
        for field in (
            "name",
            "description",
            "manage_stock",
            "stock_status",
            "global_unique_id",
            "categories",
            "images",
            "attributes",
            "status",
        ):
            if field in entry:
                changes[field] = entry[field]
        if "image" in entry:
            changes["images"] = [entry["image"]]
        product.update(changes)
        if product.get("manage_stock") and "stock_status" not in entry and product.get("stock_quantity") is not None:
            product["stock_status"] = "instock" if product["stock_quantity"] > 0 else "outofstock"
        product["date_modified_gmt"] = _gmt(self.now())

    def summary_stats(self) -> dict[str, Any]:
        """Counters, and the newest product the channel created (for the demo)."""
        with self._lock:
            created = [p for p in self.products.values() if p["id"] > self._seeded_until and p["type"] == "simple"]
            newest = max(created, key=lambda p: p["id"], default=None)
            sample = None
            if newest is not None:
                keys = ("sku", "name", "regular_price", "stock_quantity", "global_unique_id", "categories", "images")
                sample = {key: newest.get(key) for key in keys}
            return {**self.stats, "products": len(self.products), "orders": len(self.orders), "last_created": sample}

    # ------------------------------------------------------------------ orders
    def place_order(self, document: dict[str, Any]) -> dict[str, Any]:
        """A customer's order: its lines' stock is taken at once (held while pending)."""
        status = str(document.get("status") or "pending")
        if status not in ORDER_STATUSES:
            raise WooError(400, "rest_invalid_param", f"status {status!r} is not an order status")
        with self._lock:
            lines = []
            for number, line in enumerate(document.get("lines") or [], 1):
                product = self.by_sku(str(line.get("sku")))
                quantity = int(line.get("quantity") or 1)
                if product is None or product["type"] == "variable":
                    raise WooError(400, "woocommerce_rest_invalid_product", f"no product with SKU {line.get('sku')}")
                if product.get("manage_stock") and (product.get("stock_quantity") or 0) < quantity:
                    raise WooError(400, "woocommerce_rest_out_of_stock", f"SKU {product['sku']} is out of stock")
                lines.append(
                    {
                        "id": 9000 + len(self.orders) * 10 + number,
                        "product_id": product["parent_id"] or product["id"],
                        "variation_id": product["id"] if product["parent_id"] else 0,
                        "sku": product["sku"],
                        "quantity": quantity,
                        "price": float(Decimal(product.get("regular_price") or "0")),
                    }
                )
            moment = _gmt(self.now())
            oid = self._new_id()
            order = {
                "id": oid,
                "status": status,
                "currency": "PLN",
                "date_created_gmt": moment,
                "date_modified_gmt": moment,
                "line_items": lines,
            }
            self._take_stock(order, -1)
            self.orders[oid] = order
            self._save()
        self._notify("order.created", order)
        return dict(order)

    def set_order_status(self, order_id: int, status: str) -> dict[str, Any]:
        """Change an order's status (stock goes back when it is cancelled, refunded or fails)."""
        if status not in ORDER_STATUSES:
            raise WooError(400, "rest_invalid_param", f"status {status!r} is not an order status")
        with self._lock:
            order = self.orders.get(order_id)
            if order is None:
                raise WooError(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
            before = order["status"]
            if before not in RESTOCK_STATUSES and status in RESTOCK_STATUSES:
                self._take_stock(order, +1)
            elif before in RESTOCK_STATUSES and status not in RESTOCK_STATUSES:
                self._take_stock(order, -1)
            order["status"] = status
            order["date_modified_gmt"] = _gmt(self.now())
            self._save()
        self._notify("order.updated", order)
        return dict(order)

    def _take_stock(self, order: dict[str, Any], sign: int) -> None:
        for line in order["line_items"]:
            product = self.products[line["variation_id"] or line["product_id"]]
            if product.get("manage_stock"):
                product["stock_quantity"] = int(product["stock_quantity"] or 0) + sign * line["quantity"]
                product["stock_status"] = "instock" if product["stock_quantity"] > 0 else "outofstock"
                product["date_modified_gmt"] = _gmt(self.now())

    def list_orders(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self.orders.values())
        status = _first(query, "status")
        if status and status != "any":
            found = [o for o in found if o["status"] in status.split(",")]
        for name, key, keep in (
            ("modified_after", "date_modified_gmt", lambda t, b: t > b),
            ("modified_before", "date_modified_gmt", lambda t, b: t < b),
            ("after", "date_created_gmt", lambda t, b: t > b),
            ("before", "date_created_gmt", lambda t, b: t < b),
        ):
            bound = _parse_time(_first(query, name))
            if bound is not None:
                found = [o for o in found if keep(_parse_time(o[key]), bound)]
        orderby = _first(query, "orderby") or "date"
        if orderby not in ("date", "modified", "id"):
            raise WooError(400, "rest_invalid_param", "orderby is not one of date, id, modified")
        key = {"date": "date_created_gmt", "modified": "date_modified_gmt", "id": "id"}[orderby]
        found.sort(key=lambda o: (o[key], o["id"]), reverse=(_first(query, "order") or "desc") == "desc")
        return [json.loads(json.dumps(o)) for o in found]

    # ------------------------------------------------------------------ webhooks
    def add_webhook(self, document: dict[str, Any]) -> dict[str, Any]:
        topic = document.get("topic")
        if topic not in ("order.created", "order.updated"):
            raise WooError(400, "rest_invalid_param", "the sandbox sends order.created and order.updated only")
        if not str(document.get("delivery_url") or "").startswith(("http://", "https://")):
            raise WooError(400, "rest_invalid_param", "delivery_url must be an http(s) URL")
        with self._lock:
            wid = self._new_id()
            hook = {
                "id": wid,
                "name": str(document.get("name") or topic),
                "status": "active",
                "topic": topic,
                "delivery_url": document["delivery_url"],
                "secret": str(document.get("secret") or secrets.token_urlsafe(24)),
            }
            self.webhooks[wid] = hook
            self._save()
        return {k: v for k, v in hook.items() if k != "secret"}

    def _notify(self, topic: str, order: dict[str, Any]) -> None:
        """POST the order to every active webhook of ``topic``, in the background as WooCommerce does (its
        Action Scheduler); faults may lose a delivery or send it twice. :meth:`wait_for_deliveries` waits."""
        body = json.dumps(order, separators=(",", ":")).encode("utf-8")
        for hook in [h for h in self.webhooks.values() if h["topic"] == topic and h["status"] == "active"]:
            times = self.faults.webhook()
            delivery = str(uuid.uuid4().int % 10**9)
            headers = {
                "Content-Type": "application/json",
                "X-WC-Webhook-Source": "http://sandbox-shop/",
                "X-WC-Webhook-Topic": topic,
                "X-WC-Webhook-Resource": "order",
                "X-WC-Webhook-Event": topic.split(".", 1)[1],
                "X-WC-Webhook-ID": str(hook["id"]),
                "X-WC-Webhook-Delivery-ID": delivery,
                "X-WC-Webhook-Signature": webhook_signature(hook["secret"], body),
            }
            record: dict[str, Any] = {"delivery_id": delivery, "topic": topic, "order": order["id"], "sent": times}
            thread = threading.Thread(
                target=self._deliver, args=(hook["delivery_url"], body, headers, times, record), daemon=True
            )
            thread.start()

    def _deliver(self, url: str, body: bytes, headers: dict[str, str], times: int, record: dict[str, Any]) -> None:
        statuses: list[int | str] = []
        for _ in range(times):
            try:
                statuses.append(requests.post(url, data=body, headers=headers, timeout=30).status_code)
            except requests.RequestException as error:
                statuses.append(type(error).__name__)
        with self._delivered:
            self.deliveries.append({**record, "statuses": statuses})
            self._delivered.notify_all()

    def wait_for_deliveries(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The deliveries once at least ``count`` have finished (raises TimeoutError after ``timeout`` s)."""
        with self._delivered:
            if not self._delivered.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise TimeoutError(f"{len(self.deliveries)} of {count} webhook deliveries finished")
            return list(self.deliveries)


class WooCommerceHTTPServer(SimulatorServer):
    """The WooCommerce simulator's HTTP server."""

    def __init__(self, address: tuple[str, int], simulator: WooCommerceSimulator) -> None:
        super().__init__(address, simulator, WooCommerceHandler)


class WooCommerceHandler(JsonHandler):
    """Routes requests to the simulator."""

    server_version = "WooCommerceSandbox/1.0"

    @property
    def simulator(self) -> WooCommerceSimulator:
        server = self.server
        assert isinstance(server, WooCommerceHTTPServer)
        return server.simulator

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]
        sim = self.simulator
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            document = json.loads(body) if body else {}
            if parts[:1] == ["_sandbox"]:
                self._sandbox(method, parts[1:], document)
                return
            if parts[:3] != API:
                raise WooError(404, "rest_no_route", "No route was found matching the URL and request method.")
            with sim._lock:
                sim.stats["requests"] += 1
            if not self._authorised(query):
                raise WooError(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
            fault = sim.faults.before_request()
            if fault is not None:
                status, headers = fault
                self._send(status, WooError(status, "sandbox_fault", "sandbox fault").body(), headers=headers)
                return
            self._api(method, parts[3:], query, document)
        except WooError as error:
            self._send(error.status, error.body())
        except (ValueError, json.JSONDecodeError) as error:
            self._send(400, WooError(400, "rest_invalid_param", str(error)).body())

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        header = self.headers.get("Authorization") or ""
        if header.startswith("Basic "):
            try:
                key, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            key, secret = _first(query, "consumer_key") or "", _first(query, "consumer_secret") or ""
        return self.simulator.check_auth(key, secret)

    def _api(self, method: str, parts: list[str], query: dict[str, list[str]], document: Any) -> None:
        sim = self.simulator
        if parts == ["products"] and method == "GET":
            self._page(sim.list_products(query), query)
        elif parts == ["products", "batch"] and method == "POST":
            self._write(sim.batch(document))
        elif len(parts) == 3 and parts[0] == "products" and parts[2] == "variations" and method == "GET":
            self._page(sim.list_products(query, parent=int(parts[1])), query)
        elif len(parts) == 4 and parts[0] == "products" and parts[2:] == ["variations", "batch"] and method == "POST":
            self._write(sim.batch(document, parent=int(parts[1])))
        elif parts == ["orders"] and method == "GET":
            self._page(sim.list_orders(query), query)
        elif len(parts) == 2 and parts[0] == "orders" and method == "GET":
            order = sim.orders.get(int(parts[1]))
            if order is None:
                raise WooError(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
            self._send(200, order)
        elif parts == ["webhooks"] and method == "POST":
            self._send(201, sim.add_webhook(document))
        else:
            raise WooError(404, "rest_no_route", "No route was found matching the URL and request method.")

    def _write(self, answer: dict[str, Any]) -> None:
        if self.simulator.faults.drop_now():
            self.close_connection = True
            return
        self._send(200, answer)

    def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> None:
        per_page = int(_first(query, "per_page") or 10)
        page = int(_first(query, "page") or 1)
        if not 1 <= per_page <= MAX_PER_PAGE or page < 1:
            raise WooError(400, "rest_invalid_param", f"per_page must be between 1 and {MAX_PER_PAGE}")
        pages = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        self._send(200, chunk, headers={"X-WP-Total": str(len(items)), "X-WP-TotalPages": str(pages)})

    def _sandbox(self, method: str, parts: list[str], document: Any) -> None:
        sim = self.simulator
        if parts == ["faults"] and method in ("GET", "POST"):
            if method == "POST":
                sim.faults.arm(**document)
            self._send(200, sim.faults.snapshot())
        elif parts == ["orders"] and method == "POST":
            self._send(201, sim.place_order(document))
        elif len(parts) == 2 and parts[0] == "orders" and method == "POST":
            self._send(200, sim.set_order_status(int(parts[1]), str(document.get("status"))))
        elif parts == ["deliveries"] and method == "GET":
            with sim._lock:
                self._send(200, list(sim.deliveries))
        elif parts == ["stats"] and method == "GET":
            self._send(200, sim.summary_stats())
        else:
            raise WooError(404, "rest_no_route", "unknown sandbox endpoint")


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def summary(base_url: str) -> str:
    """The demo's line: products, what the channel created and sent, and one created product."""
    stats = requests.get(f"{base_url}/_sandbox/stats", timeout=5).json()
    line = (
        f"WooCommerce shop: {stats['products']} products, {stats['creates']} created by the channel; "
        f"{stats['batches']} batch calls with {stats['items']} items, {stats['item_errors']} item errors; "
        f"{stats['orders']} orders"
    )
    sample = stats.get("last_created")
    if sample:
        line += (
            f"\n    e.g. {sample['sku']} {sample['name']!r}: price {sample['regular_price']}, stock "
            f"{sample['stock_quantity']}, GTIN {sample['global_unique_id']}, categories {sample['categories']}, "
            f"images {[image.get('src') for image in sample['images'] or []]}"
        )
    return line


def _build(context: SimulatorContext) -> WooCommerceSimulator:
    return WooCommerceSimulator(
        catalog_n=context.catalog_n, seed=context.seed, state_path=context.beside("woocommerce_state.json")
    )


register(SimulatorSpec("woocommerce", "WooCommerce", 8705, _build, WooCommerceHTTPServer, summary))
