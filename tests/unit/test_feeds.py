"""Feed readers: XML and CSV records as raw text, and clear errors for broken feeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from commerce_sync.config import Supplier
from commerce_sync.errors import FeedError
from commerce_sync.sources.feeds import RawRecord, read_records

XML_FIELDS = {
    "supplier_sku": "code",
    "gtin": "ean",
    "name": "name",
    "purchase_price": "price/net",
    "currency": "price/currency",
    "quantity": "stock",
}
CSV_COLUMNS = {
    "supplier_sku": "Indeks",
    "gtin": "EAN",
    "name": "Nazwa",
    "purchase_price": "Cena netto",
    "quantity": "Stan",
}


def xml_supplier(**xml: Any) -> Supplier:
    mapping = {"record_tag": "product", "fields": XML_FIELDS} | xml
    return Supplier.model_validate(
        {
            "id": "acme",
            "name": "ACME",
            "format": "xml",
            "transport": {"type": "file", "path": "acme.xml"},
            "xml": mapping,
        }
    )


def csv_supplier(**csv: Any) -> Supplier:
    mapping = {"columns": CSV_COLUMNS} | csv
    return Supplier.model_validate(
        {
            "id": "bravo",
            "name": "Bravo",
            "format": "csv",
            "transport": {"type": "file", "path": "bravo.csv"},
            "csv": mapping,
        }
    )


def _read(supplier: Supplier, path: Path) -> list[RawRecord]:
    return list(read_records(supplier, path, f"file://{path}"))


ACME_XML = """<?xml version="1.0" encoding="UTF-8"?>
<catalog xmlns="urn:acme:feed">
  <product>
    <code> A-1 </code>
    <ean>5901234123457</ean>
    <name>Żółta łódź</name>
    <price><net>12.30</net><currency>EUR</currency></price>
    <stock>7</stock>
  </product>
  <product>
    <code>A-2</code>
    <ean></ean>
    <name><![CDATA[Kubek & spodek]]></name>
    <price><net>5</net></price>
    <stock>0</stock>
  </product>
