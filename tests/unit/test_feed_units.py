"""Per-unit costs and stock from packs (generic XML/CSV) and BMEcat price parts; split-feed config.

Costs are exact Decimal arithmetic rounded half up to 4 decimals; a part that cannot be read leaves
the value marked so validation quarantines the row with the reason (never a silent wrong cost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from commerce_sync.config import Supplier
from commerce_sync.sources.feeds import reader_for


def csv_supplier(**csv: Any) -> Supplier:
    return Supplier.model_validate(
        {
            "id": "golf",
            "name": "Golf",
            "format": "csv",
            "transport": {"type": "file", "path": "golf.csv"},
            "csv": {"delimiter": ";", "decimal_separator": ",", **csv},
        }
    )


def records(supplier: Supplier, path: Path) -> list[dict[str, str | None]]:
    return [r.values for r in reader_for(supplier, str(path)).records(path)]


PACK_COLUMNS = {"supplier_sku": "sku", "purchase_price": "cena", "quantity": "stan", "pack_size": "opak"}


def test_csv_price_and_stock_per_pack_become_per_unit(tmp_path: Path) -> None:
    path = tmp_path / "golf.csv"
    path.write_text("sku;cena;stan;opak\nG-1;130,20;3;12\nG-2;10,00;7;3\nG-3;5,00;1;0\nG-4;9,99;2;\n", "utf-8")
    supplier = csv_supplier(columns=PACK_COLUMNS, price_per="pack", quantity_per="pack")
    rows = records(supplier, path)
    assert [(r["supplier_sku"], r["purchase_price"], r["quantity"]) for r in rows] == [
        ("G-1", "10,8500", "36"),  # 130.20 / 12 in the feed's separator; 3 packs of 12
        ("G-2", "3,3333", "21"),  # 10 / 3 = 3.33333... rounded half up to 4 decimals
        (
            "G-3",
            "5,00 (pack size '0' is not a positive whole number)",
            "1 (pack size '0' is not a positive whole number)",
        ),
        (
            "G-4",
            "9,99 (pack size None is not a positive whole number)",
            "2 (pack size None is not a positive whole number)",
        ),
    ]
    assert all("pack_size" not in r for r in rows)


def test_fixed_pack_size_for_prices_only(tmp_path: Path) -> None:
    path = tmp_path / "golf.csv"
    path.write_text("sku;cena;stan\nG-1;61,60;5\n", "utf-8")
    columns = {"supplier_sku": "sku", "purchase_price": "cena", "quantity": "stan"}
    rows = records(csv_supplier(columns=columns, price_per="pack", pack_size=8), path)
    assert (rows[0]["purchase_price"], rows[0]["quantity"]) == ("7,7000", "5")  # stock stays in units


def test_xml_price_per_pack(tmp_path: Path) -> None:
    path = tmp_path / "h.xml"
    path.write_text("<o><p><id>H-1</id><net>45.00</net><qty>2</qty><pack>100</pack></p></o>", "utf-8")
    supplier = Supplier.model_validate(
        {
            "id": "hotel",
            "name": "Hotel",
            "format": "xml",
            "transport": {"type": "file", "path": "h.xml"},
            "xml": {
                "record_tag": "p",
                "price_per": "pack",
                "fields": {"supplier_sku": "id", "purchase_price": "net", "quantity": "qty", "pack_size": "pack"},
            },
        }
    )
    assert records(supplier, path)[0]["purchase_price"] == "0.4500"


BMECAT = """<?xml version="1.0"?>
<!DOCTYPE BMECAT SYSTEM "http://www.bmecat.org/bmecat/2005/bmecat_2005.dtd">
<BMECAT version="2005"><HEADER><CATALOG><CURRENCY>PLN</CURRENCY></CATALOG></HEADER><T_NEW_CATALOG>
<PRODUCT><SUPPLIER_PID>B-1</SUPPLIER_PID>
 <PRODUCT_ORDER_DETAILS><NO_CU_PER_OU>{cu}</NO_CU_PER_OU><PRICE_QUANTITY>{pq}</PRICE_QUANTITY></PRODUCT_ORDER_DETAILS>
 <PRODUCT_PRICE_DETAILS><PRODUCT_PRICE price_type="net_list"><PRICE_AMOUNT>{amount}</PRICE_AMOUNT>
  <PRICE_FACTOR>{factor}</PRICE_FACTOR></PRODUCT_PRICE></PRODUCT_PRICE_DETAILS>
 <USER_DEFINED_EXTENSIONS><UDX.STOCK>{stock}</UDX.STOCK></USER_DEFINED_EXTENSIONS>
