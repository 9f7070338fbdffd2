"""Typed, validated business configuration: suppliers, channels and pricing rules.

Each file under the config directory (``include/config`` by default) is YAML validated by a
pydantic model with ``extra="forbid"``; an error names the file, the key path and the problem.
Credentials never live here: transports and channels name an Airflow connection instead.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from commerce_sync.errors import ConfigError
from commerce_sync.settings import config_dir, data_dir, published_file_mode

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,39}$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Percent = Annotated[Decimal, Field(ge=0, lt=1000)]

# Fields a supplier feed can deliver, in staging order; pack_size only converts price and quantity.
SUPPLIER_FIELDS = ("supplier_sku", "gtin", "name", "purchase_price", "currency", "quantity")
MAPPABLE_SUPPLIER_FIELDS = (*SUPPLIER_FIELDS, "pack_size")


class Model(BaseModel):
    """Base: unknown keys are errors, values are frozen after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- suppliers
class HttpTransport(Model):
    """Download over HTTP(S); the base URL and credentials come from an Airflow connection."""

    type: Literal["http"]
    conn_id: str
    path: str = Field(pattern=r"^/")
    timeout_seconds: float = Field(default=60, gt=0, le=3600)
    retries: int = Field(default=3, ge=0, le=10)


class FileTransport(Model):
    """Read a local or mounted file; relative paths are relative to the data directory."""

    type: Literal["file"]
    path: str
    settle_seconds: float = Field(
        default=1.0, ge=0, le=600, description="size and mtime must hold still this long (file still growing)"
    )


class SftpTransport(Model):
    """Download over SFTP; host, port, user and password or key come from an Airflow connection.

    The connection extra may hold ``private_key`` (PEM text), ``host_key`` (``<type> <base64>``, as in
    ``known_hosts``) and ``no_host_key_check`` (true only for throwaway test servers).
    """

    type: Literal["sftp"]
    conn_id: str
    path: str = Field(pattern=r"^/")
    timeout_seconds: float = Field(default=60, gt=0, le=3600)
    retries: int = Field(default=3, ge=0, le=10)
    settle_seconds: float = Field(default=1.0, ge=0, le=600)
    strict_host_key_checking: bool = True


Transport = Annotated[HttpTransport | FileTransport | SftpTransport, Field(discriminator="type")]


PackBasis = Literal["unit", "pack"]


class XmlMapping(Model):
    """Generic XML: one element per record, fields as paths relative to the record."""

    record_tag: str = Field(description="local name of the element that holds one record")
    stock_only: bool = Field(default=False, description="true: a stock feed without prices (fields has no price)")
    fields: dict[str, str]
    decimal_separator: Literal[".", ","] = "."
    price_unit: Literal["unit", "cent"] = Field(
        default="unit", description="cent: prices are integers in 1/100 of the currency (grosze, cents)"
    )
    price_per: PackBasis = Field(default="unit", description="pack: the price is for one pack of pack_size units")
    quantity_per: PackBasis = Field(default="unit", description="pack: the stock counts packs of pack_size units")
    pack_size: int | None = Field(default=None, ge=1, description="units per pack when no pack_size field is mapped")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return _check_field_mapping(value, stock_only=bool(info.data.get("stock_only")))

    @model_validator(mode="after")
    def _pack_size_known(self) -> XmlMapping:
        _check_pack_size(self.price_per, self.quantity_per, self.pack_size, "pack_size" in self.fields)
        return self


