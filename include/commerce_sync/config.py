"""Typed, validated business configuration: suppliers, channels and pricing rules.

Each file under the config directory (``include/config`` by default) is YAML validated by a
pydantic model with ``extra="forbid"``; an error names the file, the key path and the problem.
Credentials never live here: transports and channels name an Airflow connection instead.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from commerce_sync.errors import ConfigError
from commerce_sync.settings import config_dir

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,39}$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Percent = Annotated[Decimal, Field(ge=0, lt=1000)]

# Fields every supplier format must deliver, in staging order.
SUPPLIER_FIELDS = ("supplier_sku", "gtin", "name", "purchase_price", "currency", "quantity")
REQUIRED_SUPPLIER_FIELDS = ("supplier_sku", "purchase_price", "quantity")


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


Transport = Annotated[HttpTransport | FileTransport, Field(discriminator="type")]


class XmlMapping(Model):
    """Generic XML: one element per record, fields as paths relative to the record."""

    record_tag: str = Field(description="local name of the element that holds one record")
    fields: dict[str, str]
    decimal_separator: Literal[".", ","] = "."

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_field_mapping(value)


class CsvMapping(Model):
    """CSV with a header row; ``columns`` maps our field names to the supplier's headers."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    encoding: Literal["utf-8", "utf-8-sig", "cp1250", "iso-8859-2"] = "utf-8"
    decimal_separator: Literal[".", ","] = "."
    columns: dict[str, str]

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_field_mapping(value)


def _check_field_mapping(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(SUPPLIER_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {list(SUPPLIER_FIELDS)}")
    missing = [name for name in REQUIRED_SUPPLIER_FIELDS if name not in value]
    if missing:
        raise ValueError(f"missing required field(s) {missing}")
    return value


class Supplier(Model):
    """A wholesaler whose feed we read."""

    id: Identifier
    name: str
    enabled: bool = True
    format: Literal["xml", "csv"]
    mode: Literal["full", "delta"] = Field(
        default="full", description="full: offers absent from the feed are deactivated"
    )
    currency: Currency = "PLN"
    transport: Transport
    xml: XmlMapping | None = None
    csv: CsvMapping | None = None

    @model_validator(mode="after")
    def _mapping_matches_format(self) -> Supplier:
        mapping = {"xml": self.xml, "csv": self.csv}
        if mapping[self.format] is None:
            raise ValueError(f"format is {self.format!r} but no {self.format!r} mapping is given")
        other = "csv" if self.format == "xml" else "xml"
        if mapping[other] is not None:
            raise ValueError(f"format is {self.format!r} but a {other!r} mapping is given")
        return self


class SuppliersFile(Model):
    version: int = Field(ge=1)
    suppliers: list[Supplier]

    @field_validator("suppliers")
    @classmethod
    def _unique_ids(cls, value: list[Supplier]) -> list[Supplier]:
        _require_unique([s.id for s in value], "supplier id")
        return value


# ---------------------------------------------------------------- ERP
class ErpSource(Model):
    """The ERP read over SQL: an Airflow connection and a query with a cursor column."""

    id: Identifier = "erp"
    conn_id: str
    query: str = Field(description="SELECT returning the staging columns; must not end with ';'")
    cursor_column: str = "updated_at"
    key: str = "sku"
    currency: Currency = "PLN"
    stock_location: str = "main"
    fetch_size: int = Field(default=10_000, ge=100, le=1_000_000)


class ErpFile(Model):
    version: int = Field(ge=1)
    erp: ErpSource


# ---------------------------------------------------------------- pricing
class PricingRule(Model):
    """How a channel price is made from the purchase price."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,59}$")
    version: int = Field(ge=1)
    margin_pct: Percent
    commission_pct: Percent = Decimal(0)
    min_margin_pct: Percent
    rounding: Literal["0.99", "none"] = "0.99"

    @model_validator(mode="after")
    def _floor_below_margin(self) -> PricingRule:
        if self.min_margin_pct > self.margin_pct:
            raise ValueError(
                f"min_margin_pct ({self.min_margin_pct}) is above margin_pct ({self.margin_pct}): "
                "every price would be floored"
            )
        return self


class PricingFile(Model):
    version: int = Field(ge=1)
    rules: list[PricingRule]

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, value: list[PricingRule]) -> list[PricingRule]:
        _require_unique([r.id for r in value], "rule id")
        return value


# ---------------------------------------------------------------- channels
class GoogleFeedSettings(Model):
    """Where and how the Google Merchant Center feed is written."""

    path: str = Field(description="output file; relative paths are under the data directory")
    title: str
    shop_url: str = Field(pattern=r"^https?://")
    condition: Literal["new", "refurbished", "used"] = "new"


class Channel(Model):
    """A place we publish offers to."""

    id: Identifier
    kind: Literal["allegro", "google_merchant_feed"]
    enabled: bool = True
    currency: Currency = "PLN"
    prices_include_vat: bool = True
    pricing_rule: str
    stock_buffer: int = Field(default=0, ge=0)
    conn_id: str | None = None
    batch_size: int = Field(default=1000, ge=1, le=1000)
    feed: GoogleFeedSettings | None = None

    @model_validator(mode="after")
    def _kind_settings(self) -> Channel:
        if self.kind == "allegro" and not self.conn_id:
            raise ValueError("an allegro channel needs conn_id (the Airflow connection with its API)")
        if self.kind == "google_merchant_feed" and self.feed is None:
            raise ValueError("a google_merchant_feed channel needs a 'feed' section")
        return self


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

    erp: ErpSource
    suppliers: list[Supplier]
    channels: list[Channel]
    rules: dict[str, PricingRule]

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
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return Config(erp=erp.erp, suppliers=suppliers.suppliers, channels=channels.channels, rules=rules)
