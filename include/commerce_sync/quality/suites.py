"""Great Expectations suites, written as code and run directly on a pandas batch.

Raw text is typed first, vectorised, into helper columns (``purchase_price_value``,
``quantity_value``, ``gtin_problem``); the expectations then check those columns and report the
failing rows by ``record_no``. Each failure gets a sentence an operator can act on ("purchase_price
'12,3x' is not a number"). Great Expectations is imported inside the functions: it takes seconds
to import, which must not happen when a DAG file is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from commerce_sync.errors import CommerceSyncError
from commerce_sync.sources.gtin import gtin_problem

if TYPE_CHECKING:
    import pandas as pd

SUPPLIER_OFFER_SUITE = "supplier_offer"
# Grouping spaces a supplier may put in numbers (space, no-break space, narrow no-break space).
# The SQL merge strips exactly the same set, so validation and typing cannot disagree.
NUMBER_SPACES = "[ \u00a0\u202f]"
PRICE_MAX = 9_999_999_999.9999  # numeric(14, 4)
QUANTITY_MAX = 2_147_483_647  # integer
CURRENCY_PATTERN = r"^[A-Z]{3}$"


@dataclass(frozen=True)
class RowFailure:
    """One row that failed one expectation."""

    record_no: int
    expectation: str
    column: str
    observed_value: str | None
    reason: str


@dataclass(frozen=True)
class ValidationOutcome:
    """What a suite found in a batch."""

    suite: str
    expectations: int
    passed: int
    failed: int
    rows_evaluated: int
    failures: list[RowFailure] = field(default_factory=list)

    @property
    def failed_record_nos(self) -> set[int]:
        """Records with at least one failure (they go to quarantine)."""
        return {failure.record_no for failure in self.failures}

    def summary(self) -> dict[str, Any]:
        """Counts for the ledger's ``details``."""
        return {
            "suite": self.suite,
            "expectations": self.expectations,
            "passed": self.passed,
            "failed": self.failed,
            "rows_evaluated": self.rows_evaluated,
            "rows_quarantined": len(self.failed_record_nos),
        }


@dataclass(frozen=True)
class _Check:
    """An expectation plus how to explain a failing row: (raw value, helper value) -> reason."""

    expectation: str
    column: str
    kwargs: dict[str, Any]
    raw_column: str
    reason: Callable[[str | None, Any], str]


def price_pattern(decimal_separator: str) -> str:
    """Regex a price must match once grouping spaces are removed (at most 4 decimals)."""
    return r"^[+-]?[0-9]+(" + re.escape(decimal_separator) + r"[0-9]{1,4})?$"


QUANTITY_PATTERN = r"^[+-]?[0-9]+$"


def _price_reason(separator: str) -> Callable[[str | None, Any], str]:
    def reason(raw: str | None, _value: Any) -> str:
        if raw is None:
            return "purchase_price is missing"
        return (
            f"purchase_price {raw!r} is not a number (expected digits with {separator!r} as decimal "
            "separator and at most 4 decimals)"
        )

    return reason


def _supplier_offer_checks(decimal_separator: str) -> list[_Check]:
    return [
        _Check(
            "expect_column_values_to_not_be_null",
            "supplier_sku",
            {},
            "supplier_sku",
            lambda raw, _: "supplier_sku is missing",
        ),
        _Check(
            "expect_column_values_to_be_unique",
            "supplier_sku",
            {},
            "supplier_sku",
            lambda raw, _: f"supplier_sku {raw!r} appears more than once in this delivery",
        ),
        _Check(
            "expect_column_values_to_not_be_null",
            "purchase_price_value",
            {},
            "purchase_price",
            _price_reason(decimal_separator),
        ),
        _Check(
            "expect_column_values_to_be_between",
            "purchase_price_value",
            {"min_value": 0, "strict_min": True, "max_value": PRICE_MAX},
            "purchase_price",
            lambda raw, value: (
                f"purchase_price {raw!r} is not above 0"
                if value is not None and value <= 0
                else f"purchase_price {raw!r} is larger than {PRICE_MAX}"
            ),
        ),
        _Check(
            "expect_column_values_to_not_be_null",
            "quantity_value",
            {},
            "quantity",
            lambda raw, _: "quantity is missing" if raw is None else f"quantity {raw!r} is not a whole number",
        ),
        _Check(
            "expect_column_values_to_be_between",
            "quantity_value",
            {"min_value": 0, "max_value": QUANTITY_MAX},
            "quantity",
            lambda raw, value: (
                f"quantity {raw!r} is negative"
                if value is not None and value < 0
                else f"quantity {raw!r} is larger than {QUANTITY_MAX}"
            ),
        ),
        _Check(
            "expect_column_values_to_be_null",
            "gtin_problem",
            {},
            "gtin",
            lambda raw, problem: f"gtin {raw!r} {problem}",
        ),
        _Check(
            "expect_column_values_to_match_regex",
            "currency",
            {"regex": CURRENCY_PATTERN},
            "currency",
            lambda raw, _: f"currency {raw!r} is not a three-letter ISO 4217 code",
        ),
    ]


