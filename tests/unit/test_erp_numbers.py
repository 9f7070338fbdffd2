"""ERP rows with non-finite or giant numbers are refused while streaming, before any cast."""

from __future__ import annotations

from typing import Any

import pytest

from commerce_sync.sources.erp import validate_row


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sku": "SKU-1",
        "ean": None,
        "name": "Item",
        "purchase_price": "10.00",
        "vat_rate": "23",
        "stock": "5",
        "reserved": "0",
        "active": "true",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("purchase_price", float("inf"), "purchase price is not a number"),
        ("purchase_price", "-Infinity", "purchase price is not a number"),
        ("purchase_price", "NaN", "purchase price is not a number"),
        ("purchase_price", "1e308", "purchase price is out of range"),
        ("purchase_price", "1e200000", "purchase price is out of range"),  # finite, overflows numeric in SQL
        ("vat_rate", "1e999", "VAT rate is out of range"),
        ("stock", "9" * 5000, "stock is out of range"),  # int() refuses more than 4300 digits
        ("reserved", "²", "reserved is not an integer"),  # str.isdigit() says yes, int() says no
    ],
)
def test_bad_numbers_are_row_problems(column: str, value: Any, reason: str) -> None:
    values, problem = validate_row(1, _row(**{column: value}), "PLN")
    assert values is None and problem is not None
    assert (problem.column, problem.reason) == (column, f"SKU SKU-1: {reason}")


def test_large_but_representable_numbers_are_left_to_the_sql_suite() -> None:
    # Above numeric(14, 4) and integer, but castable: the SQL suite quarantines them with the exact limit.
    values, problem = validate_row(1, _row(purchase_price="12345678901234567890.5", stock="99999999999"), "PLN")
    assert problem is None and values is not None