class CsvMapping(Model):
    """CSV with a header row; ``columns`` maps our field names to the supplier's headers."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    quoting: Literal["standard", "none"] = Field(
        default="standard", description="none: the quote character is ordinary text (feeds that never quote)"
    )
    encoding: Literal["utf-8", "utf-8-sig", "cp1250", "iso-8859-2"] = "utf-8"
    decimal_separator: Literal[".", ","] = "."
    stock_only: bool = Field(default=False, description="true: a stock feed without prices (columns has no price)")
    columns: dict[str, str]
    price_per: PackBasis = Field(default="unit", description="pack: the price is for one pack of pack_size units")
    quantity_per: PackBasis = Field(default="unit", description="pack: the stock counts packs of pack_size units")
    pack_size: int | None = Field(default=None, ge=1, description="units per pack when no pack_size column is mapped")

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return _check_field_mapping(value, stock_only=bool(info.data.get("stock_only")))

    @model_validator(mode="after")
    def _pack_size_known(self) -> CsvMapping:
        _check_pack_size(self.price_per, self.quantity_per, self.pack_size, "pack_size" in self.columns)
        return self


class BmecatMapping(Model):
    """BMEcat 1.2 (``ARTICLE``) and 2005 (``PRODUCT``) catalogs: which price is the cost, where stock is.

    The cost per sellable unit is ``PRICE_AMOUNT`` x ``PRICE_FACTOR`` / ``PRICE_QUANTITY`` of the chosen
    price type and tier, divided by ``NO_CU_PER_OU`` when we sell content units (a bottle out of a carton
    of 12), and net of ``TAX`` for gross price types. BMEcat has no standard stock element: suppliers
    put it in a user-defined extension (its path, relative to the article, is configuration) or send it
    in a separate feed; a catalogue without it leaves the quantity to ``missing_quantity``.
    """

    price_types: list[str] = Field(
        default=["net_customer", "net_list"], min_length=1, description="first price type found wins"
    )
    gross_price_types: list[str] = Field(
        default=["gros_list", "nrp"],
        description="price types that include tax: the cost is amount / (1 + TAX); a gross price without TAX "
        "is quarantined",
    )
    tier_quantity: int | None = Field(
        default=None,
        ge=1,
        description="which quantity tier (LOWER_BOUND) is the cost: the tier that applies when ordering this "
        "many order units; default (unset): the tier with the lowest LOWER_BOUND",
    )
    sell_unit: Literal["content_unit", "order_unit"] = Field(
        default="content_unit",
        description="content_unit: cost and stock per content unit (order-unit price / NO_CU_PER_OU); "
        "order_unit: per order unit as ordered",
    )
    stock_unit: Literal["content_unit", "order_unit"] = Field(
        default="order_unit", description="what the stock extension counts; converted to sell_unit"
    )
    gtin_types: list[str] = Field(default=["gtin", "ean"], min_length=1)
    stock_path: str | None = "USER_DEFINED_EXTENSIONS/UDX.STOCK"


def _check_pack_size(price_per: str, quantity_per: str, size: int | None, mapped: bool) -> None:
    if "pack" in (price_per, quantity_per) and size is None and not mapped:
        raise ValueError("price_per or quantity_per is 'pack': map a pack_size field or set pack_size")


def _check_field_mapping(value: dict[str, str], *, stock_only: bool) -> dict[str, str]:
    """Known fields; a price unless the feed says ``stock_only`` (then a quantity and no price).

    A feed without a quantity is allowed: its ``missing_quantity`` policy (or another feed) supplies stock.
    """
    unknown = sorted(set(value) - set(MAPPABLE_SUPPLIER_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {list(MAPPABLE_SUPPLIER_FIELDS)}")
    required = ["supplier_sku", "quantity"] if stock_only else ["supplier_sku", "purchase_price"]
    missing = [name for name in required if name not in value]
    if missing:
        hint = "" if stock_only else " (a stock feed without prices says stock_only: true)"
        raise ValueError(f"missing required field(s) {missing}{hint}")
    if stock_only and "purchase_price" in value:
        raise ValueError("stock_only: true but purchase_price is mapped; remove one of them")
    return value


MissingQuantity = Literal["keep", "zero", "default"]


class FeedSpec(Model):
    """How one delivery is read: format, transport, mapping, full or delta, and the quantity policy."""

    format: Literal["xml", "csv", "bmecat"]
    transport: Transport
    mode: Literal["full", "delta"] = Field(
        default="full", description="full: offers absent from the feed are deactivated (stock feed: stock 0)"
    )
    xml: XmlMapping | None = None
    csv: CsvMapping | None = None
    bmecat: BmecatMapping | None = None
    missing_quantity: MissingQuantity = Field(
        default="keep",
        description="when a record carries no stock (a catalogue without stock, a price-only feed): keep: the "
        "quantity another feed delivered (unknown until one does, and unknown is not sellable); zero: 0 "
        "(not sellable from this supplier); default: default_quantity",
    )
    default_quantity: int | None = Field(default=None, ge=0, le=1_000_000)
    every_minutes: int = Field(
        default=60,
        ge=15,
        le=10_080,
        description="scheduled runs (every 15 minutes) load this feed when its last successful load is this old "
        "(within half a run); manual runs load every feed",
    )

    @model_validator(mode="after")
    def _mapping_matches_format(self) -> FeedSpec:
        mapping = {"xml": self.xml, "csv": self.csv, "bmecat": self.bmecat}
        if mapping[self.format] is None:
            if self.format != "bmecat":
                raise ValueError(f"format is {self.format!r} but no {self.format!r} mapping is given")
            object.__setattr__(self, "bmecat", BmecatMapping())  # BMEcat names are standard: defaults work
        others = [name for name, value in mapping.items() if name != self.format and value is not None]
        if others:
            raise ValueError(f"format is {self.format!r} but a {others[0]!r} mapping is given")
        if (self.missing_quantity == "default") != (self.default_quantity is not None):
            raise ValueError("default_quantity is set exactly when missing_quantity is 'default'")
        return self

    @property
    def delivered_fields(self) -> frozenset[str]:
        """The fields this feed is the source of; the others keep what the supplier's other feeds set."""
        if self.format == "bmecat":
            fields = {"supplier_sku", "gtin", "name", "purchase_price", "currency"}
            if self.bmecat is not None and self.bmecat.stock_path:
                fields.add("quantity")
        else:
            mapping = self.xml.fields if self.xml is not None else self.csv.columns if self.csv is not None else {}
            fields = set(mapping) & set(SUPPLIER_FIELDS)
            if "purchase_price" in fields:
                fields.add("currency")  # the supplier's default currency comes with its prices
        if self.missing_quantity != "keep":
            fields.add("quantity")  # a policy value is delivered for every record without stock
        return frozenset(fields)

    @property
    def quantity_required(self) -> bool:
        """A mapped stock column must hold a number (else the row is quarantined); BMEcat stock is optional."""
        return self.format != "bmecat" and "quantity" in (
            self.xml.fields if self.xml else self.csv.columns if self.csv else {}
        )

    @property
    def decimal_separator(self) -> str:
        """The decimal separator of the feed's numbers (BMEcat prescribes '.')."""
        mapping = self.xml if self.format == "xml" else self.csv if self.format == "csv" else None
        return mapping.decimal_separator if mapping is not None else "."


