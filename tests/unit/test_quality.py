"""The supplier offer suite on in-memory batches (Great Expectations, no database)."""

from __future__ import annotations

import pandas as pd
import pytest

from commerce_sync.quality.suites import ValidationOutcome, validate_supplier_offers

GOOD = {
    "supplier_sku": "S-1",
    "gtin": "5901234123457",
    "name": "Kubek",
    "purchase_price": "12,30",
    "currency": "PLN",
    "quantity": "4",
}


def _frame(*overrides: dict[str, str | None]) -> pd.DataFrame:
    rows = []
    for i, override in enumerate(overrides, start=1):
        row: dict[str, object] = {"record_no": i, "source_line": i + 1}
        row.update(GOOD)
        row["supplier_sku"] = f"S-{i}"
        row.update(override)
        rows.append(row)
    return pd.DataFrame(rows).astype({k: "object" for k in GOOD})


def _validate(*overrides: dict[str, str | None], separator: str = ",") -> ValidationOutcome:
    return validate_supplier_offers(_frame(*overrides), separator)


def test_good_rows_pass() -> None:
    outcome = _validate(
        {},
        {"gtin": None, "purchase_price": "1 234,5", "quantity": "0"},
        {"gtin": "4006381333931", "purchase_price": "0,0100", "quantity": "+3"},
        {"gtin": "96385074"},
    )
    assert outcome.failures == []
    assert outcome.failed == 0
    assert outcome.passed == outcome.expectations
    assert outcome.rows_evaluated == 4


@pytest.mark.parametrize(
    ("override", "column", "expectation", "reason"),
    [
        ({"purchase_price": "12,3x"}, "purchase_price", "expect_column_values_to_not_be_null", "is not a number"),
        ({"purchase_price": "12.30"}, "purchase_price", "expect_column_values_to_not_be_null", "is not a number"),
        ({"purchase_price": None}, "purchase_price", "expect_column_values_to_not_be_null", "is missing"),
        ({"purchase_price": "0"}, "purchase_price", "expect_column_values_to_be_between", "'0' is not above 0"),
        ({"purchase_price": "-5,00"}, "purchase_price", "expect_column_values_to_be_between", "not above 0"),
        ({"quantity": "-3"}, "quantity", "expect_column_values_to_be_between", "'-3' is negative"),
        ({"quantity": "2,5"}, "quantity", "expect_column_values_to_not_be_null", "not a whole number"),
        ({"gtin": "5901234123458"}, "gtin", "expect_column_values_to_be_null", "check digit is 8, expected 7"),
        ({"gtin": "12345"}, "gtin", "expect_column_values_to_be_null", "has 5 digits"),
        ({"supplier_sku": None}, "supplier_sku", "expect_column_values_to_not_be_null", "supplier_sku is missing"),
        ({"currency": "zł"}, "currency", "expect_column_values_to_match_regex", "three-letter"),
    ],
)
def test_bad_row_is_flagged(override: dict[str, str | None], column: str, expectation: str, reason: str) -> None:
    outcome = _validate({}, override, {})
    assert outcome.failed_record_nos == {2}
    [failure] = outcome.failures
    assert failure.record_no == 2
    assert failure.column == column
    assert failure.expectation == expectation
    assert reason in failure.reason
    assert failure.observed_value == override[column]
    assert outcome.failed == 1


def test_duplicate_sku_flags_both_rows() -> None:
    outcome = _validate({"supplier_sku": "DUP"}, {}, {"supplier_sku": "DUP"})
    assert outcome.failed_record_nos == {1, 3}
    assert {f.reason for f in outcome.failures} == {"supplier_sku 'DUP' appears more than once in this delivery"}


def test_dot_separator_rejects_comma_prices() -> None:
    outcome = _validate({"purchase_price": "12.30"}, {"purchase_price": "12,30"}, separator=".")
    assert outcome.failed_record_nos == {2}


def test_summary_counts() -> None:
    outcome = _validate({"quantity": "-1"}, {"quantity": "-2", "gtin": "1"}, {})
    summary = outcome.summary()
    assert summary["suite"] == "supplier_offer"
    assert summary["rows_evaluated"] == 3
    assert summary["rows_quarantined"] == 2
    assert summary["failed"] == 2
    assert summary["passed"] + summary["failed"] == summary["expectations"]