</PRODUCT></T_NEW_CATALOG></BMECAT>
"""


@pytest.mark.parametrize(
    ("parts", "mapping", "expected"),
    [
        ({"amount": "61.60", "factor": "1.057", "cu": "1", "pq": "1"}, {}, ("65.1112", "4")),
        ({"amount": "61.60", "factor": "1", "cu": "12", "pq": "1"}, {}, ("5.1333", "48")),  # 4 cartons of 12
        ({"amount": "61.60", "factor": "1", "cu": "12", "pq": "1"}, {"sell_unit": "order_unit"}, ("61.60", "4")),
        (
            {"amount": "61.60", "factor": "1", "cu": "12", "pq": "1"},
            {"stock_unit": "content_unit"},
            ("5.1333", "4"),  # the extension already counts bottles
        ),
        ({"amount": "100", "factor": "0.9", "cu": "1", "pq": "10"}, {}, ("9.0000", "4")),
        (
            {"amount": "61.60", "factor": "1,057", "cu": "1", "pq": "1"},
            {},
            ("61.60 (PRICE_FACTOR '1,057' is not a positive number)", "4"),
        ),
        (
            {"amount": "61.60", "factor": "1", "cu": "0", "pq": "1"},
            {},
            ("61.60 (NO_CU_PER_OU '0' is not a positive number)", "4 (NO_CU_PER_OU is not a positive number)"),
        ),
    ],
    ids=["factor", "carton-of-12", "sell-cartons", "stock-in-bottles", "price-quantity-10", "bad-factor", "zero-cu"],
)
def test_bmecat_cost_per_sellable_unit(
    tmp_path: Path, parts: dict[str, str], mapping: dict[str, Any], expected: tuple[str, str]
) -> None:
    path = tmp_path / "b.xml"
    path.write_text(BMECAT.format(stock="4", **parts), "utf-8")
    supplier = Supplier.model_validate(
        {
            "id": "bravo",
            "name": "B",
            "format": "bmecat",
            "transport": {"type": "file", "path": "b.xml"},
            "bmecat": mapping,
        }
    )
    row = records(supplier, path)[0]
    assert (row["purchase_price"], row["quantity"]) == expected


FEEDS = [
    {"id": "catalogue", "format": "bmecat", "transport": {"type": "file", "path": "c.xml"}},
    {
        "id": "stock",
        "format": "csv",
        "transport": {"type": "file", "path": "s.csv"},
        "csv": {"stock_only": True, "columns": {"supplier_sku": "sku", "quantity": "qty"}},
    },
]


def test_feed_views_carry_each_feeds_settings_and_source() -> None:
    supplier = Supplier.model_validate({"id": "india", "name": "I", "currency": "EUR", "feeds": FEEDS})
    views = supplier.feed_views()
    assert [(v.source, v.feed_label, v.format, v.currency) for v in views] == [
        ("supplier:india/catalogue", "catalogue", "bmecat", "EUR"),
        ("supplier:india/stock", "stock", "csv", "EUR"),
    ]
    assert views[1].spec.delivered_fields == {"supplier_sku", "quantity"}
    assert (
        "quantity"
        not in Supplier.model_validate(
            {**FEEDS[0], "id": "j1", "name": "J", "bmecat": {"stock_path": None}}
        ).spec.delivered_fields
    )
    single = Supplier.model_validate({**FEEDS[0], "id": "juliet", "name": "J"})
    assert single.feed_views() == [single] and single.source == "supplier:juliet" and single.feed_label == "main"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"feeds": FEEDS, "format": "csv"}, "either feeds or a single feed's settings"),
        ({"feeds": [FEEDS[0], FEEDS[0]]}, "duplicate"),
        ({}, "needs format and transport"),
        ({**FEEDS[0], "missing_quantity": "default"}, "default_quantity is set exactly when"),
        ({"feeds": [{**FEEDS[0], "default_quantity": 3}]}, "default_quantity is set exactly when"),
        (
            {
                "feeds": [
                    {
                        **FEEDS[1],
                        "csv": {
                            "stock_only": True,
                            "columns": {"supplier_sku": "a", "quantity": "b", "purchase_price": "c"},
                        },
                    }
                ]
            },
            "stock_only: true but purchase_price",
        ),
        (
            {
                "feeds": [
                    {**FEEDS[1], "csv": {"price_per": "pack", "columns": {"supplier_sku": "a", "purchase_price": "c"}}}
                ]
            },
            "map a pack_size field",
        ),
    ],
)
def test_split_feed_config_errors(data: dict[str, Any], message: str) -> None:
    entry = {"id": "kilo", "name": "K", **{k: v for k, v in data.items() if k != "id"}}
    with pytest.raises(ValidationError, match=message):
        Supplier.model_validate(entry)