class SupplierFeed(FeedSpec):
    """One of a supplier's several feeds (e.g. a daily BMEcat catalogue and a 15-minute stock CSV)."""

    id: Identifier


class Supplier(Model):
    """A wholesaler whose feed(s) we read.

    One feed: ``format``, ``transport`` and its mapping directly on the supplier (as always). Several
    feeds: a ``feeds`` list, each with its own id, format, transport, mode and mapping; they are merged
    per supplier SKU, each setting only the fields it delivers (:attr:`FeedSpec.delivered_fields`).
    Code that loads one feed works on :meth:`feed_views`: a Supplier per feed, with that feed's settings.
    """

    id: Identifier
    name: str
    enabled: bool = True
    format: Literal["xml", "csv", "bmecat"] | None = None
    mode: Literal["full", "delta"] = Field(
        default="full", description="full: offers absent from the feed are deactivated"
    )
    currency: Currency = "PLN"
    transport: Transport | None = None
    xml: XmlMapping | None = None
    csv: CsvMapping | None = None
    bmecat: BmecatMapping | None = None
    missing_quantity: MissingQuantity = "keep"
    default_quantity: int | None = Field(default=None, ge=0, le=1_000_000)
    every_minutes: int = Field(default=60, ge=15, le=10_080, description="how often scheduled runs load the feed")
    feeds: list[SupplierFeed] = Field(default=[], description="several feeds instead of format/transport")
    match_by: Literal["gtin", "sku"] = Field(
        default="gtin", description="how offers meet hub products in the merge: GTIN, or supplier_sku = hub SKU"
    )
    priority: int = Field(default=100, ge=0, description="lower wins ties (and everything under policy 'priority')")
    feed_id: Identifier | None = Field(
        default=None, description="set on the per-feed view made by feed_views(); not written in suppliers.yaml"
    )

    @model_validator(mode="after")
    def _one_feed_or_feeds(self) -> Supplier:
        if self.feed_id is not None and self.feeds:
            raise ValueError("feed_id is not configuration: it names the feed of a per-feed view")
        if self.feeds:
            per_feed = ("format", "transport", "xml", "csv", "bmecat", "default_quantity", "missing_quantity")
            single = [k for k in (*per_feed, "mode", "every_minutes") if k in self.model_fields_set]
            if single:
                raise ValueError(f"give either feeds or a single feed's settings, not both (found {single})")
            _require_unique([f.id for f in self.feeds], f"feed id of supplier {self.id}")
            return self
        if self.format is None or self.transport is None:
            raise ValueError("a supplier needs format and transport (one feed) or a feeds list")
        spec = self.spec  # validates the single feed as a FeedSpec (mapping matches format, policy)
        if self.bmecat is None and spec.bmecat is not None:
            object.__setattr__(self, "bmecat", spec.bmecat)
        return self

    @property
    def spec(self) -> FeedSpec:
        """This (single-feed or per-feed view) supplier's feed settings."""
        if self.feeds or self.format is None or self.transport is None:
            raise ValueError(f"supplier {self.id!r} has several feeds: use feed_views()")
        return FeedSpec(
            format=self.format,
            transport=self.transport,
            mode=self.mode,
            xml=self.xml,
            csv=self.csv,
            bmecat=self.bmecat,
            missing_quantity=self.missing_quantity,
            default_quantity=self.default_quantity,
            every_minutes=self.every_minutes,
        )

    def feed_views(self) -> list[Supplier]:
        """One Supplier per feed, carrying that feed's settings and ``feed_id`` (itself when single-feed)."""
        if not self.feeds:
            return [self]
        base = self.model_dump(exclude={"feeds"})
        return [
            Supplier.model_validate({**base, **feed.model_dump(exclude={"id"}), "feed_id": feed.id})
            for feed in self.feeds
        ]

    def feed_view(self, feed_id: str | None) -> Supplier:
        """The view of one feed (``None``: the single feed)."""
        for view in self.feed_views():
            if view.feed_id == feed_id:
                return view
        raise ConfigError(f"supplier {self.id!r} has no feed {feed_id!r}")

    @property
    def source(self) -> str:
        """The ledger source of this feed: ``supplier:<id>``, or ``supplier:<id>/<feed>`` for one of several."""
        return f"supplier:{self.id}" if self.feed_id is None else f"supplier:{self.id}/{self.feed_id}"

    @property
    def feed_label(self) -> str:
        """The feed's name in provenance columns and the ledger (``main`` for a single-feed supplier)."""
        return self.feed_id or "main"

    @property
    def decimal_separator(self) -> str:
        """The decimal separator of the feed's numbers (BMEcat prescribes '.')."""
        return self.spec.decimal_separator