</catalog>
"""


def test_xml_records_with_paths_and_namespaces(tmp_path: Path) -> None:
    path = tmp_path / "acme.xml"
    path.write_text(ACME_XML, encoding="utf-8")
    records = _read(xml_supplier(), path)
    assert records == [
        RawRecord(
            1,
            3,
            {
                "supplier_sku": "A-1",
                "gtin": "5901234123457",
                "name": "Żółta łódź",
                "purchase_price": "12.30",
                "currency": "EUR",
                "quantity": "7",
            },
        ),
        RawRecord(
            2,
            10,
            {
                "supplier_sku": "A-2",
                "gtin": None,
                "name": "Kubek & spodek",
                "purchase_price": "5",
                "currency": None,
                "quantity": "0",
            },
        ),
    ]


def test_xml_attribute_paths(tmp_path: Path) -> None:
    path = tmp_path / "ceneo.xml"
    path.write_text('<offers><o id="X1" price="9,99" stock="3"><name>N</name></o></offers>', encoding="utf-8")
    fields = {"supplier_sku": "@id", "purchase_price": "@price", "quantity": "@stock", "name": "name"}
    records = _read(xml_supplier(record_tag="o", fields=fields, decimal_separator=","), path)
    assert records[0].values == {"supplier_sku": "X1", "purchase_price": "9,99", "quantity": "3", "name": "N"}


CSV_ROWS = [
    ["Indeks", "EAN", "Nazwa", "Cena netto", "Stan"],
    ["B-1", "5901234123457", "Zażółć gęślą jaźń", "12,30", "4"],
    ["B-2", "", 'Kabel "HDMI"; 2 m', "1 234,50", "0"],
]


def _csv_text(delimiter: str) -> str:
    def cell(value: str) -> str:
        if any(ch in value for ch in (delimiter, '"', "\n")):
            return '"' + value.replace('"', '""') + '"'
        return value

    return "\r\n".join(delimiter.join(cell(v) for v in row) for row in CSV_ROWS) + "\r\n"


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("cp1250", ";"), ("utf-8-sig", ";"), ("utf-8", ","), ("iso-8859-2", "\t")],
)
def test_csv_encodings_quoting_and_decimal_comma(tmp_path: Path, encoding: str, delimiter: str) -> None:
    path = tmp_path / "bravo.csv"
    path.write_bytes(_csv_text(delimiter).encode(encoding))
    records = _read(csv_supplier(encoding=encoding, delimiter=delimiter, decimal_separator=","), path)
    assert [r.record_no for r in records] == [1, 2]
    assert [r.source_line for r in records] == [2, 3]
    assert records[0].values == {
        "supplier_sku": "B-1",
        "gtin": "5901234123457",
        "name": "Zażółć gęślą jaźń",
        "purchase_price": "12,30",
        "quantity": "4",
    }
    assert records[1].values["name"] == 'Kabel "HDMI"; 2 m'
    assert records[1].values["purchase_price"] == "1 234,50"  # raw: normalised later
    assert records[1].values["gtin"] is None


def test_csv_bom_with_plain_utf8_still_finds_headers(tmp_path: Path) -> None:
    path = tmp_path / "bravo.csv"
    path.write_bytes(_csv_text(";").encode("utf-8-sig"))
    records = _read(csv_supplier(encoding="utf-8", delimiter=";"), path)
    assert records[0].values["supplier_sku"] == "B-1"


def test_csv_multiline_field_reports_start_line(tmp_path: Path) -> None:
    path = tmp_path / "bravo.csv"
    path.write_text('Indeks;EAN;Nazwa;Cena netto;Stan\nB-1;;"two\nlines";1;1\n\nB-2;;x;2;2\n', encoding="utf-8")
    records = _read(csv_supplier(delimiter=";"), path)
    assert [(r.record_no, r.source_line, r.values["supplier_sku"]) for r in records] == [
        (1, 2, "B-1"),
        (2, 5, "B-2"),
    ]
    assert records[0].values["name"] == "two\nlines"


def test_csv_missing_header_lists_headers_found(tmp_path: Path) -> None:
    path = tmp_path / "bravo.csv"
    path.write_text("Indeks;EAN;Nazwa;Cena;Stan\nB-1;;x;1;1\n", encoding="utf-8")
    with pytest.raises(FeedError) as excinfo:
        _read(csv_supplier(delimiter=";"), path)
    message = str(excinfo.value)
    assert "'bravo'" in message
    assert "['Cena netto']" in message
    assert "['Indeks', 'EAN', 'Nazwa', 'Cena', 'Stan']" in message


def test_csv_wrong_encoding_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bravo.csv"
    path.write_bytes(_csv_text(";").encode("cp1250"))
    with pytest.raises(FeedError, match="not valid utf-8 text") as excinfo:
        _read(csv_supplier(encoding="utf-8", delimiter=";"), path)
    assert excinfo.value.supplier == "bravo"


def test_not_xml_names_supplier_and_location(tmp_path: Path) -> None:
    path = tmp_path / "acme.xml"
    path.write_text("<html><body>Maintenance<br></body></html>", encoding="utf-8")
    with pytest.raises(FeedError) as excinfo:
        list(read_records(xml_supplier(), path, "https://feeds.example/acme.xml"))
    assert excinfo.value.supplier == "acme"
    assert excinfo.value.location == "https://feeds.example/acme.xml"
    assert "'acme'" in str(excinfo.value)
    assert "https://feeds.example/acme.xml" in str(excinfo.value)
    assert "line 1" in str(excinfo.value)


def test_truncated_xml_fails_with_line(tmp_path: Path) -> None:
    path = tmp_path / "acme.xml"
    path.write_text(ACME_XML[: ACME_XML.index("<stock>0")], encoding="utf-8")
    records = read_records(xml_supplier(), path, "acme.xml")
    with pytest.raises(FeedError, match=r"line \d+: not a well-formed XML feed"):
        list(records)


def test_xml_without_records_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acme.xml"
    path.write_text("<catalog><item/></catalog>", encoding="utf-8")
    with pytest.raises(FeedError, match="no <product> records"):
        _read(xml_supplier(), path)