def prepare_supplier_offers(frame: pd.DataFrame, decimal_separator: str) -> pd.DataFrame:
    """Add the typed helper columns the suite checks; raw columns stay as delivered.

    Args:
        frame: Staged rows: ``record_no``, ``supplier_sku``, ``gtin``, ``purchase_price``,
            ``currency``, ``quantity`` (text or None).
        decimal_separator: The supplier's decimal separator (``.`` or ``,``).
    """
    import pandas as pd

    out = frame.copy()
    price = out["purchase_price"].astype("string").str.replace(NUMBER_SPACES, "", regex=True)
    price_ok = price.str.fullmatch(price_pattern(decimal_separator)).fillna(False).astype(bool)
    price_text = price.where(price_ok).str.replace(decimal_separator, ".", regex=False)
    out["purchase_price_value"] = pd.to_numeric(price_text, errors="coerce").astype("float64")
    quantity = out["quantity"].astype("string").str.replace(NUMBER_SPACES, "", regex=True)
    quantity_ok = quantity.str.fullmatch(QUANTITY_PATTERN).fillna(False).astype(bool)
    out["quantity_value"] = pd.to_numeric(quantity.where(quantity_ok), errors="coerce").astype("float64")
    # gtin is optional: only a present, invalid code is a problem. The map runs once per distinct
    # code (a pure function), which is cheap next to the validation itself.
    gtins = out["gtin"].astype("object")
    problems = gtins.map(lambda g: gtin_problem(g) if isinstance(g, str) and g.strip() else None)
    out["gtin_problem"] = problems.astype("object")
    return out


def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory, no progress bars on task logs, no analytics calls from a machine without internet.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _expectation(check: _Check) -> Any:
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.expectations.registry import get_expectation_impl

    impl: type[Expectation] = get_expectation_impl(check.expectation)
    return impl(**{"column": check.column, **check.kwargs})


def _run_suite(suite_name: str, frame: pd.DataFrame, checks: list[_Check]) -> ValidationOutcome:
    import great_expectations as gx

    context = _context()
    asset = context.data_sources.add_pandas(f"{suite_name}_batch").add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=suite_name)
    for check in checks:
        suite.add_expectation(_expectation(check))
    result = batch.validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["record_no"]}
    )
    by_record = frame.set_index("record_no", drop=False)
    failures: list[RowFailure] = []
    passed = failed = 0
    # GX keeps the suite's order in its results; match on type and column to be safe.
    remaining = list(checks)
    for item in result.results:
        config = item.expectation_config
        column = config.kwargs.get("column")
        check = next(c for c in remaining if c.expectation == config.type and c.column == column)
        remaining.remove(check)
        if item.exception_info and item.exception_info.get("raised_exception"):
            message = item.exception_info.get("exception_message")
            raise CommerceSyncError(f"suite {suite_name}: {config.type} on {column} raised: {message}")
        if item.success:
            passed += 1
            continue
        failed += 1
        for index in item.result.get("unexpected_index_list") or []:
            record_no = int(index["record_no"])
            row = by_record.loc[record_no]
            raw = row[check.raw_column]
            raw_text = None if raw is None or (isinstance(raw, float) and raw != raw) else str(raw)
            helper = row[check.column]
            helper_value = None if helper is None or (isinstance(helper, float) and helper != helper) else helper
            failures.append(
                RowFailure(
                    record_no=record_no,
                    expectation=check.expectation,
                    column=check.raw_column,
                    observed_value=raw_text,
                    reason=check.reason(raw_text, helper_value),
                )
            )
    failures.sort(key=lambda f: (f.record_no, f.expectation, f.column))
    return ValidationOutcome(
        suite=suite_name,
        expectations=len(checks),
        passed=passed,
        failed=failed,
        rows_evaluated=len(frame),
        failures=failures,
    )


def validate_supplier_offers(frame: pd.DataFrame, decimal_separator: str = ".") -> ValidationOutcome:
    """Run the supplier offer suite on a staged batch.

    Checks: supplier_sku present and unique within the batch (both duplicates fail, since we cannot
    know which is right); purchase_price a number above 0; quantity a whole number >= 0; gtin valid
    when present; currency a three-letter code.

    Args:
        frame: Staged rows (``record_no`` unique per batch) with raw text columns.
        decimal_separator: The supplier's decimal separator.

    Returns:
        The counts and one :class:`RowFailure` per failing (row, expectation).
    """
    prepared = prepare_supplier_offers(frame, decimal_separator)
    return _run_suite(SUPPLIER_OFFER_SUITE, prepared, _supplier_offer_checks(decimal_separator))