class SupplyMerge(Model):
    """How the multi-supplier merge picks one offer per hub SKU (``hub.sku_supply``)."""

    policy: Literal["cheapest_in_stock", "priority"] = Field(
        default="cheapest_in_stock",
        description="cheapest_in_stock: lowest price among offers with stock (ties: supplier priority); "
        "priority: the first supplier in priority order that has stock",
    )
    stale_after_hours: float = Field(
        default=26, gt=0, description="a supplier whose last successful load is older is reported stale"
    )
    stale_offers: Literal["keep", "exclude"] = Field(
        default="keep",
        description="keep: a stale supplier's last good offers still count (the ledger says so); "
        "exclude: they leave the merge until the supplier loads again (safer against overselling)",
    )


class PriceChangeReport(Model):
    """Which supplier price moves are reported, and which ones alert."""

    threshold_pct: Percent = Field(default=Decimal(10), description="report moves beyond +/- this percentage")
    alert_pct: Percent = Field(default=Decimal(30), description="alert when a move exceeds +/- this percentage")
    alert_count: int = Field(default=50, ge=1, description="... or when more SKUs than this are reported")
    log_top: int = Field(default=20, ge=0, le=1000, description="lines shown in the task log")
    notifier: Literal["file", "log"] = Field(default="file", description="file: log and append a JSON line")

    @model_validator(mode="after")
    def _alert_above_report(self) -> PriceChangeReport:
        if self.alert_pct < self.threshold_pct:
            raise ValueError(f"alert_pct ({self.alert_pct}) is below threshold_pct ({self.threshold_pct})")
        return self


class SuppliersFile(Model):
    version: int = Field(ge=1)
    suppliers: list[Supplier]
    merge: SupplyMerge = SupplyMerge()
    price_change: PriceChangeReport = PriceChangeReport()

    @field_validator("suppliers")
    @classmethod
    def _unique_ids(cls, value: list[Supplier]) -> list[Supplier]:
        _require_unique([s.id for s in value], "supplier id")
        return value


