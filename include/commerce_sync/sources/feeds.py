"""Streaming record readers for supplier feeds: one small subclass per format on a shared base.

A reader turns a feed file into :class:`RawRecord` tuples holding the configured fields as raw,
stripped text (empty becomes None). Nothing is typed or normalised here: decimal separators,
GTIN padding and range checks belong to validation and to the SQL merge, which see the whole
batch. Any parse failure becomes a :class:`~commerce_sync.errors.FeedError` that names the
supplier, the location and, when known, the line.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import ClassVar, NamedTuple

from lxml import etree

from commerce_sync.config import BmecatMapping, CsvMapping, Supplier, XmlMapping
from commerce_sync.errors import FeedError
from commerce_sync.safe_xml import XmlError, any_namespace, iterparse, local_name, plain_name


class RawRecord(NamedTuple):
    """One record as delivered: its 1-based position, the line it starts on and its raw fields."""

    record_no: int
    source_line: int | None
    values: dict[str, str | None]


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text or None


_WHOLE_NUMBER = re.compile(r"^[+-]?[0-9]+$")


def _cents_to_units(raw: str | None, separator: str) -> str | None:
    """``"12345"`` cents as ``"123.45"`` (in the feed's separator); anything else is marked invalid."""
    if raw is None:
        return None
    digits = raw.replace(" ", "").replace("\u00a0", "")
    if not _WHOLE_NUMBER.match(digits):
        return f"{raw} (not a whole number of cents)"  # fails the price check: quarantined with this text
    sign = "-" if digits.startswith("-") else ""
    digits = digits.lstrip("+-").rjust(3, "0")
    return f"{sign}{digits[:-2]}{separator}{digits[-2:]}"


# Costs are stored with 4 decimals (hub numeric(14, 4)); a per-unit cost is rounded half up to that.
COST_STEP = Decimal("0.0001")
_NUMBER_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009")


def _decimal(raw: str | None, separator: str = ".") -> Decimal | None:
    """``raw`` as a Decimal (spaces removed, ``separator`` as the decimal point); None if not a finite number."""
    if raw is None:
        return None
    text = raw.translate(_NUMBER_SPACES)
    if separator != ".":
        if "." in text:
            return None  # "1.234,5": thousands separators are not accepted (as the price check)
        text = text.replace(separator, ".")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _cost_text(value: Decimal, separator: str = ".") -> str:
    """A per-unit cost, rounded half up to 4 decimals, in the feed's decimal separator."""
    return format(value.quantize(COST_STEP, rounding=ROUND_HALF_UP), "f").replace(".", separator)


def _per_unit(values: dict[str, str | None], mapping: XmlMapping | CsvMapping) -> None:
    """Turn a price per pack and/or a stock in packs into per-unit values, in place (``pack_size``).

    A pack size that is missing or not a positive whole number marks the price (or the quantity) so
    that validation quarantines the row with the reason in its text.
    """
    raw_size = values.pop("pack_size", None)
    if mapping.price_per == "unit" and mapping.quantity_per == "unit":
        return
    size = _decimal(raw_size) if raw_size is not None else Decimal(mapping.pack_size or 0)
    valid = size is not None and size > 0 and size == size.to_integral_value()
    problem = f" (pack size {raw_size!r} is not a positive whole number)"
    separator = mapping.decimal_separator
    price = values.get("purchase_price")
    if mapping.price_per == "pack" and price is not None:
        amount = _decimal(price, separator)
        if not valid:
            values["purchase_price"] = price + problem
        elif amount is not None:  # a non-number stays as delivered: the price check names it
            values["purchase_price"] = _cost_text(amount / size, separator)  # type: ignore[operator]
    quantity = values.get("quantity")
    if mapping.quantity_per == "pack" and quantity is not None:
        packs = _decimal(quantity)
        if not valid:
            values["quantity"] = quantity + problem
        elif packs is not None and packs == packs.to_integral_value():
            values["quantity"] = str(int(packs * size))  # type: ignore[operator]


def _path_steps(path: str) -> list[str]:
    return [step for step in path.split("/") if step]


_Field = Callable[[etree._Element], str | None]


def _compile_path(steps: list[str]) -> _Field:
    """A field path, compiled once per reader, as a function of the record giving the field's text.

    Steps are local names (any namespace; the first matching child is followed), ``.`` stays put and
    a last step ``@name`` reads an attribute; an ``@name`` step before the last never matches.
    """
    attribute = steps[-1][1:] if steps and steps[-1].startswith("@") else None
    body = steps[:-1] if attribute is not None else steps
    if any(step.startswith("@") for step in body):
        return _never
    names = [step for step in body if step != "."]
    if not all(plain_name(name) for name in names):
        return functools.partial(_walk_by_local_name, names=names, attribute=attribute)
    tags = any_namespace(*names)
    if attribute is None and len(tags) == 1:
        return functools.partial(_child_text, tag=tags[0])
    return functools.partial(_walk, tags=tags, attribute=attribute)


def _never(record: etree._Element) -> str | None:
    return None


def _child_text(record: etree._Element, tag: str) -> str | None:
    """The most common path: the text of the first child with one local name (inlined for speed)."""
    for node in record.iterchildren(tag):  # only the first match is read
        text = "".join(node.itertext()) if len(node) else node.text
        if text is None:
            return None
        return text.strip() or None
    return None


def _walk(record: etree._Element, tags: list[str], attribute: str | None) -> str | None:
    node: etree._Element | None = record
    for tag in tags:
        assert node is not None
        node = next(node.iterchildren(tag), None)
        if node is None:
            return None
    assert node is not None
    return _text(node) if attribute is None else _attribute(node, attribute)


def _walk_by_local_name(record: etree._Element, names: list[str], attribute: str | None) -> str | None:
    """A path with a step lxml's tag filter would read as a wildcard (``*``, braces): compared literally."""
    node: etree._Element | None = record
    for name in names:
        assert node is not None
        node = next((child for child in node if local_name(child) == name), None)
        if node is None:
            return None
    assert node is not None
    return _text(node) if attribute is None else _attribute(node, attribute)


def _text(node: etree._Element) -> str | None:
    """All text below ``node`` (its descendants' text and tails), stripped; empty becomes None."""
    if len(node):
        return _clean("".join(node.itertext()))
    return _clean(node.text)


_AMOUNT = _compile_path(["PRICE_AMOUNT"])
_CURRENCY = _compile_path(["PRICE_CURRENCY"])
_LOWER_BOUND = _compile_path(["LOWER_BOUND"])
_PRICE_FACTOR = _compile_path(["PRICE_FACTOR"])
_TAX = _compile_path(["TAX"])
_DETAILS_TAX = _compile_path(["TAX_DETAILS", "TAX"])
_PRICE_QUANTITY = _compile_path(["PRICE_QUANTITY"])
_NO_CU_PER_OU = _compile_path(["NO_CU_PER_OU"])
_HEADER_CURRENCY = _compile_path(["CATALOG", "CURRENCY"])
_SUPPLIER_AID = _compile_path(["SUPPLIER_AID"])
_SUPPLIER_PID = _compile_path(["SUPPLIER_PID"])
_DESCRIPTION_SHORT = _compile_path(["DESCRIPTION_SHORT"])


def _attribute(node: etree._Element, wanted: str) -> str | None:
    suffix = "}" + wanted
    for key, value in node.items():
        if key == wanted or key.endswith(suffix):  # the local name is ``wanted``, in any namespace
            return _clean(str(value))
    return None


_GTIN_TAGS = any_namespace("INTERNATIONAL_PID", "INTERNATIONAL_AID")
_EAN_TAG = any_namespace("EAN")
_PRICE_BLOCK_TAGS = any_namespace("ARTICLE_PRICE_DETAILS", "PRODUCT_PRICE_DETAILS")
_PRICE_TAGS = any_namespace("ARTICLE_PRICE", "PRODUCT_PRICE")
_DETAILS_TAGS = any_namespace("ARTICLE_DETAILS", "PRODUCT_DETAILS")
_ORDER_TAGS = any_namespace("ARTICLE_ORDER_DETAILS", "PRODUCT_ORDER_DETAILS")


class FeedReader(ABC):
    """Base reader: owns the supplier, the location for messages and the error wrapping.

    ``partial`` is True after reading a delivery that carries only some articles or only some
    fields (a BMEcat ``T_UPDATE_PRICES``): missing fields keep their last value and absent
    articles are not deactivated.
    """

    format: ClassVar[str]

    def __init__(self, supplier: Supplier, location: str) -> None:
        self.supplier = supplier
        self.location = location
        self.partial = False

    def error(self, problem: str, line: int | None = None) -> FeedError:
        """A FeedError for this feed, mentioning the line when known."""
        return FeedError(self.supplier.id, self.location, f"line {line}: {problem}" if line else problem)

    @abstractmethod
    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield the records of the file at ``path`` in order."""


class XmlFeedReader(FeedReader):
    """Generic XML: one element per record (``record_tag``), fields as relative paths.

    A path is ``/``-separated local names (namespaces ignored); a last step ``@name`` reads an
    attribute, and ``.`` or ``@name`` alone read the record element itself.
    """

    format = "xml"

    def __init__(self, supplier: Supplier, location: str) -> None:
        super().__init__(supplier, location)
        assert supplier.xml is not None  # the config model guarantees it for format "xml"
        self.mapping: XmlMapping = supplier.xml
        self.paths = {name: _compile_path(_path_steps(path)) for name, path in self.mapping.fields.items()}

    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield one record per ``record_tag`` element, streamed with the safe parser."""
        record_no = 0
        try:
            for element in iterparse(path, self.mapping.record_tag):
                record_no += 1
                values = {name: path(element) for name, path in self.paths.items()}
                if self.mapping.price_unit == "cent":
                    values["purchase_price"] = _cents_to_units(
                        values.get("purchase_price"), self.mapping.decimal_separator
                    )
                _per_unit(values, self.mapping)
                yield RawRecord(record_no, element.sourceline, values)
        except XmlError as exc:
            raise self.error(f"not a well-formed XML feed: {exc.problem}", exc.line) from None
        if record_no == 0:
            raise self.error(f"no <{self.mapping.record_tag}> records found")


class CsvFeedReader(FeedReader):
    """CSV with a header row; our fields map to the supplier's column headers."""

    format = "csv"

    def __init__(self, supplier: Supplier, location: str) -> None:
        super().__init__(supplier, location)
        assert supplier.csv is not None  # the config model guarantees it for format "csv"
        self.mapping: CsvMapping = supplier.csv

    def _positions(self, header: list[str]) -> dict[str, int]:
        # A BOM left by a plain utf-8 decode and stray spaces are not part of the header name.
        found = [h.lstrip("\ufeff").strip() for h in header]
        missing = [column for column in self.mapping.columns.values() if column not in found]
        if missing:
            raise self.error(f"missing column(s) {missing} in the header; columns found: {found}", 1)
        return {name: found.index(column) for name, column in self.mapping.columns.items()}

    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield one record per data row; blank lines are skipped."""
        line = 0
        try:
            with path.open(encoding=self.mapping.encoding, newline="") as handle:
                reader = csv.reader(
                    handle,
                    delimiter=self.mapping.delimiter,
                    quotechar=self.mapping.quotechar,
                    quoting=csv.QUOTE_NONE if self.mapping.quoting == "none" else csv.QUOTE_MINIMAL,
                    strict=True,
                )
                header = next(reader, None)
                if header is None:
                    raise self.error("the file is empty (no header row)")
                positions = self._positions(header)
                line = reader.line_num
                record_no = 0
                for row in reader:
                    start_line = line + 1  # a quoted field may span lines: report where the row starts
                    line = reader.line_num
                    if not row or all(not cell.strip() for cell in row):
                        continue
                    record_no += 1
                    values = {
                        name: _clean(row[index]) if index < len(row) else None for name, index in positions.items()
                    }
                    _per_unit(values, self.mapping)
                    yield RawRecord(record_no, start_line, values)
        except UnicodeDecodeError as exc:
            raise self.error(
                f"not valid {self.mapping.encoding} text ({exc.reason} at byte {exc.start} of a read block); "
                "check the encoding configured for this supplier",
                line + 1,
            ) from None
        except csv.Error as exc:
            raise self.error(f"malformed CSV: {exc}", line + 1) from None


class BmecatFeedReader(FeedReader):
    """BMEcat catalogs, 1.2 and 2005 element names alike (suppliers mix them, e.g. 1.2 articles
    inside a ``<BMECAT version="2005">`` document).

    * records: ``ARTICLE`` (1.2) or ``PRODUCT`` (2005) inside ``T_NEW_CATALOG``, ``T_UPDATE_PRODUCTS``
      or ``T_UPDATE_PRICES``; the two update transactions are partial deliveries;
    * supplier_sku: ``SUPPLIER_AID`` / ``SUPPLIER_PID``; name: ``DESCRIPTION_SHORT`` of the details;
    * gtin: ``INTERNATIONAL_PID`` / ``INTERNATIONAL_AID`` whose ``type`` is one of the configured GTIN
      types, else the 1.2 ``EAN`` element;
    * price: the first configured ``price_type`` found in ``*_PRICE_DETAILS/*_PRICE``; of its quantity
      tiers (``LOWER_BOUND``, in order units, default 1) the lowest, or the one that applies when ordering
      ``tier_quantity`` order units; currency: ``PRICE_CURRENCY``, else ``HEADER/CATALOG/CURRENCY``;
    * cost per sellable unit, exact in Decimal and rounded half up to 4 decimals at the end:
      ``PRICE_AMOUNT`` x ``PRICE_FACTOR`` (default 1) / ``PRICE_QUANTITY`` (order units the amount is for,
      default 1, from ``*_ORDER_DETAILS``) / ``NO_CU_PER_OU`` (content units per order unit, default 1;
      only when ``sell_unit`` is ``content_unit``) / (1 + ``TAX``) for gross price types (``TAX`` of the
      price, else ``TAX_DETAILS/TAX``; a fraction, 0.19 = 19 %). A number that cannot be read is passed
      on marked, so the row is quarantined with the reason and the line;
    * quantity: the configured stock path (converted from ``stock_unit`` to ``sell_unit``); absent, the
      feed's ``missing_quantity`` policy applies; ``mode="delete"`` articles get quantity 0.
    """

    format = "bmecat"
    RECORD_TAGS = ("ARTICLE", "PRODUCT")
    TRANSACTIONS = ("T_NEW_CATALOG", "T_UPDATE_PRODUCTS", "T_UPDATE_PRICES")
    PARTIAL_TRANSACTIONS = ("T_UPDATE_PRODUCTS", "T_UPDATE_PRICES")

    def __init__(self, supplier: Supplier, location: str) -> None:
        super().__init__(supplier, location)
        assert supplier.bmecat is not None  # the config model fills defaults for format "bmecat"
        self.mapping: BmecatMapping = supplier.bmecat
        self.stock_path = _compile_path(_path_steps(self.mapping.stock_path)) if self.mapping.stock_path else None
        self.gtin_types = {t.lower() for t in self.mapping.gtin_types}
        self.gross_types = set(self.mapping.gross_price_types)
        self.transaction: str | None = None

    def _gtin(self, details: etree._Element | None) -> str | None:
        if details is None:
            return None
        for element in details.iterchildren(*_GTIN_TAGS):
            if (_attribute(element, "type") or "").lower() in self.gtin_types:
                return _clean(element.text)
        ean = next(details.iterchildren(*_EAN_TAG), None)
        return _clean(ean.text) if ean is not None else None

    def _price(self, record: etree._Element, order: etree._Element | None) -> tuple[str | None, str | None]:
        prices = [
            price for block in record.iterchildren(*_PRICE_BLOCK_TAGS) for price in block.iterchildren(*_PRICE_TAGS)
        ]
        for wanted in self.mapping.price_types:
            candidates = [p for p in prices if _attribute(p, "price_type") == wanted]
            if candidates:
                chosen = self._tier(candidates)
                return self._cost(chosen, wanted in self.gross_types, order), _CURRENCY(chosen)
        return None, None

    def _tier(self, candidates: list[etree._Element]) -> etree._Element:
        """The price tier that is the cost: the lowest LOWER_BOUND, or the one for ``tier_quantity``."""
        bounds = [(self._lower_bound(p), position, p) for position, p in enumerate(candidates)]
        lowest = min(bounds, key=lambda b: (b[0], b[1]))
        if self.mapping.tier_quantity is None:
            return lowest[2]
        applicable = [b for b in bounds if b[0] <= self.mapping.tier_quantity]
        return max(applicable, key=lambda b: (b[0], -b[1]))[2] if applicable else lowest[2]

    @staticmethod
    def _lower_bound(price: etree._Element) -> Decimal:
        bound = _LOWER_BOUND(price)
        if bound is None:
            return Decimal(1)
        value = _decimal(bound)
        # An unreadable tier, or one no order reaches (1e999 overflows a float), is never the cost.
        return value if value is not None and math.isfinite(float(value)) else Decimal("Infinity")

    def _cost(self, price: etree._Element, gross: bool, order: etree._Element | None) -> str | None:
        """The cost per sellable unit as text; a part that is not a number marks the amount (quarantined)."""
        raw = _AMOUNT(price)
        amount = _decimal(raw)
        if raw is None or amount is None:
            return raw
        factors: dict[str, str | None] = {
            "PRICE_FACTOR": _PRICE_FACTOR(price),
            "PRICE_QUANTITY": _PRICE_QUANTITY(order) if order is not None else None,
            "NO_CU_PER_OU": _NO_CU_PER_OU(order) if order is not None else None,
        }
        if self.mapping.sell_unit == "order_unit":
            factors["NO_CU_PER_OU"] = None
        read: dict[str, Decimal] = {}
        for name, text in factors.items():
            value = Decimal(1) if text is None else _decimal(text)
            if value is None or value <= 0:
                return f"{raw} ({name} {text!r} is not a positive number)"
            read[name] = value
        if not gross and all(value == 1 for value in read.values()):
            return raw  # nothing to convert: the amount as delivered (validation checks its decimals)
        cost = amount * read["PRICE_FACTOR"] / read["PRICE_QUANTITY"] / read["NO_CU_PER_OU"]
        if gross:
            tax_text = _TAX(price) or _DETAILS_TAX(price)
            tax = _decimal(tax_text)
            if tax is None or tax < 0 or tax >= 1:
                return f"{raw} (a gross price needs TAX as a fraction such as 0.19; found {tax_text!r})"
            cost = cost / (1 + tax)
        return _cost_text(cost)

    def _quantity(self, record: etree._Element, order: etree._Element | None) -> str | None:
        """Stock from the extension, converted to the sell unit (packs x NO_CU_PER_OU, or whole packs)."""
        raw = self.stock_path(record) if self.stock_path else None
        if raw is None or self.mapping.stock_unit == self.mapping.sell_unit:
            return raw
        per_order_text = _NO_CU_PER_OU(order) if order is not None else None
        per_order_unit = Decimal(1) if per_order_text is None else _decimal(per_order_text)
        stock = _decimal(raw)
        if per_order_unit is None or per_order_unit <= 0 or stock is None:
            return raw if stock is None else f"{raw} (NO_CU_PER_OU is not a positive number)"
        if self.mapping.sell_unit == "content_unit":  # stock counted in order units
            return str((stock * per_order_unit).to_integral_value(rounding=ROUND_FLOOR))
        return str((stock / per_order_unit).to_integral_value(rounding=ROUND_FLOOR))

    def records(self, path: Path) -> Iterator[RawRecord]:
        """Yield one record per article/product of the catalog's transaction, streamed."""
        header_currency: str | None = None
        record_no = 0
        try:
            for element in iterparse(path, ("HEADER", *self.RECORD_TAGS)):
                name = local_name(element)
                if name == "HEADER":
                    header_currency = _HEADER_CURRENCY(element)
                    continue
                parent = element.getparent()
                transaction = local_name(parent) if parent is not None else ""
                if transaction not in self.TRANSACTIONS:
                    continue  # e.g. a PRODUCT referenced from somewhere else than a transaction
                self.transaction = transaction
                self.partial = transaction in self.PARTIAL_TRANSACTIONS
                record_no += 1
                details = next(element.iterchildren(*_DETAILS_TAGS), None)
                order = next(element.iterchildren(*_ORDER_TAGS), None)
                price, currency = self._price(element, order)
                quantity = self._quantity(element, order)
                if (_attribute(element, "mode") or "").lower() == "delete":
                    quantity = "0"
                values = {
                    "supplier_sku": _SUPPLIER_AID(element) or _SUPPLIER_PID(element),
                    "gtin": self._gtin(details),
                    "name": _DESCRIPTION_SHORT(details) if details is not None else None,
                    "purchase_price": price,
                    "currency": currency or header_currency,
                    "quantity": quantity,
                }
                yield RawRecord(record_no, element.sourceline, values)
        except XmlError as exc:
            raise self.error(f"not a well-formed BMEcat document: {exc.problem}", exc.line) from None
        if record_no == 0:
            raise self.error("no ARTICLE or PRODUCT records inside T_NEW_CATALOG, T_UPDATE_PRODUCTS or T_UPDATE_PRICES")


READERS: dict[str, type[FeedReader]] = {"xml": XmlFeedReader, "csv": CsvFeedReader, "bmecat": BmecatFeedReader}


def reader_for(supplier: Supplier, location: str) -> FeedReader:
    """The reader for the supplier's configured format."""
    return READERS[supplier.spec.format](supplier, location)


def read_records(supplier: Supplier, path: Path, location: str) -> Iterator[RawRecord]:
    """Stream the records of ``path`` (fetched from ``location``) for ``supplier``.

    Raises:
        FeedError: the file cannot be parsed; names supplier, location and line when known.
    """
    return reader_for(supplier, location).records(path)
