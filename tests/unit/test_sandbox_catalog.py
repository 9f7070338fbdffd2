"""The sandbox catalog and feeds are deterministic, valid where they should be, bad where documented."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from commerce_sync.sources.gtin import gtin_problem
from commerce_sync_sandbox.catalog import BASE_DATE, products
from commerce_sync_sandbox.feeds import acme_xml, bravo_csv, write_feeds

SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def test_same_seed_same_catalog() -> None:
    assert products(300, 42) == products(300, 42)
    assert products(300, 42) != products(300, 7)
    # A smaller catalog is a prefix of a larger one: demos and benchmarks agree on shared SKUs.
    assert products(50, 42) == products(300, 42)[:50]


def test_catalog_values_are_plausible() -> None:
    catalog = products(1000, 42)
    assert len({p.sku for p in catalog}) == 1000
    assert len({p.ean for p in catalog}) == 1000
    for p in catalog:
        assert gtin_problem(p.ean) is None, p
        assert p.ean.startswith("590") and len(p.ean) == 13
        assert Decimal("5") <= p.purchase_price <= Decimal("2000")
        assert p.purchase_price == p.purchase_price.quantize(Decimal("0.01"))
        assert p.vat_rate in (Decimal("0.23"), Decimal("0.08"))
        assert 0 <= p.reserved <= p.stock <= 200
        assert BASE_DATE.replace(day=1, month=10) <= p.updated_at < BASE_DATE
        assert p.description.count(".") + p.description.count("!") >= 1
    zero = sum(p.stock == 0 for p in catalog) / len(catalog)
    inactive = sum(not p.active for p in catalog) / len(catalog)
    reduced = sum(p.vat_rate == Decimal("0.08") for p in catalog) / len(catalog)
    assert 0.05 < zero < 0.15
    assert 0.003 < inactive < 0.05
    assert 0.05 < reduced < 0.15


def _acme_codes(data: bytes) -> dict[str, dict[str, str]]:
    root = etree.fromstring(data, SAFE_PARSER)
    assert root.get("supplier") == "acme"
    return {
        product.findtext("code"): {
            "ean": product.findtext("ean"),
            "net": product.findtext("price/net"),
            "currency": product.findtext("price/currency"),
            "stock": product.findtext("stock"),
        }
        for product in root.iter("product")
    }


def _bravo_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("cp1250"), newline=""), delimiter=";"))


def test_acme_feed_subset_and_bad_records() -> None:
    records = _acme_codes(acme_xml(300, 42))
    good = {code: r for code, r in records.items() if not code.startswith("ACM-BAD")}
    assert 0.6 * 300 < len(good) < 0.8 * 300
    assert records["ACM-BAD-PRICE"]["net"] == "12,3x"
    assert gtin_problem(records["ACM-BAD-EAN"]["ean"]) is not None
    assert gtin_problem(records["ACM-BAD-PRICE"]["ean"]) is None
    by_ean = {p.ean: p for p in products(300, 42)}
    for r in good.values():
        cost = by_ean[r["ean"]].purchase_price
        assert cost * Decimal("0.89") <= Decimal(r["net"]) <= cost * Decimal("1.11")
        assert 0 <= int(r["stock"]) <= 500
        assert r["currency"] == "PLN"


def test_bravo_feed_subset_encoding_and_bad_records() -> None:
    data = bravo_csv(300, 42)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really cp1250, not UTF-8
    rows = _bravo_rows(data)
    assert list(rows[0]) == ["Indeks", "EAN", "Nazwa", "Cena netto", "Stan"]
    by_code = {r["Indeks"]: r for r in rows}
    assert int(by_code["BRV-BAD-STOCK"]["Stan"]) < 0
    assert by_code["BRV-NO-PRICE"]["Cena netto"] == ""
    good = [r for r in rows if not r["Indeks"].startswith("BRV-BAD") and r["Indeks"] != "BRV-NO-PRICE"]
    assert 0.4 * 300 < len(good) < 0.6 * 300
    assert all("," in r["Cena netto"] and "." not in r["Cena netto"] for r in good)
    assert any(ch in "".join(r["Nazwa"] for r in good) for ch in "ąęłżśó")
    acme_eans = {r["ean"] for r in _acme_codes(acme_xml(300, 42)).values()}
    overlap = {r["EAN"] for r in good} & acme_eans
    assert 0 < len(overlap) < len(good)


def test_write_feeds_is_byte_identical_and_keeps_mtime(tmp_path: Path) -> None:
    first = write_feeds(tmp_path, 120, 42)
    contents = {name: path.read_bytes() for name, path in first.items()}
    mtimes = {name: path.stat().st_mtime_ns for name, path in first.items()}
    second = write_feeds(tmp_path, 120, 42)
    assert {name: path.read_bytes() for name, path in second.items()} == contents
    assert {name: path.stat().st_mtime_ns for name, path in second.items()} == mtimes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.xml", "bravo.csv"]  # no temp files left
    write_feeds(tmp_path, 121, 42)
    assert first["acme"].read_bytes() != contents["acme"]