# ---------------------------------------------------------------- ERP
class ErpSqlOrders(Model):
    """How orders are handed to an ERP reached over SQL (see :mod:`commerce_sync.orders.erp`).

    Both statements take named parameters (``:key`` is ``channel:order_id``, the hand-off's idempotency
    key). ``book`` must book an order once per key and return one row per line, ``(line_id, sku,
    booked_at)``, where ``booked_at`` is the ERP's ``cursor_column`` value of the SKU's product row that
    first includes the line in its stock figures; called again with the same key it books nothing and
    returns the same rows.
    """

    book: str = Field(
        default="SELECT line_id, sku, booked_at FROM erp.book_order(:key, :channel, :order_id, CAST(:lines AS jsonb))",
        description="statement taking :key, :channel, :order_id and :lines (JSON: [{line_id, sku, quantity}])",
    )
    cancel: str = Field(default="SELECT erp.cancel_order(:key)", description="statement taking :key")


class ErpRestOrders(Model):
    """How orders are handed to an ERP reached over REST: ``POST path`` with ``Idempotency-Key: <key>``.

    Body ``{key, channel, order_id, lines: [{line_id, sku, quantity}]}``; the answer carries
    ``lines: [{line_id, sku, booked_at}]`` (see :class:`ErpSqlOrders` for ``booked_at``). Cancelling is
    ``POST cancel_path`` (``{key}`` is replaced by the URL-quoted key).
    """

    path: str = Field(default="/api/orders", pattern=r"^/")
    cancel_path: str = Field(default="/api/orders/{key}/cancel", pattern=r"^/.*\{key\}")


class ErpSource(Model):
    """The ERP read over SQL: an Airflow connection (any SQLAlchemy URL) and a query with a cursor column."""

    type: Literal["sql"] = "sql"
    id: Identifier = "erp"
    conn_id: str
    query: str = Field(description="SELECT returning the staging columns; must not end with ';'")
    cursor_column: str = "updated_at"
    key: str = "sku"
    currency: Currency = "PLN"
    stock_location: str = "main"
    fetch_size: int = Field(default=10_000, ge=100, le=1_000_000)
    orders: ErpSqlOrders | None = Field(default=None, description="hand marketplace orders to the ERP (SQL)")


class ErpRestSource(Model):
    """The ERP read over a paged JSON API; base URL and credentials come from an Airflow connection.

    ``paging: cursor`` follows ``next_cursor_field`` of each page (sent back as ``cursor_param``);
    ``paging: page`` counts ``page_param`` up from 1 until a short page. The watermark is sent as
    ``updated_since_param`` (ISO 8601, UTC). ``fields`` maps staging columns to JSON keys where they differ.
    """

    type: Literal["rest"]
    id: Identifier = "erp"
    conn_id: str
    path: str = Field(pattern=r"^/")
    paging: Literal["cursor", "page"] = "cursor"
    page_size: int = Field(default=1000, ge=1, le=10_000)
    page_size_param: str = "limit"
    items_field: str = "items"
    next_cursor_field: str = "next_cursor"
    cursor_param: str = "cursor"
    page_param: str = "page"
    updated_since_param: str = "updated_since"
    fields: dict[str, str] = Field(default_factory=dict)
    cursor_column: str = "updated_at"
    key: str = "sku"
    currency: Currency = "PLN"
    stock_location: str = "main"
    timeout_seconds: float = Field(default=60, gt=0, le=3600)
    retries: int = Field(default=3, ge=0, le=10)
    orders: ErpRestOrders | None = Field(default=None, description="hand marketplace orders to the ERP (REST)")


def _erp_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "sql"))
    return str(getattr(value, "type", "sql"))


# ``type`` defaults to sql so erp.yaml files written before the REST reader keep working.
ErpConfig = Annotated[
    Annotated[ErpSource, Tag("sql")] | Annotated[ErpRestSource, Tag("rest")], Discriminator(_erp_type)
]


class ErpFile(Model):
    version: int = Field(ge=1)
    erp: ErpConfig


# ---------------------------------------------------------------- pricing
Money = Annotated[Decimal, Field(ge=0, lt=Decimal("1e9"))]
Rounding = Literal["0.99", "0.05", "none"]


