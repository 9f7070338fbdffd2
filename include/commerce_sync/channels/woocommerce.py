"""WooCommerce: the seller's own shop as a channel kind (REST API v3 under ``/wp-json/wc/v3/``).

What goes out, through the outbox like every marketplace (:mod:`commerce_sync.channels.marketplace`):

- **price**: ``regular_price`` (a string, as WooCommerce takes it), and ``sale_price`` where the outbox
  payload carries ``sale_amount`` (a rule that sets one);
- **quantity**: ``manage_stock: true``, ``stock_quantity`` and ``stock_status`` (``instock``/``outofstock``);
- **content**: ``name``, ``description``, ``global_unique_id`` (the GTIN, WooCommerce 9.2+), the brand as
  a visible product attribute, ``categories`` (hub category → WooCommerce category id, from the channel's
  settings) and ``images`` (from the channel's image URL template).

Products are matched to hub SKUs by ``sku`` (the listing sync learns each SKU's product id, and for a
variable product each variation's ``parent/variation`` id). Simple products go out in ``POST
/products/batch`` calls of at most 100 items (the platform's default limit), variations in ``POST
/products/{id}/variations/batch`` calls per parent; WooCommerce answers per item, and an item's error is
recorded on its outbox rows (the next run sends them again). A SKU without a product is created when the
channel's settings say ``create_missing: true`` and a content row for it is pending (a product needs a
name); before creating, the SKUs are looked up once more by ``sku``, so a create whose answer was lost is
not repeated as a duplicate.

Orders come in through :meth:`WooCommerceMarketplace.read_orders` (``GET /orders?modified_after=…
&orderby=modified&order=asc``, paged by ``X-WP-TotalPages``, re-reading an overlapping window) and the
webhook doorbell (:func:`verify_webhook`; the endpoint is the ``woocommerce_webhook`` plugin). A
``pending`` order holds its units for the shop's hold time (``hold_minutes``), then counts as cancelled.

Credentials: the Airflow connection's host is the shop's URL, login the REST API consumer key and password
its consumer secret (HTTP Basic over HTTPS); they never appear in repr, logs, XCom or the ledger.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from commerce_sync import registry
from commerce_sync.channels.marketplace import Item, Marketplace, Outcome, Request
from commerce_sync.channels.orders import MarketplaceOrder, OrderBatch, OrderLine, OrderStatus
from commerce_sync.channels.reconcile import ChannelOffer
from commerce_sync.config import Channel
from commerce_sync.connections import ConnectionInfo
from commerce_sync.errors import ChannelError, ConfigError
from commerce_sync.transport.http import HttpClient

if TYPE_CHECKING:
    from airflow.sdk import Asset

log = logging.getLogger(__name__)

KIND = "woocommerce"
API = "/wp-json/wc/v3"
MAX_BATCH_ITEMS = 100
"""Create + update + delete items per batch request (WooCommerce's default ``woocommerce_rest_batch_items_limit``)."""
PAGE_SIZE = 100
"""WooCommerce's largest ``per_page``."""
SKU_LOOKUP = 25
"""SKUs looked up per ``GET /products?sku=a,b,...`` before creating (keeps the query string short)."""

STATUS_MAP: dict[str, OrderStatus] = {
    "pending": "unpaid",  # awaiting payment: holds stock for the hold time
    "on-hold": "unpaid",  # awaiting a manual payment (bank transfer): stock reduced, not yet paid
    "processing": "ready",  # paid, to be shipped
    "completed": "ready",
    "cancelled": "cancelled",
    "refunded": "cancelled",
    "failed": "cancelled",  # payment failed or declined
}
"""Every WooCommerce core order status, mapped explicitly (custom ones: ``order_statuses`` in settings)."""


class WooCommerceSettings(BaseModel):
    """``settings`` of a ``woocommerce`` channel in channels.yaml.

    Args:
        create_missing: create a product for a hub SKU the shop does not have (from its content row).
        hold_minutes: the shop's "Hold stock (minutes)" (WooCommerce > Settings > Products > Inventory): a
            ``pending`` order older than this no longer holds stock (WooCommerce cancels it).
        image_url: template of a product's main image URL, ``{sku}`` replaced (none: images untouched).
        categories: hub category → WooCommerce product category id (unmapped: categories untouched).
        brand_attribute: name of the product attribute that shows the brand.
        webhook_conn_id: Airflow connection whose password is the webhook secret (the webhook endpoint
            refuses deliveries for a channel without one).
        order_overlap_minutes: how far before the stored cursor each order read starts again, so an order
            saved with an older modification time (clock skew, a slow request) is not missed.
        order_statuses: custom order statuses (from plugins) mapped onto unpaid/ready/cancelled.
    """

    model_config = ConfigDict(extra="forbid")

    create_missing: bool = False
    hold_minutes: int = Field(default=60, ge=0, le=60 * 24 * 30)
    image_url: str | None = Field(default=None, pattern=r"^https?://[^\s]*\{sku\}[^\s]*$")
    categories: dict[str, int] = Field(default_factory=dict)
    brand_attribute: str = Field(default="Brand", min_length=1, max_length=100)
    webhook_conn_id: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{1,39}$")
    order_overlap_minutes: int = Field(default=10, ge=0, le=24 * 60)
    order_statuses: dict[str, Literal["unpaid", "ready", "cancelled"]] = Field(default_factory=dict)


def settings_of(channel: Channel) -> WooCommerceSettings:
    """The channel's validated WooCommerce settings."""
    return WooCommerceSettings.model_validate(channel.settings)


class WooCommerceClient(HttpClient):
    """WooCommerce REST API v3 client.

    Args:
        base_url: the shop's URL (``https://shop.example.com``; the simulator's URL in the sandbox).
        consumer_key: the REST API key's consumer key (``ck_...``).
        consumer_secret: its consumer secret (``cs_...``; never shown).
        **options: passed to :class:`~commerce_sync.transport.http.HttpClient`.
    """

    channel = KIND
    requests_per_period = (10.0, 1.0)  # one WordPress server: stay gentle

    def __init__(self, base_url: str, consumer_key: str, consumer_secret: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self.consumer_key = consumer_key
        self.__authorization = "Basic " + base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self.session.headers["Accept"] = "application/json"

    @classmethod
    def from_connection(cls, info: ConnectionInfo, **options: Any) -> WooCommerceClient:
        """A client from an Airflow connection: host = the shop's URL, login/password = consumer key/secret."""
        if not info.host or not info.login or not info.password:
            raise ConfigError(
                f"connection {info.conn_id!r} needs host (the shop's URL), login (the REST API consumer key) "
                "and password (its consumer secret)"
            )
        return cls(info.base_url(), info.login, info.password, **options)

    def __repr__(self) -> str:
        return f"WooCommerceClient(base_url={self.base_url!r}, consumer_key={self.consumer_key[:7]!r}...)"

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": self.__authorization}

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Every page of a collection, by ``X-WP-TotalPages``."""
        page = 1
        while True:
            response = self.request("GET", API + path, params={**params, "per_page": PAGE_SIZE, "page": page})
            items = response.json()
            if not isinstance(items, list):
                raise ChannelError(f"woocommerce: GET {path} answered {type(items).__name__}, not a list")
            yield items
            total = int(response.headers.get("X-WP-TotalPages") or 1)
            if page >= total or not items:
                return
            page += 1

    def products(self) -> Iterator[dict[str, Any]]:
        """Every product (any status)."""
        for page in self._pages("/products", {"status": "any", "orderby": "id", "order": "asc"}):
            yield from page

    def variations(self, product_id: int | str) -> Iterator[dict[str, Any]]:
        """Every variation of a variable product."""
        for page in self._pages(f"/products/{product_id}/variations", {"orderby": "id", "order": "asc"}):
            yield from page

    def products_by_sku(self, skus: list[str]) -> dict[str, dict[str, Any]]:
        """The products (or variations) carrying ``skus``, by SKU."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(skus), SKU_LOOKUP):
            chunk = skus[start : start + SKU_LOOKUP]
            for page in self._pages("/products", {"sku": ",".join(chunk), "status": "any"}):
                for product in page:
                    if product.get("sku") in chunk:
                        found[str(product["sku"])] = product
        return found

    def batch(self, path: str, body: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """``POST <path>/batch`` with at most 100 create + update items; WooCommerce's per-item answer."""
        count = sum(len(body.get(op) or []) for op in ("create", "update", "delete"))
        if not 1 <= count <= MAX_BATCH_ITEMS:
            raise ValueError(f"WooCommerce takes 1..{MAX_BATCH_ITEMS} items per batch, got {count}")
        answer: dict[str, Any] = self.request("POST", f"{API}{path}/batch", json_body=body).json()
        return answer

    def orders_page(self, params: dict[str, Any], page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
        """One page of ``GET /orders`` and the number of pages (``X-WP-TotalPages``)."""
        response = self.request("GET", API + "/orders", params={**params, "per_page": per_page, "page": page})
        orders = response.json()
        if not isinstance(orders, list):
            raise ChannelError(f"woocommerce: GET /orders answered {type(orders).__name__}, not a list")
        return orders, int(response.headers.get("X-WP-TotalPages") or 1)


def _offer_id(product: dict[str, Any], parent_id: Any = None) -> str:
    return f"{parent_id}/{product['id']}" if parent_id else str(product["id"])


def _money(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class WooCommerceMarketplace(Marketplace):
    """The shop as the publisher sees it: product batches of at most 100 items, answered per item.

    Offers are addressed by WooCommerce's product id (``123``) or, for a variation, ``parent/variation``
    (``123/456``); all rows of one SKU travel in one batch item. Updates set absolute values, so a
    re-sent batch changes nothing; the in-doubt read-back covers lost answers.
    """

    kind = KIND
    title = "WooCommerce"
    max_items_per_request = MAX_BATCH_ITEMS
    request_noun = "batch call"
    client: WooCommerceClient

    def __init__(self, client: WooCommerceClient, settings: WooCommerceSettings | None = None) -> None:
        super().__init__(client)
        self.settings = settings or WooCommerceSettings()
        self.currency: str | None = None
        self.clock = lambda: datetime.now(UTC)

    @classmethod
    def from_connection(cls, info: ConnectionInfo) -> WooCommerceMarketplace:
        return cls(WooCommerceClient.from_connection(info))

    def configure(self, channel: Channel) -> None:
        self.settings = settings_of(channel)
        self.creates_offers = self.settings.create_missing
        self.currency = channel.currency

    # ------------------------------------------------------------------ publishing
    def check(self, item: Item) -> str | None:
        if item.field == "content":
            name = item.payload.get("name")
            if not isinstance(name, str) or not name.strip():
                return f"content payload of SKU {item.sku} has no name"
            return None
        return super().check(item)

    def batches(self, items: list[Item], batch_size: int) -> Iterator[list[Item]]:
        """Simple products (and SKUs to create) ``batch_size`` SKUs a batch; variations per parent product."""
        groups: dict[str, dict[str, list[Item]]] = {}
        for item in items:
            parent = item.offer_id.split("/", 1)[0] if item.offer_id and "/" in item.offer_id else ""
            groups.setdefault(parent, {}).setdefault(item.sku, []).append(item)
        for parent in sorted(groups):
            by_sku = groups[parent]
            skus = sorted(by_sku)
            for start in range(0, len(skus), batch_size):
                yield [item for sku in skus[start : start + batch_size] for item in by_sku[sku]]

    def build(self, items: list[Item]) -> Request:
        """One batch: updates by product (or variation) id, creates for SKUs the shop does not have."""
        first = items[0].offer_id or ""
        parent = first.split("/", 1)[0] if "/" in first else None
        by_sku: dict[str, list[Item]] = {}
        for item in items:
            by_sku.setdefault(item.sku, []).append(item)
        missing = sorted(sku for sku, rows in by_sku.items() if rows[0].offer_id is None)
        found = self.client.products_by_sku(missing) if missing else {}
        update: list[dict[str, Any]] = []
        create: list[dict[str, Any]] = []
        order: list[tuple[str, str, int]] = []  # (sku, "update" | "create", index in that list)
        skipped: dict[str, str] = {}
        creates: dict[str, dict[str, Any]] = {}
        for sku, rows in by_sku.items():
            offer_id = rows[0].offer_id
            fields = self._fields(sku, rows, variation=parent is not None)
            if offer_id is None and sku in found:
                offer_id = str(found[sku]["id"])  # created earlier, its answer lost (or not listed yet)
            if offer_id is not None:
                update.append({"id": int(offer_id.rsplit("/", 1)[-1]), **fields})
                order.append((sku, "update", len(update) - 1))
            elif "name" not in fields:
                skipped[sku] = (
                    f"SKU {sku} has no WooCommerce product and no pending content to create it from; "
                    "create it in the shop or change its content in the ERP"
                )
            else:
                create.append({"sku": sku, "type": "simple", "status": "publish", **fields})
                order.append((sku, "create", len(create) - 1))
                creates[sku] = fields
        body = {key: value for key, value in (("create", create), ("update", update)) if value}
        path = f"/products/{parent}/variations" if parent else "/products"
        context = {"path": path, "order": order, "skipped": skipped, "creates": creates}
        return Request(items, body, context=context)

    def send(self, request: Request) -> dict[str, Any]:
        if not request.body:  # every SKU of it was refused before sending
            return {}
        answer = self.client.batch(request.context["path"], request.body)
        return self._settle_duplicate_creates(request, answer)

    def _settle_duplicate_creates(self, request: Request, answer: dict[str, Any]) -> dict[str, Any]:
        """Update instead the creates refused as duplicate SKUs: an earlier attempt created them (its answer
        was lost and the request retried), so the product exists and gets this batch's values."""
        creates: dict[str, dict[str, Any]] = request.context["creates"]
        answered = answer.get("create") or []
        duplicates = [
            (sku, index)
            for sku, op, index in request.context["order"]
            if op == "create"
            and index < len(answered)
            and ((answered[index] or {}).get("error") or {}).get("code") == "product_invalid_sku"
        ]
        found = self.client.products_by_sku([sku for sku, _ in duplicates]) if duplicates else {}
        retry = [(sku, index) for sku, index in duplicates if sku in found]
        if not retry:
            return answer
        log.info("woocommerce: %d SKUs already exist (a create answered late); updating them", len(retry))
        body = {"update": [{"id": int(found[sku]["id"]), **creates[sku]} for sku, _ in retry]}
        updated = self.client.batch(request.context["path"], body).get("update") or []
        patched = list(answered)
        for (_, index), result in zip(retry, updated, strict=False):
            patched[index] = result
        return {**answer, "create": patched}

    def _fields(self, sku: str, rows: list[Item], *, variation: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for row in rows:
            if row.field == "price":
                fields["regular_price"] = str(row.amount)
                sale = _money(row.payload.get("sale_amount"))
                if sale is not None:
                    fields["sale_price"] = str(sale.quantize(Decimal("0.01")))
            elif row.field == "quantity":
                fields.update(
                    manage_stock=True,
                    stock_quantity=row.quantity,
                    stock_status="instock" if row.quantity > 0 else "outofstock",
                )
            elif row.field == "content":
                content = self._content(sku, row.payload)
                if variation:  # a variation has no name, attributes of its own or categories; one image
                    images = content.pop("images", None)
                    content = {k: v for k, v in content.items() if k in ("description", "global_unique_id")}
                    if images:
                        content["image"] = images[0]
                fields.update(content)
        return fields

    def _content(self, sku: str, payload: dict[str, Any]) -> dict[str, Any]:
        content: dict[str, Any] = {"name": payload["name"], "description": payload.get("description") or ""}
        gtin = str(payload.get("gtin") or "")
        if gtin:  # the hub keeps GTINs left-padded to 14 digits; shops show the 13-digit EAN
            content["global_unique_id"] = gtin[1:] if len(gtin) == 14 and gtin.startswith("0") else gtin
        if payload.get("brand"):
            content["attributes"] = [
                {"name": self.settings.brand_attribute, "options": [payload["brand"]], "visible": True}
            ]
        category = self.settings.categories.get(str(payload.get("category") or ""))
        if category is not None:
            content["categories"] = [{"id": category}]
        if self.settings.image_url:
            content["images"] = [{"src": self.settings.image_url.replace("{sku}", sku)}]
        return content

    def collect(self, request: Request, sent: dict[str, Any]) -> list[Outcome]:
        answers: dict[str, dict[str, Any] | None] = {}
        for sku, op, index in request.context["order"]:
            listed = sent.get(op) or []
            answers[sku] = listed[index] if index < len(listed) and isinstance(listed[index], dict) else None
        skipped: dict[str, str] = request.context["skipped"]
        outcomes: list[Outcome] = []
        for item in request.items:
            if item.sku in skipped:
                outcomes.append(Outcome(item.id, "failed", None, skipped[item.sku]))
                continue
            answer = answers.get(item.sku)
            error = (answer or {}).get("error") if answer is not None else {"message": "no answer for this item"}
            if error:
                text = f"{error.get('code', '')} {error.get('message', '')}".strip()
                outcomes.append(
                    Outcome(item.id, "failed", answer, f"SKU {item.sku} ({item.offer_id or 'new'}): {text}")
                )
                continue
            assert answer is not None
            outcomes.append(Outcome(item.id, "sent", {"id": answer.get("id"), "sku": answer.get("sku")}))
        return outcomes

    # ------------------------------------------------------------------ reading back
    def _all(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """Every product and variation, each with its parent id (None for a product)."""
        for product in self.client.products():
            if product.get("type") == "variable":
                for variation in self.client.variations(product["id"]):
                    yield variation, product["id"]
            yield product, None

    def listings(self) -> Iterator[tuple[str | None, str | None]]:
        for product, parent in self._all():
            if product.get("type") == "variable":
                continue  # its variations carry the SKUs that sell
            sku = product.get("sku")
            yield (str(sku) if sku else None), _offer_id(product, parent)

    def read_offers(self, skus: list[str] | None) -> Iterator[ChannelOffer]:
        for product, _ in self._all():
            if product.get("type") == "variable" or not product.get("sku"):
                continue
            quantity = product.get("stock_quantity") if product.get("manage_stock") else None
            yield ChannelOffer(
                str(product["sku"]),
                _money(product.get("regular_price")),
                self.currency,
                int(quantity) if quantity is not None else None,
            )

    # ------------------------------------------------------------------ orders
    def read_orders(self, cursor: str | None, *, limit: int = 100) -> OrderBatch:
        """Orders modified since ``cursor`` (an ISO time, UTC), oldest first, from ``cursor`` minus the overlap.

        Also reads the ``pending`` orders whose hold ran out since the read's start (created more than
        ``hold_minutes`` ago) and reports them cancelled, even if the shop's cron has not cancelled them yet.
        """
        now = self.clock()
        if cursor is None:
            return OrderBatch((), _iso(now), details={"started": _iso(now)})
        start = _gmt(cursor)
        if start is None:
            raise ChannelError(f"woocommerce order cursor {cursor!r} is not an ISO time")
        since = start - timedelta(minutes=self.settings.order_overlap_minutes)
        params = {"modified_after": _iso(since), "orderby": "modified", "order": "asc", "dates_are_gmt": "true"}
        seen: dict[str, MarketplaceOrder] = {}
        newest = start
        page, pages, more = 1, 1, False
        per_page = max(1, min(limit, PAGE_SIZE))
        while page <= pages:
            raw, pages = self.client.orders_page(params, page, per_page)
            for order in raw:
                parsed = self._order(order, now)
                seen[parsed.order_id] = parsed
                if parsed.updated_at is not None and parsed.updated_at > newest:
                    newest = parsed.updated_at
            if len(seen) >= limit and page < pages and newest > start:
                more = True
                break
            page += 1
        expired = self._expired_holds(since, now)
        for held in expired:
            seen.setdefault(held.order_id, held)
        return OrderBatch(
            tuple(seen.values()),
            _iso(newest),
            more=more,
            details={"pages": page if more else pages, "orders": len(seen), "expired_holds": len(expired)},
        )

    def _expired_holds(self, since: datetime, now: datetime) -> list[MarketplaceOrder]:
        """Pending orders whose hold ran out after ``since`` (the read's start): created in
        (``since`` − hold, ``now`` − hold]. Each is reported while its expiry is in the read window."""
        if self.settings.hold_minutes <= 0:
            return []
        hold = timedelta(minutes=self.settings.hold_minutes)
        params = {"status": "pending", "before": _iso(now - hold), "after": _iso(since - hold)}
        params["dates_are_gmt"] = "true"
        found: list[MarketplaceOrder] = []
        page, pages = 1, 1
        while page <= pages:
            raw, pages = self.client.orders_page(params, page, PAGE_SIZE)
            found.extend(self._order(order, now) for order in raw)
            page += 1
        return [order for order in found if order.status == "cancelled"]

    def _order(self, order: dict[str, Any], now: datetime) -> MarketplaceOrder:
        order_id = str(order.get("id"))
        status = str(order.get("status"))
        mapped = STATUS_MAP.get(status) or self.settings.order_statuses.get(status)
        if mapped is None:
            raise ChannelError(
                f"woocommerce order {order_id}: status {status!r} is not mapped; add it to the channel's "
                f"settings.order_statuses as unpaid, ready or cancelled (core statuses: {sorted(STATUS_MAP)})"
            )
        created = _gmt(order.get("date_created_gmt"))
        updated = _gmt(order.get("date_modified_gmt")) or created
        shown = status
        revision = str(order.get("date_modified_gmt") or "")
        hold = timedelta(minutes=self.settings.hold_minutes)
        if status == "pending" and created is not None and hold and now - created >= hold:
            mapped, shown = "cancelled", f"pending (hold expired after {self.settings.hold_minutes} min)"
            revision += "+hold-expired"
        lines = tuple(
            OrderLine(
                line_id=str(line.get("id")),
                sku=str(line["sku"]) if line.get("sku") else None,
                offer_id=_offer_id({"id": line.get("variation_id")}, line.get("product_id"))
                if line.get("variation_id")
                else (str(line.get("product_id")) if line.get("product_id") else None),
                quantity=int(line.get("quantity") or 0),
                unit_price=_money(line.get("price")),
                currency=order.get("currency"),
            )
            for line in order.get("line_items") or []
        )
        return MarketplaceOrder(order_id, mapped, shown, revision, updated, lines, created_at=created)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _gmt(value: Any) -> datetime | None:
    """A WooCommerce ``*_gmt`` time (ISO, no offset) as an aware UTC datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def webhook_signature(secret: str, body: bytes) -> str:
    """``X-WC-Webhook-Signature``: base64 of the HMAC-SHA256 of the raw body with the webhook's secret."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


def verify_webhook(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is the one WooCommerce computes for ``body`` (constant-time comparison)."""
    if not secret or not signature:
        return False
    return hmac.compare_digest(webhook_signature(secret, body), signature.strip())


Doorbell = Callable[[Channel, dict[str, Any]], None]
"""Rings the order import of a channel (given what the delivery said): an Airflow asset event in production."""
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024
"""Largest delivery read (an order's JSON is a few kB; anything far larger is refused before reading)."""
_PING = re.compile(rb"^webhook_id=\d+$")


def webhook_app(
    dsn: Callable[[], str],
    channels: Callable[[], list[Channel]] | None = None,
    doorbell: Doorbell | None = None,
) -> Any:
    """The webhook endpoint: ``POST /{channel_id}`` for ``order.created`` / ``order.updated`` deliveries.

    Per delivery: the channel must be an enabled ``woocommerce`` channel with ``webhook_conn_id`` (its
    connection's password is the webhook secret); ``X-WC-Webhook-Signature`` must be the base64
    HMAC-SHA256 of the raw body with that secret (else 401, logged with the delivery id and topic, never
    the body or the secret); the ``X-WC-Webhook-Delivery-ID`` is recorded in ``hub.webhook_delivery``, and
    only a delivery not seen before rings the doorbell (the order import, :func:`asset_doorbell`); a repeat
    answers 200 and does
    nothing. The body is not imported: the import reads the orders through the polled cursor, so a lost
    webhook only delays an order until the next scheduled import. WooCommerce's unsigned ping sent when a
    webhook is saved (``webhook_id=N``) is answered 200 and does nothing.

    Args:
        dsn: returns the hub DSN (looked up per request).
        channels: returns the configured channels (default: channels.yaml).
        doorbell: rings a channel's order import (default: :func:`asset_doorbell`).
    """
    from fastapi import FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.responses import JSONResponse

    from commerce_sync.config import load_config
    from commerce_sync.connections import get_connection
    from commerce_sync.db import connect

    ring = doorbell or asset_doorbell
    configured = channels or (lambda: load_config().channels)
    app = FastAPI(title="WooCommerce webhooks", docs_url=None, redoc_url=None, openapi_url=None)

    async def receive(request: HttpRequest) -> JSONResponse:
        channel_id = str(request.path_params["channel_id"])
        if int(request.headers.get("content-length") or 0) > MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": f"body larger than {MAX_WEBHOOK_BYTES} bytes"}, status_code=413)
        body = await request.body()
        headers = request.headers
        delivery = headers.get("x-wc-webhook-delivery-id") or ""
        topic = headers.get("x-wc-webhook-topic") or ""
        channel = next((c for c in configured() if c.id == channel_id and c.kind == KIND and c.enabled), None)
        if channel is None:
            return JSONResponse({"error": f"no enabled woocommerce channel {channel_id!r}"}, status_code=404)
        conn_id = settings_of(channel).webhook_conn_id
        if not conn_id:
            log.error("woocommerce webhook for channel %s refused: settings.webhook_conn_id is not set", channel_id)
            return JSONResponse({"error": "webhooks are not configured for this channel"}, status_code=503)
        if "x-wc-webhook-signature" not in headers and _PING.match(body.strip()):
            return JSONResponse({"ping": True})
        secret = get_connection(conn_id).password or ""
        if not verify_webhook(secret, body, headers.get("x-wc-webhook-signature")):
            log.warning(
                "woocommerce webhook for channel %s refused: wrong or missing X-WC-Webhook-Signature "
                "(delivery %r, topic %r, %d bytes, from %s)",
                channel_id,
                delivery[:64],
                topic[:64],
                len(body),
                request.client.host if request.client else "?",
            )
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        if not delivery or topic not in ("order.created", "order.updated"):
            return JSONResponse({"error": "expected an order.created or order.updated delivery"}, status_code=400)
        resource = headers.get("x-wc-webhook-resource-id") or _order_id(body)
        with connect(dsn()) as conn:
            new = conn.execute(
                "INSERT INTO hub.webhook_delivery (channel, delivery_id, topic, resource_id) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (channel.id, delivery[:200], topic, resource),
            ).rowcount
        if not new:
            log.info("woocommerce webhook for channel %s: delivery %s seen before; ignored", channel_id, delivery)
            return JSONResponse({"duplicate": True})
        ring(channel, {"topic": topic, "delivery_id": delivery, "order_id": resource})
        log.info("woocommerce webhook for channel %s: %s (order %s): order import rung", channel_id, topic, resource)
        return JSONResponse({"accepted": True}, status_code=202)

    # A plain Starlette route: the endpoint reads the raw body (the signature covers its exact bytes).
    app.router.add_route("/{channel_id}", receive, methods=["POST"])
    return app


def _order_id(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return str(document.get("id")) if isinstance(document, dict) and document.get("id") is not None else None


def asset_doorbell(channel: Channel, extra: dict[str, Any]) -> None:
    """Record an event on ``hub.webhook_delivery``'s asset, inside the Airflow api-server: the order import
    (``marketplaces_to_hub_orders``) is scheduled on it as well as on its cron.

    The same call Airflow's ``POST /api/v2/assets/events`` makes. If no DAG declares the asset (the order
    import is not deployed), that is logged and the delivery stays recorded.
    """
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from commerce_sync.assets import HUB_WEBHOOK_DELIVERY as asset

    with create_session() as session:
        model = session.scalar(select(AssetModel).where(AssetModel.uri == asset.uri, AssetModel.name == asset.name))
        if model is None:
            log.warning("woocommerce webhook: no DAG declares asset %s; the order import's cron will read it", asset)
            return
        asset_manager.register_asset_change(
            asset=model,
            timestamp=datetime.now(UTC),
            extra={"channel": channel.id, **extra},
            source_is_api=True,
            session=session,
        )


def _asset(channel: Channel) -> Asset:
    """The shop's products, named after the channel; the host is the connection id (stable across environments)."""
    from airflow.sdk import Asset

    host = (channel.conn_id or channel.id).replace("_", "-")
    return Asset(name=f"woocommerce.{channel.id}.products", uri=f"https://{host}{API}/products")


registry.register(
    registry.ChannelKind(
        name=KIND,
        family="marketplace",
        title="WooCommerce",
        capabilities=frozenset({"publish", "read_back", "import_orders"}),
        outbox_fields=("price", "quantity", "content"),
        marketplace=WooCommerceMarketplace.from_connection,
        settings=WooCommerceSettings,
        needs_connection=True,
        asset=_asset,
        pool="woocommerce_api",
        pool_slots=1,
        rate_limit="one WordPress server: one task at a time, each task's bucket allows 10 requests/s",
    )
)
