"""CSV exports neutralise formula cells and are written whole or not at all."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from commerce_sync.csv_export import safe_cell, write_csv


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-5.00", "'-5.00"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\0x", "'\0x"),
        ("SKU-1", "SKU-1"),
        ("12.99", "12.99"),
        (None, ""),
        (7, "7"),
    ],
)
def test_safe_cell(value: object, expected: str) -> None:
    assert safe_cell(value) == expected


def test_write_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.csv"
    assert write_csv(path, ["sku", "note"], [("SKU-1", "=cmd|' /C calc'!A0"), ("SKU-2", "ok")]) == 2
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["sku", "note"], ["SKU-1", "'=cmd|' /C calc'!A0"], ["SKU-2", "ok"]]


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    write_csv(path, ["sku"], [("A",)])

    def broken() -> object:
        yield ("B",)
        raise RuntimeError("source failed mid-way")

    with pytest.raises(RuntimeError):
        write_csv(path, ["sku"], broken())  # type: ignore[arg-type]
    assert path.read_text(encoding="utf-8").splitlines() == ["sku", "A"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]