class PricingRule(Model):
    """How a channel price is made from the purchase price (see :mod:`commerce_sync.pricing.rules`).

    Amounts (``margin_amount``, ``fixed_fee``, ``min_price``, ``max_price``) are in the channel's
    currency; percentages are of the cost converted to that currency. Bump ``version`` on every change:
    each offer records the rule id and version that produced it.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,59}$")
    version: int = Field(ge=1)
    margin_pct: Percent = Decimal(0)
    margin_amount: Money = Field(default=Decimal(0), description="absolute margin added to the cost")
    commission_pct: Percent = Decimal(0)
    fixed_fee: Money = Field(default=Decimal(0), description="per-item fee of the channel, before commission")
    min_margin_pct: Percent
    rounding: Rounding = "0.99"
    min_price: Money | None = Field(default=None, description="MAP / minimum price: the floor never goes below it")
    max_price: Money | None = Field(default=None, description="price cap; the floor wins over it (offer flagged)")

    @model_validator(mode="after")
    def _consistent(self) -> PricingRule:
        if self.margin_amount == 0 and self.min_margin_pct > self.margin_pct:
            raise ValueError(
                f"min_margin_pct ({self.min_margin_pct}) is above margin_pct ({self.margin_pct}): "
                "every price would be floored"
            )
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price ({self.min_price}) is above max_price ({self.max_price})")
        if self.max_price is not None and self.max_price <= 0:
            raise ValueError("max_price must be > 0")
        return self


class RuleOverride(Model):
    """Use ``rule`` instead of the channel's default rule for one category, brand or SKU.

    Precedence when several match a product: sku > brand > category > the channel's default.
    """

    channel: Identifier
    level: Literal["sku", "brand", "category"]
    match: str = Field(min_length=1, description="the SKU, brand or category exactly as in hub.product")
    rule: str


class ExchangeRate(Model):
    """1 ``currency`` = ``rate`` ``quote``, valid from ``valid_on``."""

    currency: Currency
    quote: Currency
    rate: Decimal = Field(gt=0)
    valid_on: date


class ExchangeRates(Model):
    """Where exchange rates come from: listed here and/or a CSV file (``currency,quote,rate,valid_on``)."""

    source: str = Field(default="config", min_length=1, description="recorded with each rate, e.g. 'NBP table A'")
    rates: list[ExchangeRate] = []
    csv: str | None = Field(default=None, description="CSV path; relative paths are under the data directory")


class PricingFile(Model):
    version: int = Field(ge=1)
    rules: list[PricingRule]
    overrides: list[RuleOverride] = []
    exchange_rates: ExchangeRates = ExchangeRates()

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, value: list[PricingRule]) -> list[PricingRule]:
        _require_unique([r.id for r in value], "rule id")
        return value

    @model_validator(mode="after")
    def _overrides_name_rules(self) -> PricingFile:
        ids = {r.id for r in self.rules}
        for i, o in enumerate(self.overrides):
            if o.rule not in ids:
                raise ValueError(f"overrides[{i}]: rule {o.rule!r} is not defined (defined: {sorted(ids)})")
        _require_unique([f"{o.channel}/{o.level}/{o.match}" for o in self.overrides], "override")
        return self


# ---------------------------------------------------------------- channels
class FeedSettings(Model):
    """Where and how a catalog feed file (Google Merchant, Meta catalog, Ceneo) is written."""

    path: str = Field(description="output file; relative paths are under the data directory")
    title: str
    shop_url: str = Field(pattern=r"^https?://")
    condition: Literal["new", "refurbished", "used"] = "new"
    target: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9+.-]*://",
        description="also publish the validated file here: sftp://host/dir/name.xml (credentials from "
        "target_conn_id) or any ObjectStoragePath URL (file://, s3://, gs://, ...)",
    )
    target_conn_id: str | None = Field(default=None, description="Airflow connection for the target")
    file_mode: int = Field(
        default_factory=published_file_mode,
        ge=0,
        le=0o777,
        description="permission bits of the written feed file (YAML: 0o644 or '0644'); default "
        "COMMERCE_SYNC_FILE_MODE or 0644, so a web server running as another user can serve it",
    )

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal_mode(cls, value: Any) -> Any:
        if isinstance(value, str):  # '0644' in YAML is a string; a bare 0644 would be read as decimal 644
            try:
                return int(value, 8)
            except ValueError:
                raise ValueError(f"{value!r} is not an octal file mode such as '0644'") from None
        return value


class OfferBreakers(Model):
    """Pricing-side circuit breakers of one channel: the whole computation is refused when tripped."""

    price_move_pct: Percent = Field(default=Decimal(20), description="a price move larger than this counts")
    max_price_moves_pct: Percent = Field(
        default=Decimal(10), description="trip when more than this share of the channel's offers would move"
    )
    min_offers: int = Field(default=100, ge=0, description="the share breaker ignores channels with fewer offers")
    max_stockouts: int = Field(default=500, ge=0, description="trip when more offers than this go to stock 0")


class ChangeCap(Model):
    """Price moves larger than ``move_pct`` are held for approval when there are too many of them."""

    move_pct: Percent = Field(description="a price move larger than this is a large move")
    max_count: int = Field(default=50, ge=0, description="hold when more offers than this would move that much")
    max_share_pct: Percent = Field(default=Decimal(5), description="... or more than this share of the offers")


class Channel(Model):
    """A place we publish offers to."""

    id: Identifier
    kind: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="a registered channel kind: allegro, ebay, amazon, google_merchant_feed, meta_catalog_feed, "
        "ceneo_feed, or one a plugin registers (commerce_sync.registry)",
    )
    enabled: bool = True
    currency: Currency = "PLN"
    accepted_currencies: list[Currency] = Field(
        default_factory=list, description="currencies the channel accepts (default: only currency)"
    )
    reconcile: Literal["hub_wins", "channel_wins", "report_only"] = Field(
        default="hub_wins",
        description="when read-back finds the channel differs: re-send the hub's value, "
        "adopt the channel's, or only report",
    )
    prices_include_vat: bool = True
    pricing_rule: str
    stock_buffer: int = Field(default=0, ge=0, description="units kept back from the sellable stock")
    stock_buffer_pct: Percent = Field(default=Decimal(0), description="... plus this share of it, rounded up")
    max_listed_quantity: int | None = Field(default=None, ge=0, description="never list more than this")
    end_when_at_or_below: int | None = Field(
        default=None,
        ge=0,
        description="list 0 (end the offer) when the sellable quantity after the buffers is at or below this",
    )
    breakers: OfferBreakers | None = None
    change_cap: ChangeCap | None = None
    conn_id: str | None = None
    batch_size: int | None = Field(
        default=None, ge=1, description="items per marketplace request, at most the API's limit (default: the limit)"
    )
    listing_refresh_minutes: int = Field(
        default=60,
        ge=0,
        description="marketplaces with their own offer ids: re-read the SKU -> offer id map before a publish when "
        "the last read is older than this (0: before every publish); a publish with a SKU that has no known offer "
        "id reads it at once",
    )
    feed: FeedSettings | None = None
    settings: dict[str, Any] = Field(
        default_factory=dict, description="options of the channel's kind, validated by the kind's settings model"
    )

    @model_validator(mode="after")
    def _kind_settings(self) -> Channel:
        from commerce_sync import registry

        try:
            spec = registry.get(self.kind)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if spec.needs_connection and not self.conn_id:
            raise ValueError(f"an {self.kind} channel needs conn_id (the Airflow connection with its API)")
        if spec.family == "feed" and self.feed is None:
            raise ValueError(f"a {self.kind} channel needs a 'feed' section")
        if spec.family != "feed" and self.feed is not None:
            raise ValueError(f"a {self.kind} channel is not a feed: remove its 'feed' section")
        if spec.settings is not None:
            spec.settings.model_validate(self.settings)
        elif self.settings:
            raise ValueError(f"kind {self.kind} takes no settings (got {sorted(self.settings)})")
        return self

    @property
    def currencies(self) -> frozenset[str]:
        """Currencies an offer of this channel may carry."""
        return frozenset(self.accepted_currencies or [self.currency])


class ChannelsFile(Model):
    version: int = Field(ge=1)
    channels: list[Channel]

    @field_validator("channels")
    @classmethod
    def _unique_ids(cls, value: list[Channel]) -> list[Channel]:
        _require_unique([c.id for c in value], "channel id")
        return value


def _require_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    dupes = sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dupes:
        raise ValueError(f"duplicate {what}(s): {dupes}")


# ---------------------------------------------------------------- loading
M = TypeVar("M", bound=BaseModel)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_model(path: Path, model: type[M]) -> M:
    """Read ``path`` as YAML and validate it against ``model``; errors name file, key and problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{path}: {_format_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


class Config(Model):
    """The whole business configuration, cross-checked."""

    erp: ErpConfig
    suppliers: list[Supplier]
    channels: list[Channel]
    rules: dict[str, PricingRule]
    rule_overrides: list[RuleOverride] = []
    exchange_rates: ExchangeRates = ExchangeRates()
    supply_merge: SupplyMerge = SupplyMerge()
    price_change: PriceChangeReport = PriceChangeReport()

    def supplier(self, supplier_id: str) -> Supplier:
        for supplier in self.suppliers:
            if supplier.id == supplier_id:
                return supplier
        raise ConfigError(f"no supplier {supplier_id!r} in suppliers.yaml")

    def channel(self, channel_id: str) -> Channel:
        for channel in self.channels:
            if channel.id == channel_id:
                return channel
        raise ConfigError(f"no channel {channel_id!r} in channels.yaml")

    def rule_for(self, channel: Channel) -> PricingRule:
        return self.rules[channel.pricing_rule]


def load_config(directory: Path | None = None) -> Config:
    """Load and cross-check erp.yaml, suppliers.yaml, channels.yaml and pricing.yaml."""
    base = directory or config_dir()
    erp = load_model(base / "erp.yaml", ErpFile)
    suppliers = load_model(base / "suppliers.yaml", SuppliersFile)
    channels = load_model(base / "channels.yaml", ChannelsFile)
    pricing = load_model(base / "pricing.yaml", PricingFile)
    rules = {rule.id: rule for rule in pricing.rules}
    problems = [
        f"{base / 'channels.yaml'}: channels[{i}].pricing_rule: rule {c.pricing_rule!r} is not defined "
        f"in pricing.yaml (defined: {sorted(rules)})"
        for i, c in enumerate(channels.channels)
        if c.pricing_rule not in rules
    ]
    channel_ids = {c.id for c in channels.channels}
    problems += [
        f"{base / 'pricing.yaml'}: overrides[{i}].channel: channel {o.channel!r} is not defined in channels.yaml "
        f"(defined: {sorted(channel_ids)})"
        for i, o in enumerate(pricing.overrides)
        if o.channel not in channel_ids
    ]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return Config(
        erp=erp.erp,
        suppliers=suppliers.suppliers,
        channels=channels.channels,
        rules=rules,
        rule_overrides=pricing.overrides,
        exchange_rates=pricing.exchange_rates,
        supply_merge=suppliers.merge,
        price_change=suppliers.price_change,
    )


# ---------------------------------------------------------------- quality (quality.yaml, optional)
OptionalPercent = Annotated[float | None, Field(ge=0, le=100)]


class BatchBreakers(Model):
    """Source-side batch circuit breakers of one dataset (``null`` switches a breaker off)."""

    max_row_drop_percent: OptionalPercent = Field(
        default=50, description="trip when a whole-dataset batch has this % fewer rows than the last good one"
    )
    max_rejected_percent: OptionalPercent = Field(
        default=20, description="trip when more than this % of the batch's rows failed validation"
    )
    rejected_min_rows: int = Field(
        default=20, ge=0, description="the rejected share is judged only for batches of at least this many rows"
    )


class DatasetQuality(BatchBreakers):
    """Breakers of a dataset, with optional per-source overrides (e.g. a supplier whose feed varies)."""

    sources: dict[str, BatchBreakers] = {}

    def for_source(self, source: str) -> BatchBreakers:
        """The breakers for ``source`` (``supplier:acme``, ``erp``): its override or the dataset's."""
        return self.sources.get(source) or BatchBreakers(
            max_row_drop_percent=self.max_row_drop_percent,
            max_rejected_percent=self.max_rejected_percent,
            rejected_min_rows=self.rejected_min_rows,
        )


class HubCatalogQuality(Model):
    """The merged hub catalog suite run before pricing (``quality.catalog``)."""

    max_failing_skus: int | None = Field(
        default=None, ge=0, description="refuse pricing when more SKUs than this are inconsistent; null: report only"
    )


class QualityFile(Model):
    """``quality.yaml``: breakers per dataset and where Data Docs are written."""

    version: int = Field(default=1, ge=1)
    data_docs_dir: str | None = Field(
        default=None, description="where GX Data Docs are rendered; relative to the data dir; default data_docs"
    )
    datasets: dict[Literal["supplier_offer", "erp_product"], DatasetQuality] = {}
    hub_catalog: HubCatalogQuality = HubCatalogQuality()

    def breakers(self, dataset: str, source: str) -> BatchBreakers:
        """The breakers of ``dataset`` (``supplier_offer``, ``erp_product``) for ``source``; defaults if unset."""
        return self.datasets.get(dataset, DatasetQuality()).for_source(source)  # type: ignore[call-overload]


def data_docs_root(quality: QualityFile) -> Path:
    """Where Data Docs are rendered: ``quality.yaml`` ``data_docs_dir`` (relative to the data dir)."""
    configured = Path(quality.data_docs_dir or "data_docs")
    return configured if configured.is_absolute() else data_dir() / configured


def load_quality(directory: Path | None = None) -> QualityFile:
    """Load ``quality.yaml``; the file is optional (defaults apply when it is absent)."""
    path = (directory or config_dir()) / "quality.yaml"
    if not path.exists():
        return QualityFile()
    return load_model(path, QualityFile)
