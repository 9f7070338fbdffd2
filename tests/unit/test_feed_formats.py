"""BMEcat (1.2 and 2005 names, new catalog and price updates), XML units and CSV quoting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from commerce_sync.config import Supplier
from commerce_sync.errors import FeedError
from commerce_sync.sources.feeds import BmecatFeedReader, reader_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


def bmecat_supplier(**bmecat: Any) -> Supplier:
    config: dict[str, Any] = {
        "id": "charlie",
        "name": "Charlie (BMEcat)",
        "format": "bmecat",
        "currency": "USD",
        "transport": {"type": "file", "path": "charlie.xml"},
    }
    if bmecat:
        config["bmecat"] = bmecat
    return Supplier.model_validate(config)


def read(supplier: Supplier, path: Path) -> tuple[BmecatFeedReader, list[dict[str, str | None]]]:
    reader = reader_for(supplier, str(path))
    assert isinstance(reader, BmecatFeedReader)
    return reader, [record.values for record in reader.records(path)]


def test_bmecat_2005_new_catalog_prefers_configured_price_type_and_lowest_scale() -> None:
    reader, records = read(bmecat_supplier(), FIXTURES / "bmecat_2005_new_catalog.xml")
    assert reader.transaction == "T_NEW_CATALOG" and reader.partial is False
    assert records == [
        {
            "supplier_sku": "CH-1001",
            "gtin": "05901234123457",
            "name": "Wiertarka udarowa 650 W",
            "purchase_price": "209.50",  # net_customer first; of its scales the one from 1 piece
            "currency": "PLN",
            "quantity": "42",
        },
        {
            "supplier_sku": "CH-1002",
            "gtin": "4006381333931",
            "name": "Zestaw bitów 32 szt.",
            "purchase_price": "35.5",
            "currency": "PLN",  # no PRICE_CURRENCY: the catalog's HEADER/CATALOG/CURRENCY
            "quantity": "0",
        },
        {
            "supplier_sku": "CH-1003",
            "gtin": None,  # a UPC typed "upc" is not among the configured GTIN types
            "name": "Poziomica 60 cm",
            "purchase_price": "12.00",
            "currency": "EUR",
            "quantity": "5",
        },
    ]


def test_bmecat_price_and_gtin_types_come_from_config() -> None:
    supplier = bmecat_supplier(price_types=["net_list"], gtin_types=["gtin", "ean", "upc"])
    _, records = read(supplier, FIXTURES / "bmecat_2005_new_catalog.xml")
    assert [r["purchase_price"] for r in records] == ["249.00", "35.5", "12.00"]
    assert records[2]["gtin"] == "036000291452"


def test_bmecat_12_names_inside_2005_header_in_iso_8859_2() -> None:
    reader, records = read(bmecat_supplier(), FIXTURES / "bmecat_12_names_in_2005_header.xml")
    assert reader.transaction == "T_NEW_CATALOG"
    assert records == [
        {
            "supplier_sku": "D-77",
            "gtin": "5901234123457",
            "name": "Łopata szpiczasta",
            "purchase_price": "54.20",
            "currency": "PLN",
            "quantity": "3",
        },
        {
            "supplier_sku": "D-78",
            "gtin": "96385074",
            "name": "Grabie 16 zębów",
            "purchase_price": "19.99",
            "currency": "PLN",
            "quantity": "11",
        },
    ]


def test_bmecat_update_prices_is_a_partial_delivery() -> None:
    reader, records = read(bmecat_supplier(), FIXTURES / "bmecat_2005_update_prices.xml")
    assert reader.transaction == "T_UPDATE_PRICES" and reader.partial is True
    assert records == [
        {
            "supplier_sku": "CH-1001",
            "gtin": None,
            "name": None,
            "purchase_price": "289.00",
            "currency": "PLN",
            "quantity": None,
        }
    ]


def test_bmecat_delete_mode_zeroes_stock_and_stock_path_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "upd.xml"
    path.write_text(
        '<BMECAT version="1.2"><HEADER><CATALOG><CURRENCY>EUR</CURRENCY></CATALOG></HEADER>'
        '<T_UPDATE_PRODUCTS prev_version="1">'
        '<ARTICLE mode="delete"><SUPPLIER_AID>X1</SUPPLIER_AID></ARTICLE>'
        '<ARTICLE mode="update"><SUPPLIER_AID>X2</SUPPLIER_AID><ARTICLE_ORDER_DETAILS><QTY>9</QTY>'
        "</ARTICLE_ORDER_DETAILS></ARTICLE>"
        "</T_UPDATE_PRODUCTS></BMECAT>",
        encoding="utf-8",
    )
    reader, records = read(bmecat_supplier(stock_path="ARTICLE_ORDER_DETAILS/QTY"), path)
    assert reader.partial is True
    assert [(r["supplier_sku"], r["quantity"], r["currency"]) for r in records] == [
        ("X1", "0", "EUR"),
        ("X2", "9", "EUR"),
    ]


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (b"<BMECAT><HEADER/><T_NEW_CATALOG/></BMECAT>", "no ARTICLE or PRODUCT records"),
        (b"<BMECAT><T_NEW_CATALOG><PRODUCT><SUPPLIER_PID>1</SUPPLIER_PID>", "line 1: not a well-formed BMEcat"),
        (b"<catalog><PRODUCT><SUPPLIER_PID>1</SUPPLIER_PID></PRODUCT></catalog>", "no ARTICLE or PRODUCT"),
    ],
)
def test_bmecat_broken_documents_name_supplier_and_problem(tmp_path: Path, document: bytes, match: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(document)
    with pytest.raises(FeedError, match=match) as info:
        read(bmecat_supplier(), path)
    assert "charlie" in str(info.value) and str(path) in str(info.value)


def test_bmecat_needs_no_mapping_section() -> None:
    supplier = bmecat_supplier()
    assert supplier.bmecat is not None and supplier.bmecat.price_types == ["net_customer", "net_list"]
    assert supplier.decimal_separator == "."


def test_xml_prices_in_cents(tmp_path: Path) -> None:
    supplier = Supplier.model_validate(
        {
            "id": "echo",
            "name": "Echo (grosze)",
            "format": "xml",
            "transport": {"type": "file", "path": "echo.xml"},
            "xml": {
                "record_tag": "item",
                "price_unit": "cent",
                "decimal_separator": ",",
                "fields": {"supplier_sku": "@id", "purchase_price": "cena", "quantity": "stan"},
            },
        }
    )
    path = tmp_path / "echo.xml"
    path.write_text(
        '<items><item id="1"><cena>12345</cena><stan>1</stan></item><item id="2"><cena>7</cena><stan>1</stan></item>'
        '<item id="3"><cena>12,5</cena><stan>1</stan></item><item id="4"><stan>1</stan></item></items>',
        encoding="utf-8",
    )
    prices = [r.values["purchase_price"] for r in reader_for(supplier, str(path)).records(path)]
    assert prices == ["123,45", "0,07", "12,5 (not a whole number of cents)", None]


def test_csv_quoting_none_keeps_quote_characters_as_text(tmp_path: Path) -> None:
    supplier = Supplier.model_validate(
        {
            "id": "foxtrot",
            "name": "Foxtrot",
            "format": "csv",
            "transport": {"type": "file", "path": "f.csv"},
            "csv": {
                "delimiter": "|",
                "quoting": "none",
                "columns": {"supplier_sku": "sku", "name": "name", "purchase_price": "price", "quantity": "qty"},
            },
        }
    )
    path = tmp_path / "f.csv"
    path.write_text('sku|name|price|qty\nF1|Kabel 5" HDMI|9.99|4\nF2|"Cytat|1.00|2\n', encoding="utf-8")
    records = [r.values for r in reader_for(supplier, str(path)).records(path)]
    assert [r["name"] for r in records] == ['Kabel 5" HDMI', '"Cytat']


def test_xml_field_paths_follow_local_names_first_matches_and_attributes(tmp_path: Path) -> None:
    supplier = Supplier.model_validate(
        {
            "id": "delta",
            "name": "Delta",
            "format": "xml",
            "transport": {"type": "file", "path": "delta.xml"},
            "xml": {
                "record_tag": "item",
                "fields": {
                    "supplier_sku": "@x:sku",  # not a local name: never matches
                    "gtin": "codes/ean",
                    "name": "./name",
                    "purchase_price": "price/@net",
                    "currency": "@cur/.",  # an attribute step that is not the last never matches
                    "quantity": "*",  # a literal step name, not a wildcard
                },
            },
        }
    )
    feed = tmp_path / "delta.xml"
    feed.write_bytes(
        b'<feed xmlns="urn:a" xmlns:b="urn:b"><item cur="PLN" sku="S1">'
        b"<codes><b:ean> 590 </b:ean><ean>second</ean></codes>"
        b"<name>Mi<b>x</b>ed <!-- c -->text</name><name>second</name>"
        b'<price b:net="12.50" net="99"/><qty>3</qty></item>'
        b"<item><codes/><name>  </name><price/></item></feed>"
    )
    records = list(reader_for(supplier, str(feed)).records(feed))
    assert [(r.record_no, r.source_line) for r in records] == [(1, 1), (2, 1)]
    assert records[0].values == {
        "supplier_sku": None,
        "gtin": "590",
        "name": "Mixed text",
        "purchase_price": "12.50",
        "currency": None,
        "quantity": None,
    }
    assert set(records[1].values.values()) == {None}


@pytest.mark.parametrize("bound", ["NaN", "nan", "Infinity", "-Infinity", "-inf", "1e999"])
def test_bmecat_non_finite_lower_bound_never_wins_the_scale(bound: str) -> None:
    from lxml import etree

    def price(lower_bound: str) -> etree._Element:
        element = etree.Element("ARTICLE_PRICE")
        etree.SubElement(element, "LOWER_BOUND").text = lower_bound
        return element

    weird, normal = price(bound), price("5")
    assert BmecatFeedReader._lower_bound(weird) == float("inf")
    assert min([weird, normal], key=BmecatFeedReader._lower_bound) is normal
